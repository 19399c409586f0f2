import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA

from sccore.embed import PCAParams, fit_pca, pca, project_pca
from sccore.io import standardise
from sccore.pp import PreprocessParams, preprocess


def test_fit_pca_matches_scikit_learn_up_to_sign():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(200, 30)) @ rng.normal(size=(30, 30))
    fit = fit_pca(sp.csr_matrix(data), 5)
    reference = PCA(5, svd_solver="full").fit(data)
    ours = project_pca(sp.csr_matrix(data), fit["mean"], fit["components"])
    theirs = reference.transform(data)
    for i in range(5):
        assert abs(abs(np.corrcoef(ours[:, i], theirs[:, i])[0, 1]) - 1) < 1e-6
    np.testing.assert_allclose(fit["variance_ratio"], reference.explained_variance_ratio_, rtol=1e-6)


def test_pca_on_sparse_equals_dense():
    rng = np.random.default_rng(1)
    data = rng.poisson(0.5, size=(120, 40)).astype(float)
    sparse_fit, dense_fit = fit_pca(sp.csr_matrix(data), 4), fit_pca(data, 4)
    np.testing.assert_allclose(sparse_fit["components"], dense_fit["components"], atol=1e-8)


def test_pca_writes_obsm_loadings_and_uns(counts_adata):
    adata = preprocess(standardise(counts_adata), PreprocessParams(min_genes=0, n_top_genes=100))
    pca(adata, PCAParams(n_comps=10), key_added="X_pca")
    assert adata.obsm["X_pca"].shape == (adata.n_obs, 10)
    loadings = adata.varm["X_pca_loadings"]
    assert np.all(loadings[~adata.var["highly_variable"].to_numpy()] == 0)
    assert adata.uns["X_pca"]["params"]["n_comps"] == 10
    # new cells project with the stored loadings exactly as the fitted ones were
    again = project_pca(adata.X, adata.var["X_pca_mean"].to_numpy(), loadings)
    np.testing.assert_allclose(again, adata.obsm["X_pca"], atol=1e-4)
    # cell types separate along the first components
    first = adata.obsm["X_pca"][:, :3]
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    centroids = np.stack([first[labels == t].mean(0) for t in range(3)])
    spread = np.mean([first[labels == t].std(0).mean() for t in range(3)])
    assert min(np.linalg.norm(centroids[a] - centroids[b]) for a in range(3) for b in range(a + 1, 3)) > 2 * spread
