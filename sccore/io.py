"""Open datasets: read `.h5ad` files safely, find the raw counts, and load the embedded demo.

Every function here returns an AnnData whose ``X`` holds raw counts (CSR, float32) and whose
``uns['input']`` records where the counts came from and what was assumed, so that the dashboard
and the CLI can say it to the user.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError

DEMO_NAME = "Demo: 700 PBMCs (scanpy's pbmc68k_reduced)"
# A matrix is "integer" when every value lies this close to a whole number.
INTEGER_TOLERANCE = 1e-3
# Counts recovered from log-normalised values must round from at most this far.
RECOVERY_TOLERANCE = 0.25


def read_h5ad(path: str | os.PathLike) -> ad.AnnData:
    """Read an ``.h5ad`` file fully into memory, turning every failure into an :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"File not found: {path}. Check the path or pick a file from the data folder.")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes). Upload the complete .h5ad file again.")
    with open(path, "rb") as handle:
        signature = handle.read(8)
    if signature != b"\x89HDF\r\n\x1a\n":
        raise InputError(
            f"{path.name} is not an HDF5 (.h5ad) file. Save your data with AnnData's "
            "`adata.write_h5ad(...)`; CSV, loom, mtx and text files are not read here."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = ad.read_h5ad(path)
    except Exception as error:  # h5py and anndata raise many types for damaged files
        raise InputError(
            f"{path.name} could not be read as AnnData ({type(error).__name__}: {str(error)[:200]}). "
            "The file may be truncated or corrupt: copy or upload it again."
        ) from error
    return adata


def classify_matrix(matrix) -> str:
    """Say what a matrix holds: ``"counts"``, ``"log-normalised"``, ``"scaled"``, or ``"invalid"``.

    ``"invalid"`` means NaN or infinite values. Negative values mean ``"scaled"`` (z-scored)
    when most values are fractional, and ``"invalid"`` otherwise (negative counts).
    """
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    if values.size == 0:
        return "counts"
    if not np.all(np.isfinite(values)):
        return "invalid"
    fractional = np.abs(values - np.round(values)) > INTEGER_TOLERANCE
    if values.min() < 0:
        return "scaled" if fractional.mean() > 0.5 else "invalid"
    if not fractional.any():
        return "counts"
    return "log-normalised"


def recover_counts(lognorm) -> sp.csr_matrix:
    """Recover integer counts from ``log1p(counts / total * scale)`` values; see :func:`recover_counts_checked`."""
    return recover_counts_checked(lognorm)[0]


def recover_counts_checked(lognorm) -> tuple[sp.csr_matrix, float]:
    """Recover integer counts from ``log1p(counts / total * scale)`` values, one scale per cell.

    Each cell's smallest non-zero value is taken as one count; the scale is then refined by
    least squares over all the cell's values. Raises :class:`InputError` when the result is not
    integer-valued within :data:`RECOVERY_TOLERANCE`, i.e. when the values were not made that way.
    Returns the counts and the largest distance from a whole number before rounding.
    """
    matrix = sp.csr_matrix(lognorm, dtype=np.float64, copy=True)
    matrix.eliminate_zeros()
    linear = np.expm1(matrix.data)
    starts = matrix.indptr[:-1]
    nonempty = np.diff(matrix.indptr) > 0
    if not nonempty.any():
        raise InputError("Every cell is empty: there are no counts to recover.")
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    smallest = np.ones(matrix.shape[0])
    smallest[nonempty] = np.minimum.reduceat(linear, starts[nonempty])
    first_guess = np.round(linear / smallest[rows])
    scale = np.bincount(rows, linear, matrix.shape[0]) / np.maximum(
        np.bincount(rows, first_guess, matrix.shape[0]), 1
    )
    counts = linear / scale[rows]
    deviation = float(np.abs(counts - np.round(counts)).max())
    if deviation > RECOVERY_TOLERANCE:
        raise InputError(
            f"The log-normalised values do not map back to whole counts (off by up to {deviation:.2f}). "
            "Provide raw counts in X, layers['counts'] or .raw."
        )
    matrix.data = np.round(counts)
    return matrix.astype(np.float32), deviation


def _matrix_candidates(adata: ad.AnnData):
    """Yield ``(where, matrix, var_names)`` for each place raw counts may live, best first."""
    if "counts" in adata.layers:
        yield "layers['counts']", adata.layers["counts"], adata.var_names
    yield "X", adata.X, adata.var_names
    if adata.raw is not None:
        yield ".raw.X", adata.raw.X, adata.raw.var_names


def standardise(adata: ad.AnnData, library_size_key: str | None = None) -> ad.AnnData:
    """Return a new AnnData with raw counts in ``X`` (CSR float32), validated, and notes in ``uns['input']``.

    Counts are taken from ``layers['counts']``, ``X`` or ``.raw`` (first that holds counts);
    log-normalised values are turned back into counts when that is exact, and otherwise refused.
    ``library_size_key`` names an ``obs`` column with whole-transcriptome totals, checked here.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(
            f"The dataset is empty ({adata.n_obs} cells x {adata.n_vars} genes). Choose a file with cells and genes."
        )
    if adata.n_obs < 3:
        raise InputError(
            f"The dataset has only {adata.n_obs} cell(s); embeddings and neighbours need at least 3. "
            "Choose a larger dataset."
        )
    notes: list[str] = []
    chosen = None
    seen: list[str] = []
    for where, matrix, var_names in _matrix_candidates(adata):
        if matrix is None:
            continue
        kind = classify_matrix(matrix)
        seen.append(f"{where}: {kind}")
        if kind == "counts":
            chosen = (where, sp.csr_matrix(matrix, dtype=np.float32), var_names)
            notes.append(f"Raw counts read from {where}.")
            break
        if kind == "log-normalised":
            try:
                counts = recover_counts(matrix)
            except InputError:
                continue
            chosen = (where, counts, var_names)
            notes.append(f"{where} held log-normalised values; integer counts were recovered from them exactly.")
            break
    if chosen is None:
        detail = "; ".join(seen)
        if any("invalid" in s for s in seen):
            fix = "Remove NaN, infinite and negative values, or provide the raw counts in layers['counts']."
        elif any("scaled" in s for s in seen):
            fix = "The data look scaled (z-scored); provide the raw counts in layers['counts'] or .raw."
        else:
            fix = "Provide raw integer counts in X, layers['counts'] or .raw."
        raise InputError(f"No raw counts found ({detail}). {fix}")
    where, counts, var_names = chosen
    var = (adata.raw.var if where == ".raw.X" else adata.var).copy()
    var.index = pd.Index(var_names.astype(str), name=None)
    if var.index.has_duplicates:
        duplicated = var.index[var.index.duplicated()].unique()
        notes.append(
            f"{len(duplicated)} duplicate gene name(s) (e.g. {', '.join(map(str, duplicated[:3]))}) were made unique "
            "by appending -1, -2, ..."
        )
    obs = adata.obs.copy()
    obs.index = obs.index.astype(str)
    if obs.index.has_duplicates:
        notes.append("Duplicate cell names were made unique by appending -1, -2, ...")
    result = ad.AnnData(X=counts, obs=obs, var=var, obsm={k: np.asarray(v) for k, v in adata.obsm.items()
                                                          if k not in ("X_pca", "X_umap") and not sp.issparse(v)})
    result.var_names_make_unique()
    result.obs_names_make_unique()
    if library_size_key is not None:
        check_library_size_key(result, library_size_key)
        notes.append(f"Library size per cell read from obs['{library_size_key}'].")
    if not categorical_columns(result):
        notes.append("No categorical obs column (such as cell type or batch): colour cells by a gene instead.")
    result.uns["input"] = {"counts_from": where, "notes": notes, "library_size_key": library_size_key or ""}
    return result


def counts_matrix(adata: ad.AnnData) -> sp.csr_matrix:
    """The raw counts of a standardised or processed AnnData: ``layers['counts']``, else ``X`` if it holds counts."""
    if "counts" in adata.layers:
        return sp.csr_matrix(adata.layers["counts"], dtype=np.float32)
    if classify_matrix(adata.X) == "counts":
        return sp.csr_matrix(adata.X, dtype=np.float32)
    raise InputError("No raw counts in layers['counts'] or X; open the file with sccore.io.open_dataset first.")


def check_library_size_key(adata: ad.AnnData, key: str) -> None:
    """Raise :class:`InputError` unless ``obs[key]`` holds positive finite totals for every cell."""
    if key not in adata.obs.columns:
        raise InputError(
            f"obs has no column '{key}' for library sizes. Columns: {', '.join(map(str, adata.obs.columns[:20]))}."
        )
    values = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(values)) or values.min() <= 0:
        raise InputError(f"obs['{key}'] must hold a positive number for every cell; choose another column.")


def categorical_columns(adata: ad.AnnData, max_categories: int = 500) -> list[str]:
    """Names of ``obs`` columns that make sense as colours: categorical, string or boolean, 2 to ``max_categories`` values."""
    columns = []
    for name, column in adata.obs.items():
        if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object or column.dtype == bool:
            n_values = column.nunique(dropna=True)
            if 2 <= n_values <= max_categories:
                columns.append(str(name))
    return columns


def load_demo() -> ad.AnnData:
    """The embedded demo: scanpy's ``pbmc68k_reduced`` (700 PBMCs, 10 cell types) with integer counts.

    The counts are recovered from its ``.raw`` log-normalised values (765 genes) and checked to be
    whole numbers. Its 765 genes are a subset, so the whole-transcriptome totals are kept in
    ``obs['full_total_umis']``, ``obs['full_n_genes']`` and ``obs['full_pct_mito']`` (the names the CRISPR
    file in ``shared/data`` uses) and used for library sizes and quality control.
    """
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = sc.datasets.pbmc68k_reduced()
    counts, deviation = recover_counts_checked(source.raw.X)
    obs = pd.DataFrame(
        {
            "cell_type": source.obs["bulk_labels"].astype("category"),
            "louvain": source.obs["louvain"].astype("category"),
            "phase": source.obs["phase"].astype("category"),
            "full_total_umis": source.obs["n_counts"].astype(float),
            "full_n_genes": source.obs["n_genes"].astype(int),
            "full_pct_mito": source.obs["percent_mito"].astype(float) * 100,
        },
        index=source.obs_names,
    )
    var = pd.DataFrame(index=source.raw.var_names.astype(str))
    adata = standardise(ad.AnnData(X=counts, obs=obs, var=var), library_size_key="full_total_umis")
    adata.uns["input"]["counts_from"] = "pbmc68k_reduced .raw (log-normalised)"
    adata.uns["input"]["notes"][0] = (
        "Integer counts recovered exactly from pbmc68k_reduced's log-normalised .raw values "
        f"(every value within {deviation:.3f} of a whole number before rounding)."
    )
    adata.uns["dataset"] = {
        "name": DEMO_NAME,
        "description": (
            "700 real peripheral blood mononuclear cells from 10x Genomics' 68k PBMC data, as shipped with "
            "scanpy (a small teaching subset: 765 genes, 10 cell types). Counts were recovered exactly from "
            "its log-normalised values; library sizes are the whole-transcriptome totals in obs['full_total_umis']."
        ),
    }
    return adata


def open_dataset(path: str | os.PathLike, library_size_key: str | None = None) -> ad.AnnData:
    """Read and standardise an ``.h5ad`` file: raw counts in ``X``, notes in ``uns['input']``."""
    adata = standardise(read_h5ad(path), library_size_key=library_size_key)
    adata.uns["dataset"] = {"name": Path(path).name, "description": f"Opened from {Path(path).name}."}
    return adata
