"""sccore.metrics against scib-metrics 0.5.10 on the same small synthetic data, the errors, and the CLI.

Where both sides get the same neighbours (scib-metrics' ``NeighborsResults`` built from sccore's exact
FAISS neighbours), the metrics agree to float32 rounding; each test states its tolerance and why.
"""

import subprocess
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sccore import InputError
from sccore import metrics
from sccore.neighbors import knn
from tests.conftest import ROOT

scib = pytest.importorskip("scib_metrics", reason="scib-metrics (requirements-test.txt) is the reference")
from scib_metrics.nearest_neighbors import NeighborsResults  # noqa: E402

warnings.filterwarnings("ignore", module="scib_metrics")


def integration_data(n_cells=1200, dim=16, n_types=5, n_batches=3, batch_shift=0.5, seed=1):
    """Gaussian cell types with batch offsets; the last type occurs in batch ``b0`` only (an isolated label).
    Returns the embedding, an unintegrated version (stronger batch offsets), labels and batches."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    batches = rng.integers(0, n_batches, n_cells)
    batches[types == n_types - 1] = 0
    centres = rng.normal(0, 1.3, (n_types, dim))
    shifts = rng.normal(0, 1.0, (n_batches, dim))
    noise = rng.normal(0, 1.0, (n_cells, dim))
    embedding = (centres[types] + batch_shift * shifts[batches] + noise).astype(np.float32)
    unintegrated = (centres[types] + 2 * shifts[batches] + noise).astype(np.float32)
    return embedding, unintegrated, np.array([f"t{t}" for t in types]), np.array([f"b{b}" for b in batches])


@pytest.fixture(scope="module")
def data():
    embedding, unintegrated, labels, batches = integration_data()
    neighbors = knn(embedding, 90)  # exact (flat) below 50,000 cells
    return {"X": embedding, "X_pre": unintegrated, "labels": labels, "batches": batches, "neighbors": neighbors,
            "scib_neighbors": NeighborsResults(indices=neighbors.indices, distances=neighbors.distances)}


def test_silhouettes_match_scib_metrics(data):
    """Same Euclidean silhouettes; float32 distances on both sides (GEMM here, jax cdist there): tolerance 1e-5."""
    X, labels, batches = data["X"], data["labels"], data["batches"]
    assert metrics.silhouette_label(X, labels) == pytest.approx(scib.silhouette_label(X, labels), abs=1e-5)
    assert metrics.isolated_labels(X, labels, batches) == pytest.approx(scib.isolated_labels(X, labels, batches),
                                                                        abs=1e-5)
    assert metrics.silhouette_batch(X, labels, batches) == pytest.approx(scib.silhouette_batch(X, labels, batches),
                                                                         abs=1e-5)
    assert list(metrics.isolated_label_set(labels, batches)) == [4]  # t4, the label in one batch only


def test_silhouette_sample_estimates_the_full_mean(data):
    """A label-stratified sample of 400 of 1,200 cells (each still scored against every cell) estimates the
    silhouettes within 0.01 here (the sampling error is about s.d. / sqrt(400) ~ 0.005)."""
    X, labels, batches = data["X"], data["labels"], data["batches"]
    cells = metrics.stratified_sample(labels, max_cells=400, min_per_label=60, seed=0)
    assert 380 <= len(cells) <= 420 and np.all(np.diff(cells) > 0)
    assert min(np.unique(labels[cells], return_counts=True)[1]) >= 60
    assert metrics.silhouette_label(X, labels, cells) == pytest.approx(metrics.silhouette_label(X, labels), abs=0.01)
    assert metrics.silhouette_batch(X, labels, batches, cells) == pytest.approx(
        metrics.silhouette_batch(X, labels, batches), abs=0.01)
    values = metrics.silhouette_samples(X, labels, cells)
    assert np.allclose(values, metrics.silhouette_samples(X, labels)[cells], atol=1e-6)


def test_kmeans_nmi_ari_match_scib_metrics(data, monkeypatch):
    """NMI and ARI of the same clusters are identical (1e-12); the clusterings differ only in KMeans' random start
    (scikit-learn vs jax k-means++, one initialisation each), and on these clusters both reach the same partition
    within 0.02."""
    import scib_metrics.metrics._nmi_ari as scib_nmi_ari
    from sklearn.cluster import KMeans

    X, labels = data["X"], data["labels"]
    ours = metrics.kmeans_nmi_ari(X, labels, seed=0)
    reference = scib.nmi_ari_cluster_labels_kmeans(X, labels)
    assert ours == pytest.approx((reference["nmi"], reference["ari"]), abs=0.02)
    monkeypatch.setattr(scib_nmi_ari, "_compute_clustering_kmeans",
                        lambda X, n: KMeans(n_clusters=n, n_init=1, random_state=0).fit_predict(X))
    same_clusters = scib.nmi_ari_cluster_labels_kmeans(X, labels)
    assert ours == pytest.approx((same_clusters["nmi"], same_clusters["ari"]), abs=1e-12)


def test_lisi_matches_scib_metrics(data):
    """Same neighbours and the same bisection (float64 here, float32 in jax): per-cell LISI within 1e-3, the scaled
    medians within 1e-4."""
    labels, batches = data["labels"], data["batches"]
    codes = pd.Categorical(batches).codes
    ours = metrics.lisi(data["neighbors"], batches)
    reference = scib.lisi_knn(data["scib_neighbors"], codes)
    assert np.max(np.abs(ours - reference)) < 1e-3
    assert metrics.ilisi(data["neighbors"], batches) == pytest.approx(scib.ilisi_knn(data["scib_neighbors"], batches),
                                                                      abs=1e-4)
    assert metrics.clisi(data["neighbors"], labels) == pytest.approx(scib.clisi_knn(data["scib_neighbors"], labels),
                                                                     abs=1e-4)
    assert 0.1 < metrics.ilisi(data["neighbors"], batches) < 0.9  # the data mixes batches partly


def test_umap_connectivities_match_umap_learn(data):
    """The vectorised fuzzy simplicial set equals umap-learn's (numba, float32) within 1e-5 on every edge."""
    from scipy.sparse import coo_matrix
    from umap.umap_ import fuzzy_simplicial_set

    neighbors = metrics.first_neighbors(data["neighbors"], 50)
    reference = fuzzy_simplicial_set(coo_matrix((len(neighbors.indices), 1)), 50, None, None,
                                     knn_indices=neighbors.indices, knn_dists=neighbors.distances)[0].tocsr()
    ours = metrics.umap_connectivities(neighbors)
    assert ours.nnz == reference.nnz
    assert abs(ours - reference).max() < 1e-5


