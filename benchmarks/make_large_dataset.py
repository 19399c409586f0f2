"""Build a large, realistic `.h5ad` of raw counts by resampling real cells (issue 7).

Each new cell copies a real cell of ``../shared/data/kang_se.h5ad`` (Kang 2018 control PBMCs from 8 donors)
chosen at random, keeps its cell type, donor and batch as labels, and redraws its counts with sampling noise:

    count' = Poisson((1 - w) * count * s * g) + Multinomial(Poisson(w * L * s), p_type)

with s ~ LogNormal(0, 0.3) per cell (sequencing depth), g ~ Gamma(10, 1/10) per gene and cell (biological
over-dispersion), L the real cell's library size, p_type the mean normalised profile of its cell type and w = 0.3.
The first term keeps the real cell's own profile (donor effects included); the second puts back the detections
that drawing around already-sampled counts loses, from the cell type's own profile: detected genes per cell are
about 90 % of the real cells' (313 vs 348 on Kang) at the same library size. No two cells are the same. The file
is written in chunks (anndata's appendable CSR on disk), so memory stays bounded at any size:

    .venv/bin/python benchmarks/make_large_dataset.py --cells 1000000 -o .cache/large/kang_1m.h5ad
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import sparse_dataset, write_elem
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "kang_se.h5ad"
LABELS = ("cell_type", "batch", "donor_id", "condition")
CHUNK_CELLS = 100_000


def type_profiles(counts: sp.csr_matrix, types: np.ndarray) -> np.ndarray:
    """Each cell type's mean library-normalised profile (types x genes; rows sum to 1)."""
    normalised = sp.diags(1.0 / np.maximum(np.asarray(counts.sum(1)).ravel(), 1)) @ counts
    return np.vstack([np.asarray(normalised[types == code].mean(0)).ravel() for code in range(types.max() + 1)])


def resampled_counts(source: sp.csr_matrix, rows: np.ndarray, types: np.ndarray, profiles: np.ndarray,
                     rng: np.random.Generator, own_weight: float = 0.7, depth_sd: float = 0.3,
                     gene_shape: float = 10.0) -> sp.csr_matrix:
    """New cells from the source rows ``rows`` (see the module docstring for the model)."""
    picked = source[rows]
    depth = rng.lognormal(0.0, depth_sd, size=len(rows))
    rate = (own_weight * picked.data * np.repeat(depth, np.diff(picked.indptr))
            * rng.gamma(gene_shape, 1.0 / gene_shape, size=picked.nnz))
    own = sp.csr_matrix((rng.poisson(rate), picked.indices, picked.indptr), shape=picked.shape)
    library = np.asarray(picked.sum(1)).ravel()
    extra = rng.poisson((1.0 - own_weight) * library * depth)
    cells = np.repeat(np.arange(len(rows)), extra)
    cumulative = np.cumsum(profiles, axis=1)
    genes = np.empty(len(cells), dtype=np.int64)
    cell_types = types[rows][cells]
    for code in np.unique(cell_types):  # draw each extra count's gene from its cell type's profile
        mine = cell_types == code
        genes[mine] = np.minimum(np.searchsorted(cumulative[code], rng.random(mine.sum()) * cumulative[code, -1]),
                                 profiles.shape[1] - 1)
    shared = sp.csr_matrix((np.ones(len(cells)), (cells, genes)), shape=picked.shape)
    counts = sp.csr_matrix(own + shared, dtype=np.int32)
    counts.eliminate_zeros()
    counts.sort_indices()
    return counts


def make_large_dataset(n_cells: int, out: Path, source_path: Path = SOURCE, seed: int = 0,
                       chunk_cells: int = CHUNK_CELLS) -> Path:
    """Write ``n_cells`` resampled cells to ``out`` (written to a temporary name, then renamed) and return it."""
    source = ad.read_h5ad(source_path)
    counts = sp.csr_matrix(source.X, dtype=np.int32)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, source.n_obs, size=n_cells)
    types = source.obs["cell_type"].astype("category").cat.codes.to_numpy()
    profiles = type_profiles(sp.csr_matrix(counts, dtype=np.float64), types)
    obs = pd.DataFrame({label: source.obs[label].astype(str).astype("category").to_numpy()[rows]
                        for label in LABELS if label in source.obs},
                       index=pd.Index([f"cell_{i:07d}" for i in range(n_cells)]))
    obs["source_cell"] = rows.astype(np.int32)
    var = pd.DataFrame(index=source.var_names.copy())
    if "gene_ids" in source.var:
        var["gene_ids"] = source.var["gene_ids"].to_numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with h5py.File(partial, "w") as handle:
        handle.attrs["encoding-type"], handle.attrs["encoding-version"] = "anndata", "0.1.0"
        write_elem(handle, "obs", obs)
        write_elem(handle, "var", var)
        write_elem(handle, "uns", {"dataset": {
            "name": f"Kang 2018 PBMCs resampled to {n_cells:,} cells",
            "description": f"Real control PBMCs from 8 donors (Kang 2018) resampled with sampling noise to "
                           f"{n_cells:,} cells by benchmarks/make_large_dataset.py (seed {seed}); cell types and "
                           f"donors are the source cells' labels."}})
        for key in ("obsm", "varm", "obsp", "varp", "layers"):
            write_elem(handle, key, {})
        matrix = None
        for start in tqdm(range(0, n_cells, chunk_cells), desc="cells", unit_scale=chunk_cells, file=sys.stderr):
            chunk = resampled_counts(counts, rows[start:start + chunk_cells], types, profiles, rng)
            if matrix is None:
                write_elem(handle, "X", chunk)
                matrix = sparse_dataset(handle["X"])
            else:
                matrix.append(chunk)
    partial.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("-o", "--out", type=Path, required=True, help="the .h5ad to write")
    parser.add_argument("--source", type=Path, default=SOURCE, help="a real .h5ad of raw counts to resample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"{args.source} is missing: the generator resamples real cells from ../shared/data.")
    started = time.perf_counter()
    path = make_large_dataset(args.cells, args.out, args.source, args.seed)
    print(f"wrote {args.cells:,} cells to {path} ({path.stat().st_size / 2**30:.2f} GiB) in "
          f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
