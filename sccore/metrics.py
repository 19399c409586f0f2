"""Integration metrics (scIB): does an embedding keep cell types apart while it mixes batches?

Every metric follows scib-metrics 0.5.10 (Luecken et al. 2022, "Benchmarking atlas-level data
integration"), reimplemented with numpy, scikit-learn and FAISS neighbours so that jax is not needed;
``tests/test_metrics.py`` checks each one against scib-metrics on the same data. All scores lie in
[0, 1], higher is better.

Bio conservation:

- ``isolated_labels``: mean rescaled silhouette ``(s + 1) / 2`` (by label) of the cells of the labels
  present in the fewest batches, averaged per label.
- ``kmeans_nmi``, ``kmeans_ari``: NMI and ARI between the labels and KMeans clusters (scikit-learn,
  k-means++, one initialisation, k = the number of labels).
- ``silhouette_label``: mean silhouette width by label, rescaled ``(asw + 1) / 2``.
- ``clisi``: median cell-type LISI over 90 neighbours (perplexity 30), scaled ``(L - lisi) / (L - 1)``.

Batch correction:

- ``silhouette_batch``: within each label, ``1 - |silhouette by batch|`` averaged over its cells; then
  over labels (labels found in one batch only are skipped, as in scIB).
- ``ilisi``: median batch LISI over 90 neighbours, scaled ``(lisi - 1) / (B - 1)``.
- ``kbet``: kBET acceptance rate per label (alpha 0.05) on diffusion-map neighbours of the label's
  UMAP connectivity graph (built from 50 neighbours), averaged over labels.
- ``graph_connectivity``: per label, the largest strongly connected component of the 15-neighbour
  graph restricted to the label, as a fraction of the label's cells; averaged over labels.
- ``pcr_comparison``: ``(pcr_before - pcr_after) / pcr_before`` (clipped at 0), where pcr is the
  variance explained by batch over all principal components of the unintegrated embedding
  (``obsm['X_pca']``) and of the evaluated one.

Aggregates as scib-metrics' ``Benchmarker``: ``bio_conservation`` and ``batch_correction`` are the
means of their metrics (NaN skipped), ``total = 0.6 * bio_conservation + 0.4 * batch_correction``.

Neighbours come from :func:`sccore.neighbors.knn` once per embedding (90 per cell, the cell itself
first; an inverted file above 50,000 cells). Above ``MetricsParams.max_silhouette_cells`` cells, silhouettes are
computed exactly for a label-stratified random sample of cells against *all* cells and averaged with
weights, which estimates the full mean without bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError
from .neighbors import IndexParams, Neighbors, knn

Progress = Callable[[float, str], None]

BIO_METRICS = ("isolated_labels", "kmeans_nmi", "kmeans_ari", "silhouette_label", "clisi")
BATCH_METRICS = ("silhouette_batch", "ilisi", "kbet", "graph_connectivity", "pcr_comparison")
AGGREGATES = ("bio_conservation", "batch_correction", "total")
BIO_WEIGHT = 0.6  # scIB: total = 0.6 x bio conservation + 0.4 x batch correction


def _quiet(fraction: float, message: str) -> None:
    """A progress callback that reports nothing."""


@dataclass(frozen=True)
class MetricsParams:
    """Parameters of :func:`benchmark_embeddings`; the defaults are scib-metrics' (neighbour counts, alpha).

    ``max_silhouette_cells``: above this many cells, silhouettes are averaged over a label-stratified
    sample of that many cells (each label keeps at least ``min_silhouette_cells_per_label`` cells, or
    all of them), each sampled cell's silhouette still computed against every cell.
    """

    lisi_neighbors: int = 90
    kbet_neighbors: int = 50
    connectivity_neighbors: int = 15
    kbet_alpha: float = 0.05
    diffusion_components: int = 100
    max_silhouette_cells: int = 10_000
    min_silhouette_cells_per_label: int = 200
    seed: int = 0
    index: IndexParams = IndexParams()


# --- Groups ------------------------------------------------------------------------------------------------------


def _codes(values) -> np.ndarray:
    """Integer codes 0..G-1 of the distinct values in ``values`` (in sorted order)."""
    return np.unique(np.asarray(values), return_inverse=True)[1].ravel().astype(np.int64)


def first_neighbors(neighbors: Neighbors, k: int) -> Neighbors:
    """The ``k`` nearest of each cell's neighbours (the cell itself first)."""
    return Neighbors(indices=neighbors.indices[:, :k], distances=neighbors.distances[:, :k])


