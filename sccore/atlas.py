"""Atlases of millions of cells: :func:`sccore.workflow.analyse`'s analysis, read from disk in chunks of cells.

:func:`build_atlas` never holds the count matrix in memory. It reads the ``.h5ad``'s CSR ``X`` a chunk of rows at
a time, in two passes:

1. quality control per cell, and per gene the detection count and the mean and mean square of library-normalised
   expression over the kept cells, from which the Seurat-flavour highly variable genes are picked exactly as
   :func:`sccore.pp.highly_variable` picks them;
2. log-normalised expression of the kept cells and genes, written to a gene-major store on disk (one CSC block
   per chunk, so colouring by a gene reads one column per block), and ``X^T X`` of the highly variable genes;

then PCA from that Gram matrix (exact; nothing is densified beyond a block of rows), each stored block projected;
a FAISS index of the PCA embedding whose recall@k is measured against exact search on sampled cells and whose
search breadth is raised until it reaches the target; every cell's neighbours on that index, stored as scanpy
stores them (``obsp``, ``uns['neighbors']``), and UMAP on them (:func:`sccore.workflow.neighbors_and_umap`, the
chain of the in-memory analysis; above 200,000 cells fitted on a subsample with every other cell placed by
:func:`sccore.umap.transform`); and a first frame. Each stage's result is written atomically into the atlas folder
and recorded in ``manifest.json``; a rerun with the same input and parameters resumes after the last finished
stage. The small part (annotations, QC, PCA, neighbours, layout) is ``atlas.h5ad``, an AnnData whose ``X`` is empty.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import anndata as ad
import faiss
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .annotations import guess_column
from .cache import atomic_write, make_key
from .embed import PCAParams, gram_and_sum, pca_from_gram
from .errors import InputError
from .io import check_h5ad_layout, classify_matrix, printable, read_rows, read_var, row_readable_counts
from .neighbors import IndexParams, build_index, load_index, save_index, search
from .pp import (PreprocessParams, cells_failing, default_params, highly_variable_from_moments, is_gene_panel,
                 qc_cuts, qc_metrics)
from .umap import UMAPModel, UMAPParams
from .workflow import Analysis, PipelineParams, neighbors_and_umap

Progress = Callable[[float, str], None]
STAGES = ("genes", "store", "pca", "index", "umap", "frame")
EF_SEARCH_STEPS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
PROBE_STEPS = (4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
FORMAT_VERSION = 2
ANNOTATIONS = "annotations"  # the folder of obs columns added to a built atlas (Atlas.add_annotation)


def _quiet(fraction: float, message: str) -> None:
    """A progress callback that reports nothing."""


@dataclass(frozen=True)
class AtlasParams:
    """Every parameter of :func:`build_atlas`; preprocessing, PCA and index defaults are
    :func:`sccore.workflow.analyse`'s, and UMAP is fitted on 100,000 cells above 200,000. ``preprocess=None``
    takes :func:`sccore.pp.default_params` for the file (its whole-transcriptome ``obs`` columns, if any) with the
    explicit-threshold rule: the cells are filtered chunk by chunk, where the outlier rule would need all of them."""

    preprocess: PreprocessParams | None = None
    pca: PCAParams = PCAParams()
    index: IndexParams = IndexParams()
    umap: UMAPParams = UMAPParams()
    chunk_cells: int = 50_000
    k: int = 15
    target_recall: float = 0.95
    recall_queries: int = 1_000


class GeneStore:
    """An atlas's log-normalised expression (cells x genes), gene-major on disk: one CSC block per chunk of cells,
    memory-mapped, so a gene or a range of genes is read as one slice of each block. Called with a gene's position
    it gives that gene in every cell (what :class:`sccore.workflow.Analysis` takes as ``expression_reader``); it is
    also the matrix :func:`sccore.markers.rank_genes` and :func:`~sccore.markers.differential_expression` read a
    range of genes at a time."""

    ndim = 2

    def __init__(self, folder: Path, block_cells: list[int], n_genes: int):
        self.blocks = [_open_block(folder, number) for number in range(len(block_cells))]
        self.offsets = np.concatenate([[0], np.cumsum(block_cells)]).astype(np.int64)
        self.shape = (int(self.offsets[-1]), int(n_genes))

    def __call__(self, position: int) -> np.ndarray:
        """Log-normalised expression of the gene at ``position`` in every cell (float32)."""
        values = np.zeros(self.shape[0], dtype=np.float32)
        for offset, (data, indices, indptr) in zip(self.offsets, self.blocks):
            start, stop = indptr[position], indptr[position + 1]
            values[offset + indices[start:stop]] = data[start:stop]
        return values

    def entries_per_gene(self) -> np.ndarray:
        """How many values of each gene are stored (its non-zero cells)."""
        return sum(np.diff(np.asarray(indptr)) for _, _, indptr in self.blocks)

    def segments(self, first: int, stop: int, used: np.ndarray | None = None):
        """The genes ``first:stop`` of the blocks holding any cell of the mask ``used`` (every block without one),
        as (values, cell positions within each block, starts of shape (blocks, genes + 1) into those two arrays,
        each block's first cell)."""
        numbers = [number for number in range(len(self.blocks))
                   if used is None or used[self.offsets[number]:self.offsets[number + 1]].any()]
        values, cells, starts, total = [], [], [], 0
        for number in numbers:
            data, indices, indptr = self.blocks[number]
            bounds = np.asarray(indptr[first:stop + 1])
            values.append(data[bounds[0]:bounds[-1]])
            cells.append(indices[bounds[0]:bounds[-1]])
            starts.append(bounds - bounds[0] + total)
            total += int(bounds[-1] - bounds[0])
        return (np.concatenate(values) if values else np.zeros(0, np.float32),
                np.concatenate(cells) if cells else np.zeros(0, np.int32),
                np.array(starts, dtype=np.int64).reshape(len(numbers), stop - first + 1),
                self.offsets[numbers])


@dataclass
class Atlas:
    """A built atlas: ``adata`` (annotations and QC in ``obs``, with the columns added later from
    ``annotations/``; ``obsm['X_pca']``, ``obsm['X_umap']``, an empty ``X``), the FAISS index of the PCA
    embedding, the manifest, and the folder holding the gene-major store (:attr:`store`)."""

    folder: Path
    adata: ad.AnnData
    index: faiss.Index
    manifest: dict
    _store: GeneStore | None = field(default=None, repr=False)

    @property
    def store(self) -> GeneStore:
        """The gene-major store of log-normalised expression (opened on first use)."""
        if self._store is None:
            self._store = GeneStore(self.folder, self.manifest["block_cells"], self.adata.n_vars)
        return self._store

    def expression(self, gene: str) -> np.ndarray:
        """Log-normalised expression of ``gene`` in every cell, read from the gene-major store."""
        if gene not in self.adata.var_names:
            raise InputError(f"Gene '{gene}' is not in this atlas ({self.adata.n_vars:,} genes after filtering).")
        return self.gene_column(self.adata.var_names.get_loc(gene))

    def gene_column(self, position: int) -> np.ndarray:
        """Log-normalised expression of the gene at ``position`` in every cell (memory-mapped blocks: one column
        of each is read)."""
        return self.store(position)

    def add_annotation(self, key: str) -> Path:
        """Keep ``adata.obs[key]`` (and ``adata.uns[key]``, if any) with the atlas: written atomically to
        ``annotations/<key>.csv`` (one row per cell: ``cell``, ``key``) and ``annotations/<key>.json`` (its
        categories in order and the ``uns`` entry), which :func:`open_atlas` adds back to ``obs`` and ``uns``;
        ``atlas.h5ad``, as built, is never rewritten. Returns the CSV's path."""
        if key not in self.adata.obs.columns:
            raise InputError(f"obs has no column '{key}' to keep: choose one of "
                             f"{', '.join(map(str, self.adata.obs.columns))}.")
        folder = self.folder / ANNOTATIONS
        folder.mkdir(exist_ok=True)
        values = self.adata.obs[key].astype("category")
        table = pd.DataFrame({"cell": self.adata.obs_names, key: values.to_numpy()})
        info = json.dumps({"categories": [str(name) for name in values.cat.categories],
                           "uns": self.adata.uns.get(key, {})}, default=_plain)
        atomic_write(folder / f"{key}.json", lambda tmp: Path(tmp).write_text(info, encoding="utf-8"))
        atomic_write(folder / f"{key}.csv", lambda tmp: table.to_csv(tmp, index=False), suffix=".csv")
        return folder / f"{key}.csv"

    def analysis(self) -> Analysis:
        """The atlas as the :class:`sccore.workflow.Analysis` the dashboard's pages take: annotations, PCA, the
        layout and the index, with expression read from the store (its ``expression_reader`` is :attr:`store`,
        which :func:`sccore.markers.analysis_markers` and :func:`~sccore.markers.analysis_de` read by ranges
        of genes)."""
        params = self.manifest["params"]
        pipeline = PipelineParams(preprocess=PreprocessParams(**params["preprocess"]),
                                  pca=PCAParams(**params["pca"]), index=IndexParams(**params["index"]),
                                  n_neighbors=int(params["k"]), umap=UMAPParams(**params["umap"]))
        key = make_key("atlas", self.manifest["input"], self.manifest["params"])
        return Analysis(adata=self.adata, key=key, params=pipeline, indexes={"X_pca": self.index},
                        expression_reader=self.store)


def _plain(value):
    """A numpy scalar or array as plain JSON (for ``uns`` entries)."""
    return value.tolist() if isinstance(value, (np.ndarray, np.generic)) else str(value)


def _read_annotations(folder: Path, adata: ad.AnnData) -> None:
    """Add the columns kept in ``folder/annotations`` (:meth:`Atlas.add_annotation`) to ``adata.obs`` (as
    categories in their kept order, matched by cell name) and their ``uns`` entries."""
    for path in sorted((folder / ANNOTATIONS).glob("*.csv")):
        key = path.stem
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]).set_index("cell")
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        adata.obs[key] = pd.Categorical(table[key].reindex(adata.obs_names), categories=info["categories"])
        if info["uns"]:
            adata.uns[key] = info["uns"]