def test_kbet_matches_scib_metrics(data, monkeypatch):
    """kBET on the same neighbours is identical. Per label, scib-metrics finds diffusion-map neighbours with
    pynndescent; patched to exact neighbours (as FAISS gives here), both run the same ARPACK eigenproblem, and the
    acceptance rates agree within 0.01 (a cell can flip only when its p-value sits at alpha or neighbours tie)."""
    import scib_metrics.nearest_neighbors as scib_nn
    from sklearn.neighbors import NearestNeighbors

    batches, labels = data["batches"], data["labels"]
    fifty = metrics.first_neighbors(data["neighbors"], 50)
    assert metrics.kbet(fifty, batches) == scib.kbet(data["scib_neighbors"].subset_neighbors(50), batches)[0]

    def exact(X, n_neighbors, **_):
        distances, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(X).kneighbors(X)
        return NeighborsResults(indices=indices, distances=distances.astype(np.float32))

    monkeypatch.setattr(scib_nn, "pynndescent", exact)
    ours = metrics.kbet_per_label(fifty, labels, batches)
    reference = scib.kbet_per_label(data["scib_neighbors"].subset_neighbors(50), batches, labels)
    assert ours == pytest.approx(reference, abs=0.01)
    assert 0.05 < ours < 0.95


def test_graph_connectivity_and_pcr_match_scib_metrics(data):
    """Graph connectivity is exact; PCR comparison within 1e-4 (jax's float32 SVD there, a float64 closed form here:
    with every component, the regression's explained variance is the between-batch share of the total variance)."""
    X, batches = data["X"], data["batches"]
    fifteen = metrics.first_neighbors(data["neighbors"], 15)
    assert metrics.graph_connectivity(fifteen, data["labels"]) == pytest.approx(
        scib.graph_connectivity(data["scib_neighbors"].subset_neighbors(15), data["labels"]), abs=1e-12)
    assert metrics.pcr_comparison(data["X_pre"], X, batches) == pytest.approx(
        scib.pcr_comparison(data["X_pre"], X, batches, categorical=True), abs=1e-4)
    assert metrics.pcr_comparison(X, X, batches) == 0.0


def test_aggregates_weight_bio_and_batch_as_scib():
    table = pd.DataFrame({name: [0.5, 0.8] for name in metrics.BIO_METRICS + metrics.BATCH_METRICS},
                         index=["a", "b"])
    table.loc["a", "kbet"] = np.nan  # skipped, as pandas' mean in scib-metrics' Benchmarker skips it
    table.loc["a", "ilisi"] = 0.9
    scored = metrics.add_aggregates(table)
    assert scored.loc["a", "batch_correction"] == pytest.approx((0.5 + 0.9 + 0.5 + 0.5) / 4)
    assert scored.loc["b", "total"] == pytest.approx(0.8)
    assert scored.loc["a", "total"] == pytest.approx(0.6 * 0.5 + 0.4 * scored.loc["a", "batch_correction"])


