"""UMAP layouts built on FAISS neighbours, with a ``transform`` that places new or perturbed cells.

:func:`umap` lays out the neighbours stored in an AnnData (``obsp``/``uns``, as scanpy stores them);
``sccore.workflow.neighbors_and_umap`` is the one chain, neighbours then UMAP, that everything calls.

Below ``subsample_threshold`` cells UMAP is fitted on all cells with the embedding's precomputed
neighbours. Above it, it is fitted on a random subsample and the other cells are placed by
:func:`transform`, which follows umap-learn's own transform but takes its neighbours from FAISS.

A fit on more than ``large_threshold`` cells starts from the embedding's first two principal components instead of
the spectral layout and runs fewer epochs than umap-learn's 200: as many as keep the work of a fit on
``large_threshold`` cells, at least ``large_min_epochs`` (:func:`layout_schedule`; 100 at 200,000 cells). On 200,000
resampled cells the spectral initialisation alone took minutes (its eigensolver converges slowly on many
near-duplicate cells) and each epoch costs a pass over every edge, while a large input's many similar cells make
later epochs redundant (benchmarks/bench_umap_large.py measures the time and the layout quality of both). Fits on
at most ``small_threshold`` cells (5,000: the demo's among them) run umap-learn's defaults, spectral and 500 epochs;
between the two thresholds the epochs fall from 500 to 200 as the cells grow (:func:`layout_schedule`). The layout
optimisation stays single-threaded: umap-learn's parallel path updates shared coordinates from several threads at
once (Hogwild), so the same seed would no longer give the same layout.

umap-learn and pynndescent compile their numba functions in every process (at import and on first use: about 20 s of
CPU before a first layout) and cache few of them: :func:`umap_learn` imports umap-learn with numba's disk cache on,
so that a new server process (or command) loads them instead.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import asdict, dataclass
from functools import cache, wraps
from typing import Callable

import anndata as ad
import faiss
import numpy as np
import scipy.sparse as sp

from .errors import InputError
from .neighbors import IndexParams, Neighbors, build_index, knn, read_neighbors, search

_IMPORT_LOCK = threading.Lock()  # umap_learn's import changes numba's decorators for its time


@dataclass(frozen=True)
class UMAPParams:
    """Parameters of :func:`fit_umap`."""

    n_neighbors: int = 15
    min_dist: float = 0.3
    spread: float = 1.0
    random_state: int = 0
    subsample_threshold: int = 200_000
    subsample_size: int = 100_000
    small_threshold: int = 5_000  # fits on more cells run fewer than 500 epochs (layout_schedule)
    large_threshold: int = 50_000
    large_min_epochs: int = 100


@cache
def umap_learn():
    """The ``umap`` package (umap-learn) with numba's disk cache on for its numba functions and pynndescent's, which
    they mostly leave off: cached where ``NUMBA_CACHE_DIR`` says, else beside the installed packages (numba's folder
    in the user's cache when those are read-only). Without it every process compiles them again: pynndescent's when
    umap-learn is imported, umap-learn's on first use, about 20 s of CPU before a first layout on 2 cores.

    The import runs with ``numba.njit`` and ``numba.jit`` caching by default (so the functions compiled at import are
    cached too); a ``umap`` imported before (by another package) has caching turned on for its functions here."""
    import numba
    from numba.core.dispatcher import Dispatcher

    with _IMPORT_LOCK:
        plain = numba.njit, numba.jit
        numba.njit, numba.jit = _caching(numba.njit), _caching(numba.jit)
        try:
            import umap
            import umap.layouts
            import umap.spectral
            import umap.umap_
            import umap.utils
        finally:
            numba.njit, numba.jit = plain
    for module in (umap.umap_, umap.layouts, umap.spectral, umap.utils):
        for function in vars(module).values():
            if isinstance(function, Dispatcher) and function.__module__ == module.__name__:
                function.enable_caching()
    return umap


def _caching(decorator):
    """A numba decorator (``njit``, ``jit``) that caches on disk unless told ``cache=False``."""
    @wraps(decorator)
    def cached(*args, **options):
        options.setdefault("cache", True)
        return decorator(*args, **options)

    return cached


def layout_schedule(n_fit_cells: int, params: UMAPParams) -> tuple[str, int]:
    """The initialisation and the number of epochs of a fit on ``n_fit_cells`` cells. Up to ``params.large_threshold``
    cells the spectral initialisation, and umap-learn's 500 epochs up to ``params.small_threshold`` cells; above it
    as many as keep the cell-epochs of a fit on ``small_threshold`` cells (500 x 5,000 by default), at least 200
    (umap-learn's number above 10,000 cells; reached at 12,500). umap-learn itself steps from 500 to 200 epochs after
    10,000 cells, so that a 10,000-cell fit cost 2.5 times a 10,001-cell one (on 9,985 resampled Kang cells, 250 epochs
    instead of 500 kept the layout's cell-type agreement and lost about 4 % of its kNN preservation; see
    benchmarks/RESULTS.md).
    Above ``large_threshold`` the first two principal components, and as many epochs as keep the cell-epochs of a fit
    on ``large_threshold`` cells (200 x 50,000 by default), at least ``params.large_min_epochs``."""
    if n_fit_cells > params.large_threshold:
        return "pca", max(params.large_min_epochs, 200 * params.large_threshold // n_fit_cells)
    return "spectral", min(500, max(200, 500 * params.small_threshold // max(1, n_fit_cells)))


@dataclass
class UMAPModel:
    """A fitted layout: the training cells' coordinates and what :func:`transform` needs to add cells."""

    embedding: np.ndarray  # training cells x 2
    train_cells: np.ndarray  # positions of the training cells in the dataset
    a: float
    b: float
    n_neighbors: int
    random_state: int

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The model as named arrays, for ``np.savez``."""
        return {"embedding": self.embedding, "train_cells": self.train_cells,
                "scalars": np.array([self.a, self.b, self.n_neighbors, self.random_state])}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "UMAPModel":
        """Rebuild a model from :meth:`to_arrays`' output."""
        a, b, n_neighbors, random_state = arrays["scalars"]
        return cls(arrays["embedding"], arrays["train_cells"], float(a), float(b), int(n_neighbors),
                   int(random_state))


def fit_umap(embedding: np.ndarray, neighbors: Neighbors | None = None, params: UMAPParams = UMAPParams(),
             index_params: IndexParams = IndexParams()) -> tuple[UMAPModel, np.ndarray]:
    """Fit UMAP on ``embedding`` and return the model and 2-D coordinates of every cell.

    ``neighbors`` (each cell itself first) are reused when UMAP is fitted on all cells; with a
    subsample, the subsample's neighbours come from a FAISS index over it, which also places the rest.
    """
    umap_module = umap_learn()
    embedding = np.ascontiguousarray(embedding, dtype=np.float32)
    n_cells = len(embedding)
    if n_cells < 4:
        raise InputError(f"UMAP needs at least 4 cells; this selection has {n_cells}.")
    n_neighbors = int(min(params.n_neighbors, n_cells - 1))
    rng = np.random.default_rng(params.random_state)
    subsample = n_cells > params.subsample_threshold
    train_cells = (np.sort(rng.choice(n_cells, size=params.subsample_size, replace=False)) if subsample
                   else np.arange(n_cells))
    train = embedding[train_cells]
    train_index = build_index(train, index_params) if subsample else None
    if subsample or neighbors is None or neighbors.k < n_neighbors or len(neighbors.indices) != n_cells:
        neighbors = knn(train, n_neighbors, index_params, index=train_index)
    init, n_epochs = layout_schedule(len(train_cells), params)
    reducer = umap_module.UMAP(n_neighbors=n_neighbors, min_dist=params.min_dist, spread=params.spread,
                               random_state=params.random_state, init=init, n_epochs=n_epochs,
                               precomputed_knn=(neighbors.indices[:, :n_neighbors].astype(np.int32),
                                                neighbors.distances[:, :n_neighbors]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_coords = reducer.fit_transform(train).astype(np.float32)
    model = UMAPModel(train_coords, train_cells, float(reducer._a), float(reducer._b), n_neighbors,
                      params.random_state)
    coords = np.empty((n_cells, 2), dtype=np.float32)
    coords[train_cells] = train_coords
    if subsample:
        rest = np.setdiff1d(np.arange(n_cells), train_cells)
        coords[rest] = transform(model, embedding[rest], train_index)
    return model, coords


def membership_weighted_positions(graph: sp.csr_matrix, embedding: np.ndarray) -> np.ndarray:
    """umap-learn's ``init_graph_transform`` as one sparse product (its loop slices the graph row by row: 0.3 ms a
    cell): each row of ``graph`` (new cells x fitted cells, membership strengths) at the strength-weighted mean of
    its fitted cells' positions in ``embedding``; at the first fitted cell of strength 1 (the same point) where it
    has one; NaN where it has none. The same positions to float32 rounding (the sum is taken in float64)."""
    sums = np.asarray(graph.sum(axis=1), dtype=np.float64).ravel()
    empty = np.diff(graph.indptr) == 0
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=~empty)
    positions = np.asarray(sp.diags(scale) @ graph @ np.asarray(embedding, dtype=np.float64), dtype=np.float32)
    positions[empty] = np.nan
    identical = np.flatnonzero(graph.data == 1)
    if len(identical):
        rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))[identical]
        rows, first = np.unique(rows, return_index=True)  # entries are in row order: the first of each row
        positions[rows] = embedding[graph.indices[identical[first]]]
    return positions


def transform(model: UMAPModel, new_embedding: np.ndarray, train_index: faiss.Index,
              optimize: bool = True) -> np.ndarray:
    """Place new cells (e.g. perturbed embeddings) in a fitted layout, as umap-learn's ``transform`` does.

    ``train_index`` is a FAISS index over the training cells' embedding (in ``model.train_cells`` order).
    With ``optimize=False`` each cell lands at the membership-weighted mean of its training neighbours'
    positions, skipping umap-learn's stochastic refinement: repeatable, so the difference between
    placing an original and a perturbed embedding shows the perturbation rather than sampling noise.
    """
    umap_module = umap_learn()
    optimize_layout_euclidean = umap_module.layouts.optimize_layout_euclidean
    compute_membership_strengths, make_epochs_per_sample, smooth_knn_dist = (
        getattr(umap_module.umap_, name) for name in ("compute_membership_strengths", "make_epochs_per_sample",
                                                      "smooth_knn_dist"))
    found = search(train_index, new_embedding, model.n_neighbors)
    distances = found.distances.astype(np.float32)
    sigmas, rhos = smooth_knn_dist(distances, float(model.n_neighbors), local_connectivity=0.0)
    rows, cols, vals, _ = compute_membership_strengths(found.indices.astype(np.int32), distances, sigmas, rhos,
                                                       bipartite=True)
    graph = sp.coo_matrix((vals, (rows, cols)), shape=(len(new_embedding), len(model.embedding)))
    csr = graph.tocsr()
    csr.eliminate_zeros()
    coords = membership_weighted_positions(csr, model.embedding)
    if not optimize:
        return coords
    n_epochs = 100 if len(new_embedding) <= 10_000 else 30
    graph.data[graph.data < graph.data.max() / n_epochs] = 0.0
    graph.eliminate_zeros()
    rng_state = np.random.default_rng(model.random_state).integers(-(2**31), 2**31 - 1, 3).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = optimize_layout_euclidean(
            coords, model.embedding.astype(np.float32, copy=True), graph.row, graph.col, n_epochs,
            graph.shape[1], make_epochs_per_sample(graph.data, n_epochs), model.a, model.b, rng_state,
            1.0, 0.25, 5, False,
        )
    return np.asarray(coords, dtype=np.float32)


def umap(adata: ad.AnnData, neighbors_key: str = "neighbors", params: UMAPParams = UMAPParams(),
         key_added: str = "X_umap", fit: Callable[..., tuple[UMAPModel, np.ndarray]] = fit_umap) -> UMAPModel:
    """UMAP of the representation whose neighbours :func:`sccore.neighbors.neighbors` stored under ``neighbors_key``,
    fitted on those neighbours (as ``scanpy.tl.umap(adata, neighbors_key=...)`` reads them), into
    ``obsm[key_added]`` with its parameters in ``uns[key_added]``; returns the model. ``fit`` is :func:`fit_umap` or
    a cached stand-in with its arguments."""
    found = read_neighbors(adata, neighbors_key)
    settings = adata.uns[neighbors_key]["params"]
    use_rep = str(settings["use_rep"])
    model, coords = fit(np.asarray(adata.obsm[use_rep]), found, params, IndexParams(**settings["index"]))
    adata.obsm[key_added] = coords
    init, n_epochs = layout_schedule(len(model.train_cells), params)
    adata.uns[key_added] = {"use_rep": use_rep, "neighbors_key": neighbors_key, "params": asdict(params),
                            "n_fit_cells": int(len(model.train_cells)), "init": init, "n_epochs": n_epochs}
    return model