def _block_paths(folder: Path, number: int) -> tuple[Path, Path, Path]:
    """The three arrays of gene-major block ``number``: values, cell positions within the block, column starts."""
    stem = folder / "store" / f"block-{number:05d}"
    return Path(f"{stem}-data.npy"), Path(f"{stem}-indices.npy"), Path(f"{stem}-indptr.npy")


def _open_block(folder: Path, number: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block ``number`` of the gene-major store, memory-mapped."""
    return tuple(np.load(path, mmap_mode="r") for path in _block_paths(folder, number))


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: np.save(tmp, array), suffix=".npy")


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


def peak_memory_gib() -> float:
    """The most memory this process has held so far (its peak resident set), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class _CountsFile:
    """An ``.h5ad`` whose raw counts (``layers['counts']`` or ``X``, by cells or dense) are read a chunk of rows at
    a time; ``obs``, ``var`` (gene names made unique) and ``uns`` are read whole."""

    def __init__(self, path: Path):
        import h5py
        from anndata.io import read_elem

        check_h5ad_layout(path, check_memory=False)  # the counts are never read whole
        self.path = path
        self.handle = h5py.File(path, "r")
        try:
            self.node = self.handle[row_readable_counts(self.handle, printable(path.name))]
            self.obs = read_elem(self.handle["obs"])
            self.var = read_var(self.handle)
            self.uns = read_elem(self.handle["uns"]) if "uns" in self.handle else {}
        except BaseException:
            self.handle.close()
            raise
        self.n_obs, self.n_vars = len(self.obs), len(self.var)

    def chunks(self, chunk_cells: int):
        """``(start, stop, counts)`` for consecutive chunks of rows."""
        for start in range(0, self.n_obs, chunk_cells):
            stop = min(start + chunk_cells, self.n_obs)
            yield start, stop, read_rows(self.node, start, stop)

    def close(self) -> None:
        """Close the file."""
        self.handle.close()


def atlas_params(path: str | os.PathLike, chunk_cells: int = 50_000, target_recall: float = 0.95,
                 **preprocess_overrides) -> AtlasParams:
    """:class:`AtlasParams` for the ``.h5ad`` at ``path``: its default preprocessing
    (:func:`sccore.pp.default_params`, read from its ``obs`` alone) with the ``preprocess_overrides`` that are not
    None, as the CLI's flags and the ``atlas`` job's parameters give them."""
    overrides = {key: value for key, value in preprocess_overrides.items() if value is not None}
    preprocess = None
    if overrides:
        source = _CountsFile(Path(path))
        try:
            preprocess = default_params(ad.AnnData(obs=source.obs), qc_rule="thresholds", **overrides)
        finally:
            source.close()
    return AtlasParams(preprocess=preprocess, chunk_cells=chunk_cells, target_recall=target_recall)


def _input_identity(path: Path) -> dict:
    """What identifies the input without hashing gigabytes: its resolved path, size and modification time."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _start_manifest(folder: Path, path: Path, params: AtlasParams, overwrite: bool) -> dict:
    """The folder's manifest when it belongs to this input and these parameters; a fresh one otherwise (clearing
    the folder when ``overwrite``, refusing when not)."""
    wanted = {"format": FORMAT_VERSION, "input": _input_identity(path),
              "params": json.loads(json.dumps(asdict(params), default=str))}
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if all(manifest.get(key) == value for key, value in wanted.items()):
            return manifest
        if not overwrite:
            raise InputError(f"{printable(str(folder))} holds an atlas of another input or other parameters. Choose "
                             "a new output folder, or pass overwrite=True (--overwrite) to replace it.")
        shutil.rmtree(folder)
    elif folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise InputError(f"{printable(str(folder))} is not empty and holds no atlas. Choose a new or empty folder.")
    folder.mkdir(parents=True, exist_ok=True)
    return {**wanted, "stages": {}}


def _finish_stage(folder: Path, manifest: dict, stage: str, started: float, **facts) -> None:
    """Record ``stage`` as done (its seconds, the peak memory so far and ``facts``) in ``manifest.json``."""
    manifest["stages"][stage] = {"seconds": round(time.perf_counter() - started, 2),
                                 "peak_memory_gib": round(peak_memory_gib(), 3), **facts}
    text = json.dumps(manifest, indent=1)
    atomic_write(folder / "manifest.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _scan_genes(source: _CountsFile, params: AtlasParams, progress: Progress) -> dict[str, np.ndarray]:
    """Pass 1: per-cell QC and the cells kept; per-gene detection, mean and mean square of normalised expression
    over the kept cells; the genes kept and the highly variable ones among them."""
    pre = params.preprocess
    if pre.qc_rule != "thresholds":
        raise InputError("An atlas filters its cells chunk by chunk, so by fixed thresholds: give its preprocessing "
                         "qc_rule='thresholds' (the outlier rule needs every cell's figures at once).")
    gene_panel = is_gene_panel(source.n_vars, pre)
    var = pd.DataFrame(index=source.var.index.astype(str))
    columns = {name: [] for name in ("total_counts", "n_genes", "pct_mito", "keep")}
    detected = np.zeros(source.n_vars, dtype=np.int64)
    sums, squares = np.zeros(source.n_vars), np.zeros(source.n_vars)
    for start, stop, counts in source.chunks(params.chunk_cells):
        if start == 0 and classify_matrix(counts) != "counts":
            raise InputError(f"{printable(source.path.name)}: X does not hold raw counts (it looks "
                             f"{classify_matrix(counts)}). An atlas is built from raw integer counts.")
        qc = qc_metrics(ad.AnnData(X=counts, obs=source.obs.iloc[start:stop], var=var), pre)
        keep = ~cells_failing(qc, qc_cuts(qc, pre, gene_panel)).any(axis=1).to_numpy()
        for name in ("total_counts", "n_genes", "pct_mito"):
            columns[name].append(qc[name].to_numpy(dtype=np.float32))
        columns["keep"].append(keep)
        kept = counts[keep]
        library = qc["total_counts"].to_numpy()[keep]
        if np.any(~(library > 0)):
            raise InputError("Some kept cells have no counts or no library size; raise the minimum detected genes "
                             "or fix the library-size column.")
        normalised = sp.diags(pre.target_sum / library) @ kept.astype(np.float64)
        detected += np.diff(sp.csc_matrix(kept).indptr)
        sums += np.asarray(normalised.sum(axis=0)).ravel()
        squares += np.asarray(normalised.multiply(normalised).sum(axis=0)).ravel()
        progress(0.25 * stop / source.n_obs, f"Quality control: {stop:,} of {source.n_obs:,} cells read")
    scan = {name: np.concatenate(parts) for name, parts in columns.items()}
    n_kept = int(scan["keep"].sum())
    if n_kept < 2:
        raise InputError(f"Quality control left {n_kept} cells (median detected genes "
                         f"{np.median(scan['n_genes']):.0f}). Lower the minimum detected genes (now {pre.min_genes}).")
    keep_genes = detected >= pre.min_cells
    if not keep_genes.any():
        raise InputError(f"No gene is detected in {pre.min_cells} or more cells. Lower the minimum cells per gene.")
    mean, mean_of_squares = sums / n_kept, squares / n_kept
    scan.update(keep_genes=keep_genes, detected=detected, mean=mean, mean_of_squares=mean_of_squares,
                highly_variable=highly_variable_from_moments(mean[keep_genes], mean_of_squares[keep_genes], n_kept,
                                                             pre.n_top_genes))
    return scan


def _write_store(source: _CountsFile, folder: Path, scan: dict, params: AtlasParams,
                 progress: Progress) -> dict[str, object]:
    """Pass 2: log-normalised expression of the kept cells and genes as gene-major blocks, and ``X^T X`` and
    column sums of the highly variable genes."""
    pre = params.preprocess
    genes, variable = np.flatnonzero(scan["keep_genes"]), np.flatnonzero(scan["highly_variable"])
    gram, column_sum = np.zeros((len(variable), len(variable))), np.zeros(len(variable))
    block_cells, number = [], 0
    for start, stop, counts in source.chunks(params.chunk_cells):
        keep = scan["keep"][start:stop]
        kept = counts[keep][:, genes].astype(np.float32)
        normalised = sp.csr_matrix(sp.diags((pre.target_sum / scan["total_counts"][start:stop][keep])
                                            .astype(np.float32)) @ kept, dtype=np.float32)
        np.log1p(normalised.data, out=normalised.data)
        block_gram, block_sum = gram_and_sum(normalised[:, variable])
        gram += block_gram
        column_sum += block_sum
        by_gene = normalised.tocsc()
        by_gene.sort_indices()
        for path, array in zip(_block_paths(folder, number), (by_gene.data, by_gene.indices.astype(np.int32),
                                                               by_gene.indptr.astype(np.int64))):
            _save_npy(path, array)
        block_cells.append(int(keep.sum()))
        number += 1
        progress(0.25 + 0.3 * stop / source.n_obs, f"Normalising: {stop:,} of {source.n_obs:,} cells written")
    _save_npz(folder / "gram.npz", gram=gram, column_sum=column_sum)
    return {"block_cells": block_cells}


def _project_store(folder: Path, scan: dict, fit: dict, block_cells: list[int]) -> np.ndarray:
    """Every kept cell's PCA coordinates, projected block by block from the gene-major store."""
    variable = np.flatnonzero(scan["highly_variable"])
    n_genes = int(scan["keep_genes"].sum())
    parts, shift = [], fit["mean"] @ fit["components"]
    for number, n_cells in enumerate(block_cells):
        data, indices, indptr = _open_block(folder, number)
        block = sp.csc_matrix((data, indices, indptr), shape=(n_cells, n_genes))
        parts.append((np.asarray(block[:, variable] @ fit["components"]) - shift).astype(np.float32))
    return np.concatenate(parts)