def atlas(n_cells=600, seed=2) -> ad.AnnData:
    embedding, unintegrated, labels, batches = integration_data(n_cells=n_cells, seed=seed)
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels), "batch": pd.Categorical(batches)},
                       index=[f"c{i}" for i in range(n_cells)])
    return ad.AnnData(obs=obs, obsm={"X_pca": unintegrated, "X_integrated": embedding})


def test_benchmark_embeddings_table():
    calls = []
    table = metrics.benchmark_embeddings(atlas(), "cell_type", "batch", ["X_pca", "X_integrated"],
                                         progress=lambda fraction, message: calls.append(fraction))
    assert list(table.index) == ["X_pca", "X_integrated"] and table.index.name == "embedding"
    assert list(table.columns) == list(metrics.BIO_METRICS + metrics.BATCH_METRICS + metrics.AGGREGATES)
    assert ((table >= 0) & (table <= 1)).all().all()
    assert table.loc["X_pca", "pcr_comparison"] == 0.0
    assert table.loc["X_integrated", "batch_correction"] > table.loc["X_pca", "batch_correction"]
    assert calls[-1] == 1.0 and calls == sorted(calls)
    assert table.attrs["notes"] == [] and table.attrs["n_cells"] == 600


def test_bad_input_is_refused_with_the_fix():
    adata = atlas(n_cells=200)
    with pytest.raises(InputError, match="no obs column 'celltype'.*cell_type, batch"):
        metrics.benchmark_embeddings(adata, "celltype", "batch", ["X_pca"])
    with pytest.raises(InputError, match="no obs column 'donor'"):
        metrics.benchmark_embeddings(adata, "cell_type", "donor", ["X_pca"])
    with pytest.raises(InputError, match=r"no obsm\['X_scvi'\].*X_pca, X_integrated"):
        metrics.benchmark_embeddings(adata, "cell_type", "batch", ["X_scvi"])
    with pytest.raises(InputError, match="both 'batch'"):
        metrics.benchmark_embeddings(adata, "batch", "batch", ["X_pca"])
    adata.obs["one_batch"] = pd.Categorical(["run1"] * adata.n_obs)
    with pytest.raises(InputError, match="single value .*'run1'.*two or more values"):
        metrics.benchmark_embeddings(adata, "cell_type", "one_batch", ["X_pca"])
    adata.obs["cell_id"] = pd.Categorical(adata.obs_names)
    with pytest.raises(InputError, match="fewer than two labels"):
        metrics.benchmark_embeddings(adata, "cell_id", "batch", ["X_pca"])
    adata.obsm["X_broken"] = np.where(np.arange(adata.n_obs)[:, None] == 3, np.nan, adata.obsm["X_pca"])
    with pytest.raises(InputError, match=r"obsm\['X_broken'\]: .*NaN"):
        metrics.benchmark_embeddings(adata, "cell_type", "batch", ["X_broken"])


def test_single_cell_labels_and_missing_values_are_left_out_with_a_note():
    adata = atlas(n_cells=300)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[0], labels[1] = "lonely", "nan_me"
    adata.obs["cell_type"] = pd.Categorical(labels)
    adata.obs.loc[adata.obs_names[1], "cell_type"] = np.nan
    table = metrics.benchmark_embeddings(adata, "cell_type", "batch", ["X_integrated"])
    assert table.attrs["n_cells"] == 298
    notes = " ".join(table.attrs["notes"])
    assert "1 cells with no cell_type or batch" in notes and "'lonely'" in notes
    assert np.isfinite(table.loc["X_integrated"]).all()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sccore", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_cli_writes_one_row_per_embedding(tmp_path):
    path = tmp_path / "atlas.h5ad"
    atlas().write_h5ad(path)
    out = tmp_path / "metrics.csv"
    result = run_cli("metrics", path, "--label-key", "cell_type", "--batch-key", "batch", "--embeddings",
                     "X_pca,X_integrated", "-o", out)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table.columns) == ["embedding", *metrics.BIO_METRICS, *metrics.BATCH_METRICS, *metrics.AGGREGATES]
    assert list(table["embedding"]) == ["X_pca", "X_integrated"]
    assert "total" in result.stdout
    bad = run_cli("metrics", path, "--label-key", "cell_type", "--batch-key", "donor", "--embeddings", "X_pca",
                  "-o", tmp_path / "bad.csv")
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "no obs column 'donor'" in lines[0]
    assert not (tmp_path / "bad.csv").exists()