def stratified_sample(labels, max_cells: int, min_per_label: int = 200, seed: int = 0) -> np.ndarray:
    """Sorted positions of a random sample of about ``max_cells`` cells, each label in proportion to its size
    but with at least ``min_per_label`` cells (or all of a smaller label); every cell when there are few."""
    codes = _codes(labels)
    if len(codes) <= max_cells:
        return np.arange(len(codes))
    rng = np.random.default_rng(seed)
    chosen = []
    for code, size in enumerate(np.bincount(codes)):
        members = np.flatnonzero(codes == code)
        wanted = min(size, max(min_per_label, round(size * max_cells / len(codes))))
        chosen.append(rng.choice(members, wanted, replace=False))
    return np.sort(np.concatenate(chosen))


# --- Silhouettes ----------------------------------------------------------------------------------------------------


def silhouette_samples(embedding: np.ndarray, groups, cells: np.ndarray | None = None,
                       chunk_bytes: int = 64 * 2 ** 20) -> np.ndarray:
    """Euclidean silhouette of each cell in ``cells`` (default: all) with respect to ``groups``, computed
    against every cell; 0 for cells alone in their group (scikit-learn's convention)."""
    embedding = np.asarray(embedding, dtype=np.float32)
    embedding = embedding - embedding.mean(axis=0)  # centred: less cancellation in the squared distances
    codes = _codes(groups)
    cells = np.arange(len(embedding)) if cells is None else np.asarray(cells)
    n_groups = int(codes.max()) + 1
    one_hot = np.zeros((len(embedding), n_groups), dtype=np.float32)
    one_hot[np.arange(len(embedding)), codes] = 1.0
    sizes = np.bincount(codes, minlength=n_groups).astype(np.float64)
    squared_norms = np.einsum("ij,ij->i", embedding, embedding)
    chunk = max(1, chunk_bytes // (4 * len(embedding)))
    sums = np.empty((len(cells), n_groups), dtype=np.float64)
    for start in range(0, len(cells), chunk):
        rows = cells[start:start + chunk]
        distances = (-2.0 * embedding[rows]) @ embedding.T
        distances += squared_norms[None, :]
        distances += squared_norms[rows, None]
        np.maximum(distances, 0.0, out=distances)
        np.sqrt(distances, out=distances)
        distances[np.arange(len(rows)), rows] = 0.0
        sums[start:start + len(rows)] = distances @ one_hot
    own = codes[cells]
    with np.errstate(divide="ignore", invalid="ignore"):
        means = sums / sizes
        intra = sums[np.arange(len(cells)), own] / (sizes[own] - 1)
        means[np.arange(len(cells)), own] = np.inf
        nearest = means.min(axis=1)
        values = (nearest - intra) / np.maximum(intra, nearest)
    values[sizes[own] <= 1] = 0.0
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)