def tune_search(index: faiss.Index, embedding: np.ndarray, k: int = 15, target_recall: float = 0.95,
                n_queries: int = 1_000, seed: int = 0) -> dict[str, object]:
    """Measure recall@k of ``index`` on ``n_queries`` random indexed cells (the mean fraction of each one's exact
    ``k`` nearest cells, by brute force, that the index returns) and, for HNSW, raise ``efSearch`` step by step
    until it reaches ``target_recall`` (for an inverted file its probed lists, ``nprobe``). Returns the recall kept
    and every breadth tried."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(embedding), size=min(n_queries, len(embedding)), replace=False))
    queries = np.ascontiguousarray(embedding[rows], dtype=np.float32)
    _, exact = faiss.knn(queries, np.ascontiguousarray(embedding, dtype=np.float32), k)

    def recall() -> float:
        found = search(index, queries, k).indices
        return float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(found, exact)]) / k)

    if isinstance(index, faiss.IndexHNSW):
        kind, name, steps = "hnsw", "ef_search", EF_SEARCH_STEPS

        def widen(breadth: int) -> int:
            index.hnsw.efSearch = max(breadth, k)
            return index.hnsw.efSearch
    elif isinstance(index, faiss.IndexIVF):
        kind, name, steps = "ivf", "nprobe", PROBE_STEPS

        def widen(breadth: int) -> int:
            index.nprobe = min(breadth, index.nlist)
            return index.nprobe
    else:
        return {"kind": "flat", "recall": round(recall(), 4), "queries": len(rows), "tried": []}
    tried = []
    for breadth in steps:
        tried.append({name: widen(breadth), "recall": round(recall(), 4)})
        if tried[-1]["recall"] >= target_recall or tried[-1][name] < breadth:
            break
    return {"kind": kind, "recall": tried[-1]["recall"], name: tried[-1][name], "queries": len(rows), "tried": tried}


def _first_label(obs: pd.DataFrame) -> str | None:
    """The annotation to colour the first frame by: a cell-type column if there is one, else the first category."""
    label = guess_column(map(str, obs.columns), "label")
    if label is not None:
        return label
    categorical = [name for name in obs.columns if isinstance(obs[name].dtype, pd.CategoricalDtype)]
    return categorical[0] if categorical else None


def render_atlas_frame(adata: ad.AnnData, column: str | None, width: int = 800, height: int = 600) -> np.ndarray:
    """The layout coloured by ``column`` (a category), as an RGBA image; all cells one colour without one."""
    from .render import category_colors, fit_view, render_categories

    coords = np.asarray(adata.obsm["X_umap"])
    if column is None:
        codes, colors = np.zeros(adata.n_obs, dtype=np.int32), ["#3b6ea8"]
    else:
        values = adata.obs[column].astype("category")
        codes = values.cat.codes.to_numpy().astype(np.int32)
        colors = category_colors(len(values.cat.categories))
    return render_categories(coords, codes, colors, fit_view(coords, width, height))


def build_atlas(path: str | os.PathLike, folder: str | os.PathLike, params: AtlasParams = AtlasParams(),
                progress: Progress = _quiet, overwrite: bool = False) -> Atlas:
    """Build (or finish building) the atlas of the raw-count ``.h5ad`` at ``path`` in ``folder`` and open it.

    Memory stays bounded by a chunk of ``params.chunk_cells`` cells plus the per-cell results (PCA, layout);
    see the module docstring for the stages. Finished stages found in ``folder`` for the same input and
    parameters are not redone.
    """
    path, folder = Path(path), Path(folder)
    if not path.is_file():
        raise InputError(f"No file at {printable(str(path))}: give the path of an .h5ad of raw counts.")
    source = _CountsFile(path)
    try:
        if params.preprocess is None:
            params = replace(params, preprocess=default_params(ad.AnnData(obs=source.obs), qc_rule="thresholds"))
        manifest = _start_manifest(folder, path, params, overwrite)
        done = manifest["stages"]
        manifest.update(n_obs=source.n_obs, n_vars=source.n_vars)
        if "genes" not in done:
            started = time.perf_counter()
            scan = _scan_genes(source, params, progress)
            _save_npz(folder / "genes.npz", **scan)
            _finish_stage(folder, manifest, "genes", started, cells_kept=int(scan["keep"].sum()),
                          genes_kept=int(scan["keep_genes"].sum()), highly_variable=int(scan["highly_variable"].sum()))
        scan = _load_npz(folder / "genes.npz")
        if "store" not in done:
            started = time.perf_counter()
            manifest.update(_write_store(source, folder, scan, params, progress))
            _finish_stage(folder, manifest, "store", started)
        if "pca" not in done:
            started = time.perf_counter()
            progress(0.6, "PCA")
            stored = _load_npz(folder / "gram.npz")
            fit = pca_from_gram(stored["gram"], stored["column_sum"], int(scan["keep"].sum()), params.pca.n_comps)
            _save_npz(folder / "pca.npz", **fit)
            _save_npy(folder / "X_pca.npy", _project_store(folder, scan, fit, manifest["block_cells"]))
            _finish_stage(folder, manifest, "pca", started)
        embedding = np.load(folder / "X_pca.npy")
        if "index" not in done:
            started = time.perf_counter()
            progress(0.65, f"FAISS index of {len(embedding):,} cells ({params.index.resolved_kind(len(embedding))})")
            index = build_index(embedding, params.index)
            progress(0.72, f"Measuring the index's recall@{params.k} against exact search")
            tuned = tune_search(index, embedding, params.k, params.target_recall, params.recall_queries)
            save_index(index, folder / "pca.faiss")
            _finish_stage(folder, manifest, "index", started, **tuned)
        if "umap" not in done:
            started = time.perf_counter()
            subsample = len(embedding) > params.umap.subsample_threshold
            progress(0.75, f"UMAP on {params.umap.subsample_size if subsample else len(embedding):,} cells"
                           + (", then placing the others" if subsample else "")
                           + f", after every cell's {params.k} nearest neighbours")
            graph, model = _layout(embedding, params, _tuned_index(folder, manifest), progress)
            _save_npz(folder / "umap.npz", coords=graph.obsm["X_umap"], **model.to_arrays())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stored = ad.AnnData(obs=graph.obs, obsp=graph.obsp, uns={"neighbors": graph.uns["neighbors"]})
                atomic_write(folder / "neighbors.h5ad", stored.write_h5ad, suffix=".h5ad")
            _finish_stage(folder, manifest, "umap", started, fitted_on=int(graph.uns["X_umap"]["n_fit_cells"]))
        if "frame" not in done:
            started = time.perf_counter()
            progress(0.95, "First frame")
            adata = _atlas_adata(source, scan, embedding, _load_npz(folder / "umap.npz")["coords"],
                                 ad.read_h5ad(folder / "neighbors.h5ad"), manifest)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                atomic_write(folder / "atlas.h5ad", adata.write_h5ad, suffix=".h5ad")
            image = render_atlas_frame(adata, _first_label(adata.obs))
            from .render import png_bytes

            atomic_write(folder / "first_frame.png", lambda tmp: Path(tmp).write_bytes(png_bytes(image)))
            _finish_stage(folder, manifest, "frame", started)
    finally:
        source.close()
    progress(1.0, "Done")
    return open_atlas(folder)


def _tuned_index(folder: Path, manifest: dict) -> faiss.Index:
    """The atlas's FAISS index with the search breadth its index stage tuned."""
    index = load_index(folder / "pca.faiss")
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(manifest["stages"]["index"]["ef_search"])
    return index


