import faiss
import numpy as np
import pytest

from sccore import InputError
from sccore.neighbors import IndexParams, Neighbors, build_index, knn, load_index, save_index, search


@pytest.fixture
def points():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5, size=(10, 16))
    return (centres[rng.integers(0, 10, 3000)] + rng.normal(size=(3000, 16))).astype(np.float32)


def brute_force(points, k):
    distances = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


def test_exact_knn_matches_brute_force(points):
    subset = points[:400]
    result = knn(subset, 10, IndexParams(kind="flat"))
    expected = brute_force(subset, 10)
    assert np.all(result.indices[:, 0] == np.arange(400))
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(result.indices, expected)])
    assert overlap > 0.999
    assert np.all(np.diff(result.distances, axis=1) >= -1e-5)


def test_hnsw_recall_against_exact(points):
    exact = knn(points, 15, IndexParams(kind="flat"))
    approximate = knn(points, 15, IndexParams(kind="hnsw"))
    recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(exact.indices, approximate.indices)])
    assert recall >= 0.95
    assert np.all(approximate.indices[:, 0] == np.arange(len(points)))


def test_auto_kind_uses_threshold():
    assert IndexParams(exact_threshold=100).resolved_kind(99) == "flat"
    assert IndexParams(exact_threshold=100).resolved_kind(100) == "ivf"
    assert IndexParams(kind="hnsw").resolved_kind(10) == "hnsw"
    with pytest.raises(InputError, match="auto, flat, ivf, hnsw"):
        IndexParams(kind="annoy").resolved_kind(10)
    assert IndexParams().lists(200_000) == 447 and IndexParams(ivf_list_factor=50).lists(20) == 20


def test_below_the_threshold_the_search_is_exact_faiss_as_before(points):
    """Below ``exact_threshold`` the index is FAISS's exact IndexFlatL2: the same neighbours, bit for bit."""
    index = build_index(points)
    assert type(index) is faiss.IndexFlatL2
    reference = faiss.IndexFlatL2(points.shape[1])
    reference.add(points)
    squared, expected = reference.search(points, 15)
    found = knn(points, 15)
    np.testing.assert_array_equal(found.indices, expected)
    np.testing.assert_array_equal(found.distances, np.sqrt(squared))


def test_the_large_input_index_finds_the_exact_neighbours_and_is_repeatable(points):
    """Above the threshold (lowered here): an inverted file whose recall@15 against exact search stays above 0.97
    (0.99 on these 3,000 clustered cells in 16 dimensions), the same every build; cells whose probed lists hold too
    few others get their exact neighbours."""
    large = IndexParams(exact_threshold=1_000)
    assert isinstance(build_index(points, large), faiss.IndexIVFFlat)
    exact = knn(points, 15, IndexParams(kind="flat"))
    approximate = knn(points, 15, large)
    recall = np.mean([len(np.intersect1d(a, b)) / 15 for a, b in zip(exact.indices, approximate.indices)])
    assert recall >= 0.97
    assert np.all(approximate.indices[:, 0] == np.arange(len(points)))
    np.testing.assert_array_equal(approximate.indices, knn(points, 15, large).indices)
    fewer_probes = knn(points, 15, IndexParams(exact_threshold=1_000, ivf_probes=2))
    assert np.mean([len(np.intersect1d(a, b)) / 15 for a, b in zip(exact.indices, fewer_probes.indices)]) < recall
    many = knn(points, 500, IndexParams(exact_threshold=1_000, ivf_probes=2))  # 2 of 55 lists hold about 110 cells
    exact_many = knn(points, 500, IndexParams(kind="flat"))
    np.testing.assert_array_equal(np.sort(many.indices, axis=1), np.sort(exact_many.indices, axis=1))