def _sample_weights(codes: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Weights that make a mean over ``cells`` estimate the mean over every cell (label size / cells sampled)."""
    sampled = np.bincount(codes[cells], minlength=codes.max() + 1)
    return (np.bincount(codes, minlength=codes.max() + 1) / np.maximum(sampled, 1))[codes[cells]]


def _silhouette_label_score(values: np.ndarray, codes: np.ndarray, cells: np.ndarray) -> float:
    return float((np.average(values, weights=_sample_weights(codes, cells)) + 1) / 2)


def _isolated_label_score(values: np.ndarray, codes: np.ndarray, batch_codes: np.ndarray, cells: np.ndarray) -> float:
    isolated = isolated_label_set(codes, batch_codes)
    rescaled = (values + 1) / 2
    return float(np.mean([rescaled[codes[cells] == label].mean() for label in isolated
                          if np.any(codes[cells] == label)]))


def isolated_label_set(labels, batches) -> np.ndarray:
    """The labels (as codes of ``labels``) found in the fewest batches (scIB's isolated labels)."""
    codes, batch_codes = _codes(labels), _codes(batches)
    batches_per_label = pd.DataFrame({"label": codes, "batch": batch_codes}).drop_duplicates()["label"].value_counts()
    return np.sort(batches_per_label.index[batches_per_label == batches_per_label.min()].to_numpy())


def silhouette_label(embedding: np.ndarray, labels, cells: np.ndarray | None = None) -> float:
    """Mean silhouette width by label, rescaled to [0, 1] as ``(asw + 1) / 2``; over ``cells`` (a
    :func:`stratified_sample`) with weights when given."""
    codes = _codes(labels)
    cells = np.arange(len(codes)) if cells is None else cells
    return _silhouette_label_score(silhouette_samples(embedding, codes, cells), codes, cells)


def isolated_labels(embedding: np.ndarray, labels, batches, cells: np.ndarray | None = None) -> float:
    """Mean rescaled silhouette (by label) of the isolated labels' cells, averaged per isolated label."""
    codes = _codes(labels)
    cells = np.arange(len(codes)) if cells is None else cells
    return _isolated_label_score(silhouette_samples(embedding, codes, cells), codes, _codes(batches), cells)


def silhouette_batch(embedding: np.ndarray, labels, batches, cells: np.ndarray | None = None) -> float:
    """Within each label, ``1 - |silhouette by batch|`` averaged over its cells (those in ``cells`` when
    given), then over labels; labels in a single batch, or with one cell per batch, are skipped. NaN
    when no label qualifies."""
    codes, batch_codes = _codes(labels), _codes(batches)
    chosen = np.zeros(len(codes), dtype=bool)
    chosen[np.arange(len(codes)) if cells is None else cells] = True
    scores = []
    for label in np.unique(codes):
        members = np.flatnonzero(codes == label)
        n_batches = len(np.unique(batch_codes[members]))
        if n_batches == 1 or n_batches == len(members):
            continue
        queries = np.flatnonzero(chosen[members])
        values = silhouette_samples(np.asarray(embedding)[members], batch_codes[members], queries)
        scores.append(np.mean(1 - np.abs(values)))
    return float(np.mean(scores)) if scores else float("nan")


# --- Clustering -----------------------------------------------------------------------------------------------------


def kmeans_nmi_ari(embedding: np.ndarray, labels, seed: int = 0) -> tuple[float, float]:
    """NMI (arithmetic mean normalisation) and ARI between ``labels`` and KMeans clusters, k = number of labels."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    codes = _codes(labels)
    clusters = KMeans(n_clusters=int(codes.max()) + 1, n_init=1, random_state=seed).fit_predict(
        np.asarray(embedding, dtype=np.float32))
    return (float(normalized_mutual_info_score(codes, clusters, average_method="arithmetic")),
            float(adjusted_rand_score(codes, clusters)))


# --- LISI -----------------------------------------------------------------------------------------------------------


def lisi(neighbors: Neighbors, groups, perplexity: float | None = None, tol: float = 1e-5,
         max_tries: int = 50, chunk: int = 20_000) -> np.ndarray:
    """Local inverse Simpson index of each cell (Korsunsky et al. 2019): the effective number of groups among
    its neighbours (itself excluded), weighted by the kernel ``exp(-beta * distance)`` whose ``beta`` is found
    by bisection so that the weights' perplexity is ``perplexity`` (default k // 3); NaN where no weight is left."""
    codes = _codes(groups)
    indices = neighbors.indices
    distances = neighbors.distances.astype(np.float32)
    others = (indices != np.arange(len(indices))[:, None]).astype(np.float32)
    perplexity = float(np.floor(indices.shape[1] / 3)) if perplexity is None else perplexity
    result = np.empty(len(indices))
    for start in range(0, len(indices), chunk):
        rows = slice(start, start + chunk)
        weights = _perplexity_weights(distances[rows], others[rows], np.log(perplexity), tol, max_tries)
        n_rows, n_groups = weights.shape[0], int(codes.max()) + 1
        flat = (np.arange(n_rows)[:, None] * n_groups + codes[indices[rows]]).ravel()
        per_group = np.bincount(flat, weights=weights.ravel(), minlength=n_rows * n_groups).reshape(n_rows, n_groups)
        simpson = np.einsum("ij,ij->i", per_group, per_group)
        result[rows] = np.divide(1.0, simpson, out=np.full(n_rows, np.nan), where=simpson > 0)
    return result


def _perplexity_weights(distances: np.ndarray, others: np.ndarray, log_perplexity: float, tol: float,
                        max_tries: int) -> np.ndarray:
    """Row-normalised ``exp(-beta * distance)`` over each row's other cells, ``beta`` bisected per row until the
    entropy is ``log_perplexity`` within ``tol`` (scib-metrics' search in float32: start at 1, double or halve until
    bracketed, at most ``max_tries`` steps)."""
    n_rows = len(distances)
    beta = np.ones(n_rows, dtype=np.float32)
    low, high = np.full(n_rows, -np.inf, dtype=np.float32), np.full(n_rows, np.inf, dtype=np.float32)

    def kernel(rows) -> np.ndarray:
        return np.exp(-distances[rows] * beta[rows, None]) * others[rows]

    def entropy_gap(rows: np.ndarray) -> np.ndarray:
        weights = kernel(rows)
        total = weights.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = np.log(total) + beta[rows] * (distances[rows] * weights).sum(axis=1) / total
        return np.where(total == 0, 0.0, entropy) - log_perplexity

    gap = entropy_gap(np.arange(n_rows))
    tries = np.zeros(n_rows, dtype=int)
    active = np.flatnonzero(np.abs(gap) >= tol)
    while len(active):
        too_flat, b = gap[active] > 0, beta[active]
        low[active] = np.where(too_flat, b, low[active])
        high[active] = np.where(too_flat, high[active], b)
        beta[active] = np.where(too_flat, np.where(np.isinf(high[active]), b * 2, (b + high[active]) / 2),
                                np.where(np.isinf(low[active]), b / 2, (b + low[active]) / 2))
        gap[active] = entropy_gap(active)
        tries[active] += 1
        active = active[(np.abs(gap[active]) >= tol) & (tries[active] < max_tries)]
    weights = kernel(slice(None))
    total = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def clisi(neighbors: Neighbors, labels) -> float:
    """Median cell-type LISI scaled to [0, 1] as ``(L - lisi) / (L - 1)`` (1: neighbours share the cell's label)."""
    n_labels = len(np.unique(np.asarray(labels)))
    return float((n_labels - np.nanmedian(lisi(neighbors, labels))) / (n_labels - 1))


def ilisi(neighbors: Neighbors, batches) -> float:
    """Median batch LISI scaled to [0, 1] as ``(lisi - 1) / (B - 1)`` (1: every batch equally among neighbours)."""
    n_batches = len(np.unique(np.asarray(batches)))
    return float((np.nanmedian(lisi(neighbors, batches)) - 1) / (n_batches - 1))


# --- kBET -----------------------------------------------------------------------------------------------------------


def kbet(neighbors: Neighbors, batches, alpha: float = 0.05) -> float:
    """kBET acceptance rate (Büttner et al. 2019): the fraction of cells whose neighbourhood (itself included)
    passes a chi-squared test of its batch counts against the batches' overall frequencies at level ``alpha``."""
    from scipy.special import chdtrc

    codes = _codes(batches)
    n_batches = int(codes.max()) + 1
    expected = np.bincount(codes, minlength=n_batches) / len(codes) * neighbors.k
    neighbour_batches = codes[neighbors.indices]
    observed = np.stack([(neighbour_batches == b).sum(axis=1) for b in range(n_batches)], axis=1)
    statistic = ((observed - expected) ** 2 / expected).sum(axis=1)
    return float(np.mean(chdtrc(n_batches - 1, statistic) >= alpha))


def umap_connectivities(neighbors: Neighbors, tol: float = 1e-5, n_iter: int = 64) -> sp.csr_matrix:
    """UMAP's symmetric fuzzy connectivity graph of the neighbours (scanpy's ``obsp['connectivities']``), computed as
    umap-learn's ``fuzzy_simplicial_set`` does (local connectivity 1, fuzzy union) but vectorised, so there is no
    numba compilation: each cell's kernel ``exp(-(d - rho) / sigma)``, ``rho`` its nearest non-zero distance and
    ``sigma`` bisected until the kernel sums to log2(k) over its neighbours, then ``A + A.T - A * A.T``."""
    indices, distances = neighbors.indices, neighbors.distances.astype(np.float64)
    n_cells, k = indices.shape
    positive = np.where(distances > 0, distances, np.inf)
    rho = positive.min(axis=1)
    rho[np.isinf(rho)] = 0.0
    excess = np.maximum(distances[:, 1:] - rho[:, None], 0.0)
    target = np.log2(k)
    low, high, sigma = np.zeros(n_cells), np.full(n_cells, np.inf), np.ones(n_cells)
    active = np.arange(n_cells)
    for _ in range(n_iter):
        total = np.exp(-excess[active] / sigma[active, None]).sum(axis=1)
        active = active[np.abs(total - target) >= tol]
        total = total[np.abs(total - target) >= tol]
        if not len(active):
            break
        too_wide = total > target
        high[active] = np.where(too_wide, sigma[active], high[active])
        low[active] = np.where(too_wide, low[active], sigma[active])
        sigma[active] = np.where(too_wide | ~np.isinf(high[active]), (low[active] + high[active]) / 2,
                                 sigma[active] * 2)
    floor = 1e-3 * np.where(rho > 0, distances.mean(axis=1), distances.mean())
    sigma = np.maximum(sigma, floor)
    strength = np.exp(-np.maximum(distances - rho[:, None], 0.0) / sigma[:, None])
    strength[indices == np.arange(n_cells)[:, None]] = 0.0
    graph = sp.csr_matrix((strength.ravel(), indices.ravel(), np.arange(0, n_cells * k + 1, k)),
                          shape=(n_cells, n_cells))
    graph.sum_duplicates()
    graph.eliminate_zeros()
    transpose = graph.T.tocsr()
    union = graph + transpose - graph.multiply(transpose)
    union.eliminate_zeros()
    return sp.csr_matrix(union)


def _diffusion_embedding(connectivities: sp.csr_matrix, n_comps: int) -> np.ndarray:
    """Diffusion map of a connectivity graph with the diffusion time integrated out (eigenvalue e scaled to
    e / (1 - e)), as scib-metrics' ``diffusion_nn``."""
    from scipy.sparse.linalg import eigsh

    density = np.asarray(connectivities.sum(axis=0)).ravel()
    kernel = sp.diags(1.0 / density) @ connectivities @ sp.diags(1.0 / density)
    norm = np.sqrt(np.asarray(kernel.sum(axis=0)).ravel())
    transitions = sp.diags(1.0 / norm) @ kernel @ sp.diags(1.0 / norm)
    n_comps = min(transitions.shape[0] - 1, n_comps)
    start = np.random.default_rng(0).uniform(-1, 1, transitions.shape[0])  # ARPACK's own start, made reproducible
    values, vectors = eigsh(transitions.astype(np.float64), k=n_comps, which="LM", v0=start)
    values, vectors = values.astype(np.float32)[::-1] + np.float32(1e-8), vectors.astype(np.float32)[:, ::-1]
    scale = np.array([value if value == 1 else value / (1 - value) for value in values], dtype=np.float32)
    return np.ascontiguousarray(vectors * scale)


def kbet_per_label(neighbors: Neighbors, labels, batches, alpha: float = 0.05, diffusion_components: int = 100,
                   index: IndexParams = IndexParams()) -> float:
    """kBET acceptance rate per label, averaged over labels, as in scIB and scib-metrics' ``kbet_per_label``.

    Within each label: the UMAP connectivity graph of ``neighbors`` (scib-metrics uses 50) restricted to
    the label; neighbourhood size ``k0 = min(70, max(10, mean cells per batch / 4))``; neighbours from a
    diffusion map of that graph; labels with fewer than 10 (or ``k0 + 1``) cells or a single batch are
    skipped (NaN). A graph in several pieces is tested on the pieces of at least ``3 k0`` cells if they
    hold 75 % of the label's cells, else scores 0.

    scib-metrics 0.5.10 lowers the number of diffusion components for every later label once a label with
    fewer than 101 cells lowered it (a reused variable); here each label uses ``min(100, cells - 1)``.
    """
    from threadpoolctl import threadpool_limits

    codes, batch_codes = _codes(labels), _codes(batches)
    graph = umap_connectivities(neighbors)
    scores = []
    for label in np.unique(codes):
        in_label = codes == label
        # BLAS threads help ARPACK on large labels; on small ones they only contend (badly on a busy machine)
        with threadpool_limits(1 if in_label.sum() < 2000 else None, user_api="blas"):
            scores.append(_kbet_label(graph, in_label, batch_codes, alpha, diffusion_components, index))
    return float(np.nanmean(scores)) if np.any(np.isfinite(scores)) else float("nan")


def _kbet_label(graph: sp.csr_matrix, in_label: np.ndarray, batch_codes: np.ndarray, alpha: float,
                diffusion_components: int, index: IndexParams) -> float:
    """kBET of one label's cells (see :func:`kbet_per_label`); NaN when it is skipped."""
    from scipy.sparse.csgraph import connected_components

    members = np.flatnonzero(in_label)
    sub_batches = batch_codes[members]
    if len(members) < 10 or len(np.unique(sub_batches)) == 1:
        return float("nan")
    k0 = int(min(70, max(10, np.floor(np.mean(np.unique(sub_batches, return_counts=True)[1]) / 4))))
    subgraph = graph[members][:, members]
    n_parts, parts = connected_components(subgraph, connection="strong")
    if n_parts > 1:
        kept = np.flatnonzero(np.bincount(parts)[parts] >= 3 * k0)
        if len(kept) / len(members) < 0.75:
            return 0.0
        subgraph, sub_batches = subgraph[kept][:, kept], sub_batches[kept]
    if k0 + 1 > len(sub_batches):
        return float("nan")
    try:
        embedding = _diffusion_embedding(subgraph, diffusion_components)
        return kbet(knn(embedding, k0 + 1, index), sub_batches, alpha)
    except (ValueError, InputError, RuntimeError):  # scib-metrics: "diffusion distance failed", all rejected
        return 0.0


# --- Graph connectivity and PCR -------------------------------------------------------------------------------------


def graph_connectivity(neighbors: Neighbors, labels) -> float:
    """Per label, the largest strongly connected component of the (directed) kNN graph restricted to the label,
    as a fraction of its cells; averaged over labels (scib-metrics uses 15 neighbours)."""
    from scipy.sparse.csgraph import connected_components

    codes = _codes(labels)
    n_cells, k = neighbors.indices.shape
    graph = sp.csr_matrix((np.ones(n_cells * k, dtype=np.int8), neighbors.indices.ravel(),
                           np.arange(0, n_cells * k + 1, k)), shape=(n_cells, n_cells))
    fractions = []
    for label in np.unique(codes):
        members = np.flatnonzero(codes == label)
        _, parts = connected_components(graph[members][:, members], connection="strong")
        fractions.append(np.bincount(parts).max() / len(members))
    return float(np.mean(fractions))


def principal_component_regression(embedding: np.ndarray, batches) -> float:
    """Variance explained by batch over all principal components: the R^2 of a regression of each PC on the batch
    (one-hot), weighted by the PC's variance. With every component this equals the between-batch share of the
    embedding's total variance, which is computed directly."""
    embedding = np.asarray(embedding, dtype=np.float64)
    centred = embedding - embedding.mean(axis=0)
    codes = _codes(batches)
    sizes = np.bincount(codes)
    batch_means = np.stack([centred[codes == b].mean(axis=0) for b in range(len(sizes))])
    total = np.sum(centred ** 2)
    return float(np.sum(sizes[:, None] * batch_means ** 2) / total) if total > 0 else 0.0


def pcr_comparison(unintegrated: np.ndarray, embedding: np.ndarray, batches) -> float:
    """How much of the batch's share of variance the embedding removed: ``(pcr_before - pcr_after) / pcr_before``,
    clipped at 0 (scib-metrics' scaled ``pcr_comparison``)."""
    before = principal_component_regression(unintegrated, batches)
    after = principal_component_regression(embedding, batches)
    return float(max(0.0, (before - after) / before)) if before > 0 else 0.0


# --- Whole embeddings -----------------------------------------------------------------------------------------------


def add_aggregates(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``bio_conservation`` and ``batch_correction`` (means of their metrics, NaN skipped) and
    ``total = 0.6 * bio_conservation + 0.4 * batch_correction``."""
    table = table.copy()
    table["bio_conservation"] = table[[m for m in BIO_METRICS if m in table]].mean(axis=1)
    table["batch_correction"] = table[[m for m in BATCH_METRICS if m in table]].mean(axis=1)
    table["total"] = BIO_WEIGHT * table["bio_conservation"] + (1 - BIO_WEIGHT) * table["batch_correction"]
    return table


def embedding_metrics(embedding: np.ndarray, labels, batches, unintegrated: np.ndarray,
                      params: MetricsParams = MetricsParams(), progress: Progress = _quiet) -> dict[str, float]:
    """Every metric of one embedding (cells x dimensions) for per-cell ``labels`` and ``batches``; neighbours are
    searched once (``params.lisi_neighbors``) and their first 50 and 15 feed kBET and graph connectivity. Progress
    fractions follow the steps' measured shares of the time (kBET is the largest)."""
    codes, batch_codes = _codes(labels), _codes(batches)
    embedding = np.ascontiguousarray(embedding, dtype=np.float32)
    progress(0.0, f"{params.lisi_neighbors} nearest neighbours (FAISS)")
    neighbors = knn(embedding, min(params.lisi_neighbors, len(embedding)), params.index)
    scores = {}
    progress(0.24, "silhouettes")
    cells = stratified_sample(codes, params.max_silhouette_cells, params.min_silhouette_cells_per_label, params.seed)
    values = silhouette_samples(embedding, codes, cells)
    scores["isolated_labels"] = _isolated_label_score(values, codes, batch_codes, cells)
    scores["silhouette_label"] = _silhouette_label_score(values, codes, cells)
    scores["silhouette_batch"] = silhouette_batch(embedding, codes, batch_codes, cells)
    progress(0.31, "KMeans NMI and ARI")
    scores["kmeans_nmi"], scores["kmeans_ari"] = kmeans_nmi_ari(embedding, codes, params.seed)
    progress(0.32, "cLISI and iLISI")
    scores["clisi"] = clisi(neighbors, codes)
    scores["ilisi"] = ilisi(neighbors, batch_codes)
    progress(0.37, "kBET per label")
    scores["kbet"] = kbet_per_label(first_neighbors(neighbors, params.kbet_neighbors), codes, batch_codes,
                                    params.kbet_alpha, params.diffusion_components, params.index)
    progress(0.98, "graph connectivity and PCR")
    scores["graph_connectivity"] = graph_connectivity(first_neighbors(neighbors, params.connectivity_neighbors), codes)
    scores["pcr_comparison"] = pcr_comparison(unintegrated, embedding, batch_codes)
    return {name: scores[name] for name in BIO_METRICS + BATCH_METRICS}


def _obs_column(adata: ad.AnnData, key: str, role: str) -> pd.Series:
    if key not in adata.obs:
        raise InputError(f"There is no obs column '{key}' to use as the {role} key; choose one of: "
                         f"{', '.join(map(str, adata.obs.columns)) or 'none (the file has no annotations)'}.")
    return adata.obs[key].astype("category")


def check_inputs(adata: ad.AnnData, label_key: str, batch_key: str, embeddings: list[str],
                 unintegrated_key: str = "X_pca") -> tuple[np.ndarray, list[str]]:
    """The cells to score and notes on those left out; refuses, naming the fix, a missing key, a single batch or label.

    Cells with no label or batch (NaN) and cells whose label has a single cell are left out with a note: a silhouette,
    a cluster or a neighbourhood needs two cells of a label (scIB users usually see such labels as annotation slips).
    """
    labels = _obs_column(adata, label_key, "label")
    batches = _obs_column(adata, batch_key, "batch")
    if label_key == batch_key:
        raise InputError(f"The label key and the batch key are both '{label_key}'; choose a batch column other than "
                         "the cell-type labels.")
    if not embeddings:
        raise InputError("No embedding to score: name at least one obsm key (e.g. X_pca,X_encoder).")
    for key in list(embeddings) + [unintegrated_key]:
        if key not in adata.obsm:
            raise InputError(f"There is no obsm['{key}']; embeddings available: "
                             f"{', '.join(adata.obsm.keys()) or 'none'}."
                             + (" Compute it with `python -m sccore embed`." if key in ("X_pca", "X_encoder") else ""))
    notes = []
    keep = labels.notna().to_numpy() & batches.notna().to_numpy()
    if not keep.all():
        notes.append(f"Left out {int((~keep).sum()):,} cells with no {label_key} or {batch_key} value.")
    counts = labels[keep].value_counts()
    singletons = counts.index[counts == 1]
    if len(singletons):
        keep &= ~labels.isin(singletons).to_numpy()
        shown = ", ".join(f"'{s}'" for s in list(singletons)[:5]) + (" …" if len(singletons) > 5 else "")
        notes.append(f"Left out {len(singletons)} label(s) with a single cell ({shown}): a silhouette or a cluster "
                     "needs at least two cells of a label.")
    if labels[keep].nunique() < 2:
        raise InputError(f"obs['{label_key}'] has fewer than two labels with two or more cells; choose a label key "
                         "with several cell types.")
    batch_values = batches[keep].unique()
    if len(batch_values) < 2:
        raise InputError(f"obs['{batch_key}'] has a single value ('{batch_values[0]}'), so there are no batches to "
                         "mix: choose a batch key with two or more values (e.g. donor, sample or sequencing run).")
    return np.flatnonzero(keep), notes


def benchmark_embeddings(adata: ad.AnnData, label_key: str, batch_key: str, embeddings: list[str],
                         unintegrated_key: str = "X_pca", params: MetricsParams = MetricsParams(),
                         progress: Progress = _quiet) -> pd.DataFrame:
    """The scIB metrics of each ``obsm`` embedding: one row per embedding (index ``embedding``), one column per metric
    (:data:`BIO_METRICS`, :data:`BATCH_METRICS`) and the aggregates ``bio_conservation``, ``batch_correction`` and
    ``total``. ``pcr_comparison`` compares with ``obsm[unintegrated_key]``. ``table.attrs["notes"]`` says which cells
    were left out (:func:`check_inputs`), ``table.attrs["n_cells"]`` how many were scored."""
    cells, notes = check_inputs(adata, label_key, batch_key, embeddings, unintegrated_key)
    labels = adata.obs[label_key].astype(str).to_numpy()[cells]
    batches = adata.obs[batch_key].astype(str).to_numpy()[cells]
    unintegrated = np.asarray(adata.obsm[unintegrated_key])[cells]
    rows = {}
    for position, key in enumerate(embeddings):
        def report(fraction: float, message: str, position: int = position, key: str = key) -> None:
            progress((position + fraction) / len(embeddings), f"{key}: {message}")

        try:
            rows[key] = embedding_metrics(np.asarray(adata.obsm[key])[cells], labels, batches, unintegrated, params,
                                          report)
        except InputError as error:
            raise InputError(f"obsm['{key}']: {error}") from error
    progress(1.0, "done")
    table = add_aggregates(pd.DataFrame.from_dict(rows, orient="index"))
    table.index.name = "embedding"
    table.attrs["notes"] = notes
    table.attrs["n_cells"] = len(cells)
    return table
