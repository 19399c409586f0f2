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
    assert IndexParams(exact_threshold=100).resolved_kind(100) == "hnsw"
    with pytest.raises(InputError):
        IndexParams(kind="ivf").resolved_kind(10)


def test_index_and_neighbors_round_trip_on_disk(tmp_path, points):
    index = build_index(points, IndexParams(kind="hnsw"))
    save_index(index, tmp_path / "index.faiss")
    loaded = load_index(tmp_path / "index.faiss")
    a, b = search(index, points[:50], 5), search(loaded, points[:50], 5)
    np.testing.assert_array_equal(a.indices, b.indices)
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


def test_search_leaves_out_excluded_cells_in_flat_and_hnsw_indexes():
    embedding = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    excluded = np.arange(0, 600, 2)
    for kind in ("flat", "hnsw"):
        index = build_index(embedding, IndexParams(kind=kind))
        found = search(index, embedding[:5], 10, exclude=excluded)
        assert found.indices.shape == (5, 10) and not np.isin(found.indices, excluded).any()
        assert np.all(np.diff(found.distances, axis=1) >= -1e-6)
    assert search(index, embedding[:1], 1000, exclude=excluded).k == 300
