"""The whole path from raw counts to an explorable layout, each step cached on disk by content.

``analyse`` is what the dashboard and the report call: preprocess, PCA, then :func:`neighbors_and_umap`, the one
chain from an embedding to its layout (a FAISS index, its k-nearest neighbours stored the scanpy way in
``obsp``/``uns``, and UMAP on those stored neighbours) that the CLI, the jobs and the atlas call too. Reopening
the same data with the same parameters loads every step from the cache instead of computing it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import anndata as ad
import faiss
import numpy as np
import scipy.sparse as sp

from .cache import DiskCache, fingerprint, make_key
from .embed import PCAParams, pca_arrays, store_pca
from .errors import InputError
from .integrate import HarmonyParams
from .neighbors import (IndexParams, Neighbors, build_index, knn, knn_graph, load_graph, load_index, neighbors,
                        save_graph, save_index)
from .pp import PreprocessParams, preprocess
from .umap import UMAPModel, UMAPParams, fit_umap, umap

Progress = Callable[[float, str], None]
CACHE_VERSION = "3"  # bump when a cached entry changes shape


def _quiet(fraction: float, message: str) -> None:
    """A progress callback that reports nothing."""


@dataclass(frozen=True)
class PipelineParams:
    """Every parameter of :func:`analyse`, grouped by step."""

    preprocess: PreprocessParams = PreprocessParams()
    pca: PCAParams = PCAParams()
    index: IndexParams = IndexParams()
    n_neighbors: int = UMAPParams.n_neighbors  # per cell, itself included (as scanpy counts them)
    umap: UMAPParams = UMAPParams()
    encoder_model: str = ""  # a model folder: adds obsm['X_encoder'] and its UMAP; "" for PCA only
    encoder_pooling: str = "cell"
    encoder_device: str = "auto"
    batch_key: str = ""  # an obs column: adds Harmony's obsm['X_pca_harmony'] and its UMAP; "" for no integration
    harmony: HarmonyParams = HarmonyParams()


@dataclass
class Analysis:
    """A processed dataset and the heavy objects built on it, per embedding (``obsm`` key)."""

    adata: ad.AnnData
    key: str
    params: PipelineParams
    processed_key: str = ""  # the cache key of the preprocessed data, before PCA (:func:`prepare`)
    indexes: dict[str, faiss.Index] = field(default_factory=dict)
    neighbors: dict[str, Neighbors] = field(default_factory=dict)
    umap_models: dict[str, UMAPModel] = field(default_factory=dict)
    expression_reader: Callable[[int], np.ndarray] | None = field(default=None, repr=False)  # gene position ->
    # values; for data whose expression is not in adata.X (an atlas's gene-major store on disk)
    _by_gene: object = field(default=None, repr=False)

    def expression(self, gene: str) -> np.ndarray:
        """Log-normalised expression of ``gene`` in every cell (read from a gene-major copy, built once, or from
        ``expression_reader``)."""
        if gene not in self.adata.var_names:
            raise InputError(f"Gene '{gene}' is not in this dataset ({self.adata.n_vars} genes after filtering).")
        position = self.adata.var_names.get_loc(gene)
        if self.expression_reader is not None:
            return self.expression_reader(position)
        if self._by_gene is None:
            self._by_gene = sp.csc_matrix(self.adata.X)
        return np.asarray(self._by_gene[:, position].toarray()).ravel()

    def layouts(self) -> dict[str, np.ndarray]:
        """Every 2-D view of the cells: UMAPs, the first two PCs, and 2-D embeddings the file brought."""
        obsm = self.adata.obsm
        views = {key: np.asarray(obsm[key]) for key in obsm if key.startswith("X_umap")}
        if "X_pca" in obsm and obsm["X_pca"].shape[1] >= 2:
            views["X_pca (PC1 vs PC2)"] = np.asarray(obsm["X_pca"][:, :2])
        for key in obsm:
            value = np.asarray(obsm[key])
            if key not in views and value.ndim == 2 and value.shape[1] == 2 and np.issubdtype(value.dtype, np.number):
                views[key] = value
        return views


def layout_key(use_rep: str) -> str:
    """The ``obsm`` key of the UMAP of ``use_rep``: ``X_umap`` for ``X_pca``, ``X_umap_<name>`` otherwise."""
    return "X_umap" if use_rep == "X_pca" else f"X_umap_{use_rep.removeprefix('X_')}"


def graph_key(use_rep: str) -> str:
    """The ``uns`` key (and ``obsp`` prefix) of the neighbours of ``use_rep``: ``neighbors`` for ``X_pca``,
    ``neighbors_<name>`` otherwise."""
    return "neighbors" if use_rep == "X_pca" else f"neighbors_{use_rep.removeprefix('X_')}"


def _save_h5ad(adata: ad.AnnData, path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


def _save_umap(fitted: tuple[UMAPModel, np.ndarray], path: str) -> None:
    model, coords = fitted
    np.savez(path, coords=coords, **model.to_arrays())


def _load_umap(path: str) -> tuple[UMAPModel, np.ndarray]:
    arrays = _load_npz(path)
    return UMAPModel.from_arrays(arrays), arrays["coords"]


@dataclass
class Layout:
    """What :func:`neighbors_and_umap` built for one embedding: its FAISS index, its neighbours (also stored in the
    AnnData's ``obsp``/``uns``) and its UMAP model."""

    index: faiss.Index
    neighbors: Neighbors
    model: UMAPModel


def neighbors_and_umap(adata: ad.AnnData, use_rep: str, params: PipelineParams, cache: DiskCache = DiskCache(None),
                       parent_key: str = "", neighbors_key: str | None = None, key_added: str | None = None,
                       index: faiss.Index | None = None, progress: Progress = _quiet,
                       progress_range: tuple[float, float] = (0.0, 1.0)) -> Layout:
    """The one chain from an embedding to its layout, for the dashboard, the CLI, the jobs and the atlas: a FAISS
    index of ``obsm[use_rep]`` (``index`` when given), its ``params.n_neighbors`` nearest neighbours stored the
    scanpy way under ``neighbors_key`` (:func:`sccore.neighbors.neighbors`; default :func:`graph_key`), then UMAP
    fitted on those stored neighbours into ``obsm[key_added]`` (:func:`sccore.umap.umap`; default
    :func:`layout_key`). The index, the neighbours, their graph and the UMAP model are cached in ``cache`` under
    keys made from ``parent_key`` and the parameters."""
    low, high = progress_range
    neighbors_key = neighbors_key or graph_key(use_rep)
    key_added = key_added or layout_key(use_rep)
    if use_rep not in adata.obsm:
        raise InputError(f"obsm has no '{use_rep}'. Compute it first (e.g. `python -m sccore embed --method pca`); "
                         f"available: {', '.join(adata.obsm.keys()) or 'none'}.")
    embedding = np.asarray(adata.obsm[use_rep], dtype=np.float32)
    index_key = make_key(make_key(parent_key, use_rep), params.index)
    if index is None:
        progress(low, f"Indexing {use_rep} with FAISS ({params.index.resolved_kind(len(embedding))})")
        index = cache.fetch(index_key, "index.faiss", lambda: build_index(embedding, params.index), save_index,
                            load_index)
    progress(low + (high - low) / 3, f"Finding {params.n_neighbors} nearest neighbours of every cell")
    knn_key = make_key(index_key, params.n_neighbors)
    found = cache.fetch(knn_key, "neighbors.npz", lambda: knn(embedding, params.n_neighbors, params.index, index=index),
                        lambda value, path: value.save(path), Neighbors.load)
    graph = cache.fetch(knn_key, "graph.npz", lambda: knn_graph(found), save_graph, load_graph)  # a reopened dataset:
    # no umap-learn import (pynndescent compiles for seconds on import) before its cached layout is shown
    neighbors(adata, use_rep, params.n_neighbors, params.index, key_added=neighbors_key, found=found, graph=graph)
    progress(low + 2 * (high - low) / 3, f"Computing the UMAP of {use_rep}")
    umap_key = make_key(knn_key, params.umap)

    def fit(*arguments) -> tuple[UMAPModel, np.ndarray]:
        return cache.fetch(umap_key, "umap.npz", lambda: fit_umap(*arguments), _save_umap, _load_umap)

    model = umap(adata, neighbors_key, params.umap, key_added, fit=fit)
    progress(high, f"Laid out {use_rep}")
    return Layout(index=index, neighbors=found, model=model)


def add_neighbors_and_layout(analysis: Analysis, use_rep: str, cache: DiskCache, progress: Progress = _quiet,
                             parent_key: str | None = None, progress_range: tuple[float, float] = (0.5, 0.75)) -> None:
    """:func:`neighbors_and_umap` of ``obsm[use_rep]`` in the analysis, its index, neighbours and model kept there."""
    layout = neighbors_and_umap(analysis.adata, use_rep, analysis.params, cache, parent_key or analysis.key,
                                progress=progress, progress_range=progress_range)
    analysis.indexes[use_rep] = layout.index
    analysis.neighbors[use_rep] = layout.neighbors
    analysis.umap_models[use_rep] = layout.model


def prepare(adata: ad.AnnData, params: PipelineParams = PipelineParams(), cache: DiskCache | None = None,
            progress: Progress = _quiet) -> Analysis:
    """Preprocess ``adata`` (raw counts in ``X``) and compute its PCA, reusing cached steps: the first part of
    :func:`analyse`, which is all that quality control needs (no neighbours, no layout yet).

    The result's AnnData holds ``obsm['X_pca']`` and the QC report in ``uns['preprocess']``."""
    cache = cache or DiskCache(None)
    progress(0.0, "Fingerprinting the data")
    data_key = make_key(CACHE_VERSION, fingerprint(adata))
    pp_key = make_key(data_key, params.preprocess)
    progress(0.05, "Quality control, normalisation and highly variable genes")
    processed = cache.fetch(pp_key, "processed.h5ad", lambda: preprocess(adata, params.preprocess), _save_h5ad,
                            ad.read_h5ad)
    pca_key = make_key(pp_key, params.pca)
    progress(0.3, f"PCA ({params.pca.n_comps} components)")
    arrays = cache.fetch(pca_key, "pca.npz", lambda: pca_arrays(processed, params.pca),
                         lambda value, path: np.savez(path, **value), _load_npz)
    store_pca(processed, arrays, params.pca)
    return Analysis(adata=processed, key=pca_key, params=params, processed_key=pp_key)


def _sharing_copy(adata: ad.AnnData) -> ad.AnnData:
    """A new AnnData over the same matrices (``X``, layers, embeddings): what is added to its ``obsm``, ``obsp`` or
    ``uns`` is its own, and no matrix is copied."""
    return ad.AnnData(X=adata.X, obs=adata.obs.copy(), var=adata.var.copy(), uns=dict(adata.uns),
                      obsm=dict(adata.obsm), varm=dict(adata.varm), layers=dict(adata.layers))


def analyse(adata: ad.AnnData, params: PipelineParams = PipelineParams(), cache: DiskCache | None = None,
            progress: Progress = _quiet, prepared: Analysis | None = None) -> Analysis:
    """Preprocess ``adata`` (raw counts in ``X``), compute PCA, FAISS neighbours and UMAP; reuse cached steps.

    The result's AnnData holds ``obsm['X_pca']``, its neighbours (``obsp['distances']``, ``obsp['connectivities']``,
    ``uns['neighbors']``, as ``scanpy.pp.neighbors`` stores them), ``obsm['X_umap']`` and the QC report in
    ``uns['preprocess']``; the FAISS index, neighbours and UMAP model sit beside it. With ``params.batch_key``, also
    Harmony's ``obsm['X_pca_harmony']`` and its layout (:func:`add_harmony_embedding`); with ``params.encoder_model``,
    the encoder's ``obsm['X_encoder']`` and its layout. ``prepared`` (:func:`prepare` of the same data and
    preprocessing and PCA parameters, e.g. kept in memory) is built on without copying its matrices, and left as it
    was.
    """
    cache = cache or DiskCache(None)
    if prepared is None:
        analysis = prepare(adata, params, cache, progress)
    else:
        analysis = Analysis(adata=_sharing_copy(prepared.adata), key=prepared.key, params=params,
                            processed_key=prepared.processed_key)
    add_neighbors_and_layout(analysis, "X_pca", cache, progress)
    if params.batch_key:
        add_harmony_embedding(analysis, cache, progress)
    if params.encoder_model:
        add_encoder_embedding(analysis, cache, analysis.processed_key, progress)
    progress(1.0, "Done")
    return analysis


def add_harmony_embedding(analysis: Analysis, cache: DiskCache, progress: Progress = _quiet) -> None:
    """Integrate the batches of ``obs[params.batch_key]`` in the analysis's PCA with Harmony into
    ``obsm['X_pca_harmony']`` (:func:`sccore.integrate.harmony`), cached by content under a key made from the PCA's and
    Harmony's parameters, then index and lay it out (``X_umap_pca_harmony``). The analysis's key then names the
    integration too, so that results cached for another batch key are never reused."""
    from .integrate import check_batches, default_key, harmony_embedding, harmony_info

    params, adata = analysis.params, analysis.adata
    n_batches = check_batches(adata, params.batch_key)
    key = make_key(analysis.key, "harmony", params.batch_key, params.harmony)
    key_added = default_key("X_pca")
    progress(0.75, f"Harmony: integrating the {n_batches} batches of {params.batch_key}")
    adata.obsm[key_added] = cache.fetch(
        key, "harmony.npy", lambda: harmony_embedding(adata.obsm["X_pca"], adata.obs[params.batch_key], params.harmony),
        lambda value, path: np.save(path, value), np.load)
    adata.uns[key_added] = harmony_info(params.batch_key, "X_pca", n_batches, params.harmony)
    analysis.key = key
    add_neighbors_and_layout(analysis, key_added, cache, progress, progress_range=(0.75, 0.8))


def add_encoder_embedding(analysis: Analysis, cache: DiskCache, parent_key: str, progress: Progress = _quiet) -> None:
    """Embed the processed cells with ``params.encoder_model`` into ``obsm['X_encoder']``, then index and lay it out.
    The analysis's key then names the model (its folder and its files' content), so that what was cached for one
    model (the pages' tables, indexes and downloads) is never served for another."""
    from .device import resolve_device
    from .encode import embed_cells
    from .models.store import load_model, model_fingerprint

    params, adata = analysis.params, analysis.adata
    key = make_key(parent_key, model_fingerprint(params.encoder_model), params.encoder_pooling)

    def compute() -> np.ndarray:
        model = load_model(params.encoder_model, resolve_device(params.encoder_device))
        progress(0.75, f"Embedding cells with the encoder ({model.config.name})")
        return embed_cells(adata, model, pooling=params.encoder_pooling,
                           library_size_key=params.preprocess.library_size_key,
                           progress=lambda f, m: progress(0.75 + 0.1 * f, m))

    adata.obsm["X_encoder"] = cache.fetch(key, "encoder.npy", compute, lambda value, path: np.save(path, value), np.load)
    adata.uns["X_encoder"] = {"method": "encoder", "model": params.encoder_model, "pooling": params.encoder_pooling}
    analysis.key = make_key(analysis.key, "encoder", params.encoder_model, key)  # the model's folder and content
    add_neighbors_and_layout(analysis, "X_encoder", cache, progress, parent_key=key, progress_range=(0.85, 1.0))


def warm_up_pictures(n_cells: int = 64) -> None:
    """Load what a first picture runs (:mod:`sccore._render_kernel`'s numba functions: from numba's disk cache, or
    compiled once, seconds, on an install's first picture), on a tiny random layout."""
    from .render import fit_view, render_categories, render_values

    coords = np.random.default_rng(0).normal(size=(n_cells, 2)).astype(np.float32)
    view = fit_view(coords, 64, 64)
    render_categories(coords, np.arange(n_cells, dtype=np.int32) % 2, ["#000000", "#FFFFFF"], view)
    render_values(coords, coords[:, 0], view)


def warm_up_layouts(n_cells: int = 64) -> None:
    """Compile what a first layout and a first knockout's placement run, on a tiny random embedding: umap-learn's
    numba functions compile on first use in every process (and pynndescent's on import), tens of seconds of CPU."""
    from .umap import transform

    embedding = np.random.default_rng(0).normal(size=(n_cells, 8)).astype(np.float32)
    found = knn(embedding, 15)
    knn_graph(found)
    model, _ = fit_umap(embedding, found)
    transform(model, embedding[:4], build_index(embedding), optimize=False)
