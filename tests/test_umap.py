import numpy as np
import pytest
import scipy.sparse as sp

from sccore import InputError
from sccore.neighbors import IndexParams, build_index, knn
from sccore.umap import UMAPModel, UMAPParams, fit_umap, layout_schedule, transform


@pytest.fixture(scope="module")
def clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8, size=(4, 10))
    labels = rng.integers(0, 4, 1200)
    return (centres[labels] + rng.normal(size=(1200, 10))).astype(np.float32), labels


@pytest.fixture(scope="module")
def spectral_fit(clusters):
    """Neighbours of the clusters and UMAP's default layout of them (a spectral initialisation)."""
    points, _ = clusters
    neighbors = knn(points, 16)
    model, coords = fit_umap(points, neighbors, UMAPParams(n_neighbors=15))
    return neighbors, model, coords


def _cluster_purity(coords, labels, k=10):
    neighbors = knn(coords.astype(np.float32), k + 1, IndexParams(kind="flat"))
    return np.mean(labels[neighbors.indices[:, 1:]] == labels[:, None])


def _knn_preservation(points, coords, k=10):
    high = knn(points, k + 1, IndexParams(kind="flat")).indices[:, 1:]
    low = knn(coords.astype(np.float32), k + 1, IndexParams(kind="flat")).indices[:, 1:]
    return np.mean([len(np.intersect1d(a, b)) for a, b in zip(high, low)]) / k


def test_fit_umap_on_precomputed_neighbours_keeps_clusters_apart(clusters, spectral_fit):
    points, labels = clusters
    _, model, coords = spectral_fit
    assert coords.shape == (len(points), 2) and np.all(np.isfinite(coords))
    assert len(model.train_cells) == len(points)
    assert _cluster_purity(coords, labels) > 0.98


def test_layout_schedule_keeps_umap_learns_defaults_for_small_fits_and_the_work_of_5000_cells_up_to_the_large():
    params = UMAPParams(large_threshold=50_000, large_min_epochs=50)
    assert layout_schedule(700, params) == layout_schedule(5_000, params) == ("spectral", 500)  # the demo: as before
    assert layout_schedule(10_000, params) == ("spectral", 250)  # 500 x 5,000 cell-epochs, not umap-learn's 500
    assert layout_schedule(12_500, params) == layout_schedule(50_000, params) == ("spectral", 200)
    epochs = [layout_schedule(n, params)[1] for n in range(5_000, 12_600, 100)]
    assert epochs == sorted(epochs, reverse=True)  # no step: fewer epochs the more cells
    assert layout_schedule(50_001, params) == ("pca", 199)
    assert layout_schedule(100_000, params) == ("pca", 100)
    assert layout_schedule(1_000_000, params) == ("pca", 50)


def test_large_fit_is_repeatable_and_keeps_clusters_apart(clusters, spectral_fit):
    """The path for large inputs (PCA initialisation, fewer epochs), taken here by lowering its threshold: the same
    seed gives the same layout; clusters stay as pure as with the spectral one; of each cell's 10 nearest neighbours,
    at least 70 % as many stay near it as with the spectral one (its 50 epochs are few for 1,200 cells: 0.78 here)."""
    points, labels = clusters
    neighbors, _, spectral = spectral_fit
    large = UMAPParams(n_neighbors=15, large_threshold=len(points) // 4, large_min_epochs=50)
    _, first = fit_umap(points, neighbors, large)
    np.testing.assert_array_equal(first, fit_umap(points, neighbors, large)[1])
    assert not np.allclose(first, spectral)
    assert _cluster_purity(first, labels) > 0.98
    assert _knn_preservation(points, first) > 0.7 * _knn_preservation(points, spectral)


def test_subsample_fit_and_transform_place_the_rest_in_their_clusters(clusters):
    points, labels = clusters
    params = UMAPParams(n_neighbors=15, subsample_threshold=500, subsample_size=400)
    model, coords = fit_umap(points, None, params)
    assert len(model.train_cells) == 400
    assert _cluster_purity(coords, labels) > 0.95


def test_transform_places_new_cells_near_their_cluster_and_model_round_trips(clusters):
    points, labels = clusters
    model, coords = fit_umap(points, None, UMAPParams(n_neighbors=15))
    again = UMAPModel.from_arrays(model.to_arrays())
    rng = np.random.default_rng(1)
    new = points[:100] + rng.normal(scale=0.1, size=(100, 10)).astype(np.float32)
    placed = transform(again, new, build_index(points))
    centroids = np.stack([coords[labels == t].mean(0) for t in range(4)])
    nearest = np.argmin(((placed[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == labels[:100]) > 0.95


def test_too_few_cells():
    with pytest.raises(InputError, match="at least 4 cells"):
        fit_umap(np.zeros((3, 2), dtype=np.float32))


def test_transform_without_optimisation_is_repeatable(clusters):
    points, _ = clusters
    model, coords = fit_umap(points, None, UMAPParams(n_neighbors=15))
    index = build_index(points)
    first = transform(model, points[:50], index, optimize=False)
    np.testing.assert_array_equal(first, transform(model, points[:50], index, optimize=False))
    assert np.median(np.linalg.norm(first - coords[:50], axis=1)) < np.ptp(coords, axis=0).max() / 20


def test_umap_lays_out_the_stored_neighbours_as_fit_umap_does_on_them(clusters, spectral_fit):
    import anndata as ad

    from sccore.neighbors import neighbors
    from sccore.umap import umap

    points, _ = clusters
    adata = ad.AnnData(obsm={"X_pca": points})
    found = neighbors(adata, "X_pca", 15, IndexParams(), key_added="graph")
    model = umap(adata, "graph", UMAPParams(n_neighbors=15), key_added="X_layout")
    np.testing.assert_array_equal(adata.obsm["X_layout"], spectral_fit[2])
    assert found.k == 15 and len(model.train_cells) == len(points)
    assert adata.uns["X_layout"]["use_rep"] == "X_pca" and adata.uns["X_layout"]["neighbors_key"] == "graph"
    assert (adata.uns["X_layout"]["init"], adata.uns["X_layout"]["n_epochs"]) == ("spectral", 500)
    with pytest.raises(InputError, match="No neighbours are stored under 'other'"):
        umap(adata, "other")


def test_umap_learn_caches_its_numba_functions_on_disk_and_leaves_numba_s_decorators_as_they_were():
    import numba
    from numba.core.caching import FunctionCache

    from sccore.umap import umap_learn

    njit, jit = numba.njit, numba.jit
    module = umap_learn()
    assert (numba.njit, numba.jit) == (njit, jit)
    for function in (module.umap_.smooth_knn_dist, module.umap_.compute_membership_strengths,
                     module.layouts._nb_optimize_layout_euclidean_single_epoch):
        assert isinstance(function._cache, FunctionCache), function  # compiled once, then loaded by every process


def test_membership_weighted_positions_are_umap_learn_s_initial_placement():
    from sccore.umap import membership_weighted_positions, umap_learn

    rng = np.random.default_rng(3)
    graph = sp.random(60, 200, density=0.05, format="csr", random_state=4, dtype=np.float32)
    graph.data[::7] = 1.0  # the same point as a fitted cell: placed on it
    graph[5] = 0  # no neighbour: NaN
    graph.eliminate_zeros()
    embedding = rng.normal(size=(200, 2)).astype(np.float32)
    expected = umap_learn().umap_.init_graph_transform(graph, embedding)
    found = membership_weighted_positions(graph, embedding)
    assert np.isnan(found[5]).all() and np.isnan(expected[5]).all()
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6)