def test_index_and_neighbors_round_trip_on_disk(tmp_path, points):
    for kind in ("ivf", "hnsw"):
        index = build_index(points, IndexParams(kind=kind, ivf_probes=3, ef_search=40))
        save_index(index, tmp_path / f"{kind}.faiss")
        loaded = load_index(tmp_path / f"{kind}.faiss")
        a, b = search(index, points[:50], 5), search(loaded, points[:50], 5)
        np.testing.assert_array_equal(a.indices, b.indices)
    assert load_index(tmp_path / "ivf.faiss").nprobe == 3 and loaded.hnsw.efSearch == 40  # search breadths kept
    a.save(tmp_path / "neighbors.npz")
    again = Neighbors.load(tmp_path / "neighbors.npz")
    np.testing.assert_array_equal(again.indices, a.indices)
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_embeddings_are_refused(points):
    index = build_index(points)
    with pytest.raises(InputError, match="dimensions"):
        search(index, points[:, :3], 5)
    broken = points.copy()
    broken[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        build_index(broken)


def test_search_leaves_out_excluded_cells_in_flat_ivf_and_hnsw_indexes():
    embedding = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    excluded = np.arange(0, 600, 2)
    for kind in ("flat", "ivf", "hnsw"):
        index = build_index(embedding, IndexParams(kind=kind))
        found = search(index, embedding[:5], 10, exclude=excluded)
        assert found.indices.shape == (5, 10) and not np.isin(found.indices, excluded).any()
        assert np.all(found.indices >= 0) and np.all(np.diff(found.distances, axis=1) >= -1e-6)
        if kind == "ivf":  # the selector keeps the index's probes: the same cells as a search of the kept ones
            kept = np.setdiff1d(np.arange(600), excluded)
            alone = build_index(embedding[kept], IndexParams(kind="flat"))
            exact = kept[search(alone, embedding[:5], 10).indices]
            assert np.mean([len(np.intersect1d(a, b)) for a, b in zip(found.indices, exact)]) >= 9
    assert search(index, embedding[:1], 1000, exclude=excluded).k == 300


def test_neighbors_are_stored_the_scanpy_way_and_read_back(points):
    import anndata as ad
    from scanpy.neighbors._connectivity import umap as scanpy_connectivities

    from sccore.neighbors import neighbors, read_neighbors

    adata = ad.AnnData(obsm={"X_emb": points[:500]})
    found = neighbors(adata, "X_emb", 10, IndexParams(kind="flat"), key_added="emb")
    assert adata.uns["emb"]["connectivities_key"] == "emb_connectivities"
    assert adata.uns["emb"]["distances_key"] == "emb_distances"
    assert {"n_neighbors": 10, "method": "umap", "metric": "euclidean", "use_rep": "X_emb"}.items() <= \
        adata.uns["emb"]["params"].items()
    distances = adata.obsp["emb_distances"]
    assert distances.shape == (500, 500) and np.all(np.diff(distances.indptr) == 9)
    expected = scanpy_connectivities(found.indices, found.distances, n_obs=500, n_neighbors=10)
    np.testing.assert_allclose(adata.obsp["emb_connectivities"].toarray(), expected.toarray(), rtol=1e-6)
    again = read_neighbors(adata, "emb")
    np.testing.assert_array_equal(again.indices, found.indices)
    np.testing.assert_allclose(again.distances, found.distances)


def test_missing_stored_neighbours_are_refused_with_the_fix(points):
    import anndata as ad

    from sccore.neighbors import neighbors, read_neighbors

    adata = ad.AnnData(obsm={"X_emb": points[:50]})
    with pytest.raises(InputError, match="python -m sccore neighbors"):
        read_neighbors(adata, "neighbors")
    with pytest.raises(InputError, match="X_other"):
        neighbors(adata, "X_other", 10, IndexParams())
    with pytest.raises(InputError, match="n_neighbors must be from 2"):
        neighbors(adata, "X_emb", 1, IndexParams())


def test_a_file_the_cli_writes_works_with_scanpy_leiden_paga_and_umap(tmp_path, capsys):
    import anndata as ad
    import scanpy as sc

    from sccore.cli import main
    from tests.conftest import make_counts

    make_counts(n_cells=300).write_h5ad(tmp_path / "counts.h5ad")
    assert main(["embed", str(tmp_path / "counts.h5ad"), "-o", str(tmp_path / "pca.h5ad"), "--qc-rule", "thresholds",
                 "--min-genes", "0"]) == 0
    assert main(["umap", str(tmp_path / "pca.h5ad"), "-o", str(tmp_path / "umap.h5ad"),
                 "--neighbors-key", "pca_graph"]) == 0
    assert "obsp['pca_graph_distances'], obsp['pca_graph_connectivities']" in capsys.readouterr().out
    adata = ad.read_h5ad(tmp_path / "umap.h5ad")
    sc.tl.leiden(adata, neighbors_key="pca_graph", flavor="igraph", n_iterations=2, directed=False)
    assert adata.obs["leiden"].nunique() >= 3
    agreement = pd_crosstab_purity(adata.obs["leiden"], adata.obs["cell_type"])
    assert agreement > 0.9  # the graph separates the synthetic cell types
    sc.tl.paga(adata, groups="leiden", neighbors_key="pca_graph")
    assert adata.uns["paga"]["connectivities"].shape[0] == adata.obs["leiden"].nunique()
    sc.tl.umap(adata, neighbors_key="pca_graph")
    assert adata.obsm["X_umap"].shape == (300, 2) and np.isfinite(adata.obsm["X_umap"]).all()

    assert main(["neighbors", str(tmp_path / "pca.h5ad"), "-o", str(tmp_path / "graph.h5ad"), "--n-neighbors",
                 "8"]) == 0
    graph = ad.read_h5ad(tmp_path / "graph.h5ad")
    assert graph.uns["neighbors"]["params"]["n_neighbors"] == 8
    assert {"distances", "connectivities"} <= set(graph.obsp)  # scanpy's names for the default key
    sc.tl.leiden(graph, flavor="igraph", n_iterations=2, directed=False)  # scanpy's default neighbours
    assert graph.obs["leiden"].nunique() >= 3


def pd_crosstab_purity(clusters, labels) -> float:
    """The share of cells whose cluster's most common label is their own."""
    import pandas as pd

    table = pd.crosstab(clusters, labels)
    return float(table.max(axis=1).sum() / table.to_numpy().sum())