def _layout(embedding: np.ndarray, params: AtlasParams, index: faiss.Index,
            progress: Progress) -> tuple[ad.AnnData, UMAPModel]:
    """The cells' neighbours (on the atlas's tuned ``index``) and UMAP by :func:`sccore.workflow.neighbors_and_umap`,
    the chain of the in-memory analysis, with the same parameters: an AnnData of the PCA with the neighbours in
    ``obsp``/``uns['neighbors']`` and the layout in ``obsm['X_umap']``, and the UMAP model."""
    graph = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(len(embedding)).astype(str)), obsm={"X_pca": embedding})
    pipeline = PipelineParams(preprocess=params.preprocess, pca=params.pca, index=params.index, n_neighbors=params.k,
                              umap=params.umap)
    layout = neighbors_and_umap(graph, "X_pca", pipeline, index=index, progress=progress,
                                progress_range=(0.75, 0.95))
    return graph, layout.model


def _atlas_adata(source: _CountsFile, scan: dict, embedding: np.ndarray, coords: np.ndarray, graph: ad.AnnData,
                 manifest: dict) -> ad.AnnData:
    """The small part of the atlas: kept cells' annotations and QC, kept genes with their statistics, PCA, the
    neighbours (``graph``'s ``obsp`` and ``uns['neighbors']``) and layout; ``X`` is an empty sparse matrix of the
    right shape."""
    keep, genes = scan["keep"], scan["keep_genes"]
    obs = source.obs.loc[keep].copy()
    for name in ("total_counts", "n_genes", "pct_mito"):
        obs[f"qc_{name}"] = scan[name][keep]
    var = source.var.loc[genes].copy()
    var.index = var.index.astype(str)
    var["highly_variable"] = scan["highly_variable"]
    var["n_cells"] = scan["detected"][genes]
    var["mean_normalised"] = scan["mean"][genes]
    adata = ad.AnnData(X=sp.csr_matrix((int(keep.sum()), int(genes.sum())), dtype=np.float32), obs=obs, var=var,
                       obsm={"X_pca": embedding, "X_umap": coords}, obsp=dict(graph.obsp))
    adata.uns["neighbors"] = graph.uns["neighbors"]
    adata.uns["dataset"] = source.uns.get("dataset", {"name": source.path.stem, "description": ""})
    adata.uns["atlas"] = {"source": manifest["input"]["path"], "n_input_cells": int(source.n_obs),
                          "n_input_genes": int(source.n_vars)}
    return adata


def open_atlas(folder: str | os.PathLike) -> Atlas:
    """Open an atlas :func:`build_atlas` finished in ``folder``."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{printable(str(folder))} holds no atlas: build one with `python -m sccore atlas IN.h5ad "
                         "-o FOLDER`.")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    missing = [stage for stage in STAGES if stage not in manifest.get("stages", {})]
    if missing:
        raise InputError(f"The atlas in {printable(str(folder))} is unfinished (missing: {', '.join(missing)}). Run "
                         "the same build again: it resumes where it stopped.")
    adata = ad.read_h5ad(folder / "atlas.h5ad")
    _read_annotations(folder, adata)
    return Atlas(folder=folder, adata=adata, index=_tuned_index(folder, manifest), manifest=manifest)

