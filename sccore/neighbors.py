"""Nearest neighbours through FAISS: one index per embedding, one small result type for everyone, and the kNN
graph stored in an AnnData the way ``scanpy.pp.neighbors`` stores it.

The same :class:`Neighbors` feeds UMAP, search, label transfer and metrics, so neighbours are
computed once per embedding. :func:`neighbors` writes them as ``obsp['<key>_distances']`` and
``obsp['<key>_connectivities']`` (UMAP's fuzzy simplicial set, as scanpy computes it; for the default key
``neighbors``, ``obsp['distances']`` and ``obsp['connectivities']``, as scanpy names them) with the parameters in
``uns['<key>']``, so ``scanpy.tl.leiden``, ``scanpy.tl.paga`` and ``scanpy.tl.umap`` take them with
``neighbors_key='<key>'``; :func:`read_neighbors` gives them back as :class:`Neighbors`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import anndata as ad
import faiss
import numpy as np
import scipy.sparse as sp

from .cache import atomic_write
from .errors import InputError

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexParams:
    """How to index an embedding: exact (``"flat"``) below ``exact_threshold`` cells, an inverted file (``"ivf"``)
    above it.

    ``kind="auto"`` applies the threshold; ``"flat"``, ``"ivf"`` or ``"hnsw"`` force one. The inverted file sorts the
    cells into ``ivf_list_factor`` x sqrt(cells) lists (k-means centroids trained on ``ivf_train_per_list`` cells per
    list drawn with ``seed``: the same cells give the same lists) and a query scans its ``ivf_probes`` nearest lists.
    On 200,000 resampled cells it found 96 % of each cell's 15 exact neighbours (HNSW 97 %) in under half HNSW's CPU
    time (benchmarks/bench_knn_index.py); a cell whose probed lists hold fewer than k others is searched exactly.
    ``hnsw_m``, ``ef_construction`` and ``ef_search`` are HNSW's graph degree and search breadths.
    """

    kind: str = "auto"
    exact_threshold: int = 50_000
    ivf_list_factor: float = 1.0
    ivf_probes: int = 32  # the fewest with recall@15 >= 0.95 on 200k cells (benchmarks/bench_knn_index.py)
    ivf_train_per_list: int = 40
    seed: int = 0
    hnsw_m: int = 32
    ef_construction: int = 64
    ef_search: int = 96

    def resolved_kind(self, n_cells: int) -> str:
        """``"flat"``, ``"ivf"`` or ``"hnsw"`` for an embedding of ``n_cells`` cells."""
        if self.kind not in INDEX_KINDS:
            raise InputError(f"Unknown index kind '{self.kind}': use {', '.join(INDEX_KINDS)}.")
        if self.kind == "auto":
            return "flat" if n_cells < self.exact_threshold else "ivf"
        return self.kind

    def lists(self, n_cells: int) -> int:
        """The inverted file's number of lists for ``n_cells`` cells (at most one per cell)."""
        return max(1, min(n_cells, round(self.ivf_list_factor * np.sqrt(n_cells))))


@dataclass(frozen=True)
class Neighbors:
    """k nearest neighbours of each cell: ``indices`` (cells x k, int64, the cell itself first when it
    is in the index) and Euclidean ``distances`` (cells x k, float32, ascending)."""

    indices: np.ndarray
    distances: np.ndarray

    @property
    def k(self) -> int:
        """Neighbours per cell."""
        return self.indices.shape[1]

    def save(self, path: str | os.PathLike) -> None:
        """Write to an ``.npz`` file atomically."""
        atomic_write(path, lambda tmp: np.savez(tmp, indices=self.indices, distances=self.distances), suffix=".npz")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Neighbors":
        """Read what :meth:`save` wrote."""
        with np.load(path) as stored:
            return cls(indices=stored["indices"], distances=stored["distances"])


def _as_float32(embedding: np.ndarray) -> np.ndarray:
    embedding = np.ascontiguousarray(embedding, dtype=np.float32)
    if embedding.ndim != 2 or embedding.shape[0] == 0:
        raise InputError("An embedding must be a non-empty cells x dimensions matrix.")
    if not np.all(np.isfinite(embedding)):
        raise InputError("The embedding contains NaN or infinite values; recompute it from valid data.")
    return embedding


def build_index(embedding: np.ndarray, params: IndexParams = IndexParams()) -> faiss.Index:
    """A FAISS index over the rows of ``embedding`` (L2): exact, inverted file or HNSW as ``params`` says."""
    embedding = _as_float32(embedding)
    n_cells, dim = embedding.shape
    kind = params.resolved_kind(n_cells)
    if kind == "flat":
        index = faiss.IndexFlatL2(dim)
    elif kind == "ivf":
        index = _trained_ivf(embedding, params)
    else:
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    index.add(embedding)
    return index


def _trained_ivf(embedding: np.ndarray, params: IndexParams) -> faiss.IndexIVFFlat:
    """An empty inverted file of ``params.lists`` lists whose k-means centroids are trained on a random sample of the
    cells (``params.seed`` draws it and seeds k-means: the same cells give the same lists)."""
    n_cells, dim = embedding.shape
    n_lists = params.lists(n_cells)
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, n_lists)
    index.nprobe = min(params.ivf_probes, n_lists)
    index.cp.seed = params.seed
    index.cp.min_points_per_centroid = 1
    index.cp.max_points_per_centroid = params.ivf_train_per_list
    n_train = min(n_cells, n_lists * params.ivf_train_per_list)
    sample = np.sort(np.random.default_rng(params.seed).choice(n_cells, size=n_train, replace=False))
    index.train(embedding[sample])
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> Neighbors:
    """The ``k`` nearest indexed cells of each query row, never one of the indexed cells ``exclude``."""
    queries = _as_float32(queries)
    if queries.shape[1] != index.d:
        raise InputError(f"Queries have {queries.shape[1]} dimensions but the index has {index.d}; "
                         "embed them with the same method as the reference.")
    params = None
    if exclude is not None and len(exclude):
        exclude = np.unique(np.asarray(exclude, dtype=np.int64))
        selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(exclude))
        if isinstance(index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
        elif isinstance(index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
        else:
            params = faiss.SearchParameters(sel=selector)
        k = min(k, index.ntotal - len(exclude))
    k = int(min(k, index.ntotal))
    if k < 1:
        raise InputError("No indexed cell is left to search once the excluded cells are left out.")
    squared, indices = index.search(queries, k, params=params)
    return Neighbors(indices=indices.astype(np.int64), distances=np.sqrt(np.clip(squared, 0, None)).astype(np.float32))


def knn(embedding: np.ndarray, k: int = 15, params: IndexParams = IndexParams(),
        index: faiss.Index | None = None) -> Neighbors:
    """Each cell's ``k`` nearest cells (itself first) within ``embedding``; builds the index unless given."""
    if index is None:
        index = build_index(embedding, params)
    result = search(index, embedding, k)
    short = np.flatnonzero((result.indices < 0).any(axis=1))
    if len(short):  # an inverted file scans only its probed lists: these cells' neighbours by exact search
        exact = search(build_index(embedding, IndexParams(kind="flat")), embedding[short], k)
        result.indices[short], result.distances[short] = exact.indices, exact.distances
    return _self_first(result)


def _self_first(result: Neighbors) -> Neighbors:
    """Put each cell first in its own list (approximate search or ties can miss or misplace it)."""
    indices, distances = result.indices.copy(), result.distances.copy()
    rows = np.arange(len(indices))
    is_self = indices == rows[:, None]
    wrong = ~is_self[:, 0]
    if wrong.any():
        for row in np.flatnonzero(wrong):
            others = indices[row][indices[row] != row][: indices.shape[1] - 1]
            other_distances = distances[row][indices[row] != row][: indices.shape[1] - 1]
            indices[row] = np.concatenate([[row], others])
            distances[row] = np.concatenate([[0.0], other_distances])
    return Neighbors(indices=indices, distances=distances)


def save_index(index: faiss.Index, path: str | os.PathLike) -> None:
    """Write a FAISS index to ``path`` atomically."""
    atomic_write(path, lambda tmp: faiss.write_index(index, tmp))


def load_index(path: str | os.PathLike) -> faiss.Index:
    """Read a FAISS index written by :func:`save_index`."""
    return faiss.read_index(str(path))


def neighbors(adata: ad.AnnData, use_rep: str, n_neighbors: int, index_params: IndexParams,
              key_added: str = "neighbors", index: faiss.Index | None = None,
              found: Neighbors | None = None, graph: tuple[sp.csr_matrix, sp.csr_matrix] | None = None) -> Neighbors:
    """The kNN graph of ``obsm[use_rep]`` (``n_neighbors`` per cell, the cell itself included, as scanpy counts them)
    stored as ``scanpy.pp.neighbors(adata, key_added=key_added)`` stores it (see the module docstring); returns the
    neighbours. FAISS searches ``index`` (built from ``index_params`` unless given); ``found`` (e.g. from a cache)
    skips the search, and ``graph`` (:func:`knn_graph` of ``found``, e.g. from a cache) the connectivities."""
    if use_rep not in adata.obsm:
        raise InputError(f"obsm has no '{use_rep}'. Compute it first (e.g. `python -m sccore embed --method pca`); "
                         f"available: {', '.join(adata.obsm.keys()) or 'none'}.")
    if not 2 <= n_neighbors <= adata.n_obs:
        raise InputError(f"n_neighbors must be from 2 to the number of cells ({adata.n_obs}), not {n_neighbors}.")
    if found is None:
        found = knn(np.asarray(adata.obsm[use_rep]), n_neighbors, index_params, index=index)
    distances, connectivities = graph if graph is not None else knn_graph(found)
    distances_key, connectivities_key = graph_keys(key_added)
    adata.obsp[distances_key] = distances
    adata.obsp[connectivities_key] = connectivities
    adata.uns[key_added] = {"connectivities_key": connectivities_key, "distances_key": distances_key,
                            "params": {"n_neighbors": int(found.k), "method": "umap", "metric": "euclidean",
                                       "random_state": 0, "use_rep": use_rep, "knn": "faiss",
                                       "index": asdict(index_params)}}
    return found


def graph_keys(key: str) -> tuple[str, str]:
    """The ``obsp`` keys of the distances and connectivities stored under ``key``, as scanpy names them:
    ``distances`` and ``connectivities`` for ``neighbors``, ``<key>_distances`` and ``<key>_connectivities``
    otherwise."""
    prefix = "" if key == "neighbors" else f"{key}_"
    return f"{prefix}distances", f"{prefix}connectivities"


def knn_graph(found: Neighbors) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """scanpy's two matrices of ``found`` (each cell itself first): the distances to each cell's other neighbours
    (a row's entries in ascending distance) and the UMAP connectivities (``umap.umap_.fuzzy_simplicial_set``)."""
    from .umap import umap_learn

    fuzzy_simplicial_set = umap_learn().umap_.fuzzy_simplicial_set
    n_cells, k = found.indices.shape
    distances = sp.csr_matrix((found.distances[:, 1:].ravel().copy(), found.indices[:, 1:].ravel().copy(),
                               np.arange(0, n_cells * (k - 1) + 1, k - 1)), shape=(n_cells, n_cells))
    connectivities, _, _ = fuzzy_simplicial_set(sp.coo_matrix((n_cells, 1)), k, None, None,
                                                knn_indices=found.indices, knn_dists=found.distances,
                                                set_op_mix_ratio=1.0, local_connectivity=1.0)
    return distances, connectivities.tocsr()


def save_graph(graph: tuple[sp.csr_matrix, sp.csr_matrix], path: str | os.PathLike) -> None:
    """Write :func:`knn_graph`'s two matrices to one ``.npz`` file (read back by :func:`load_graph`)."""
    arrays = {}
    for name, matrix in zip(("distances", "connectivities"), graph):
        matrix = sp.csr_matrix(matrix)
        arrays.update({f"{name}_data": matrix.data, f"{name}_indices": matrix.indices,
                       f"{name}_indptr": matrix.indptr, f"{name}_shape": np.array(matrix.shape)})
    np.savez(path, **arrays)


def load_graph(path: str | os.PathLike) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The two matrices :func:`save_graph` wrote (without umap-learn: a cached graph needs no compilation)."""
    with np.load(path) as stored:
        return tuple(sp.csr_matrix((stored[f"{name}_data"], stored[f"{name}_indices"], stored[f"{name}_indptr"]),
                                   shape=tuple(stored[f"{name}_shape"])) for name in ("distances", "connectivities"))


def read_neighbors(adata: ad.AnnData, key: str = "neighbors") -> Neighbors:
    """The neighbours :func:`neighbors` stored under ``key`` (each cell itself first, then by distance)."""
    info = adata.uns.get(key)
    if not isinstance(info, dict) or info.get("distances_key") not in adata.obsp:
        raise InputError(f"No neighbours are stored under '{key}' (uns['{key}'] and its obsp distances). Compute "
                         f"them first: `python -m sccore neighbors IN.h5ad -o OUT.h5ad --key-added {key}`.")
    distances = sp.csr_matrix(adata.obsp[info["distances_key"]])
    k = int(info["params"]["n_neighbors"])
    if np.any(np.diff(distances.indptr) != k - 1):
        raise InputError(f"The neighbours under '{key}' do not have {k - 1} other cells in every row (written by "
                         f"another tool?). Compute them again with `python -m sccore neighbors`.")
    others = distances.indices.reshape(-1, k - 1).astype(np.int64)
    values = distances.data.reshape(-1, k - 1).astype(np.float32)
    order = np.argsort(values, axis=1, kind="stable")
    rows = np.arange(len(others), dtype=np.int64)[:, None]
    return Neighbors(indices=np.hstack([rows, np.take_along_axis(others, order, axis=1)]),
                     distances=np.hstack([np.zeros_like(rows, dtype=np.float32),
                                          np.take_along_axis(values, order, axis=1)]))
