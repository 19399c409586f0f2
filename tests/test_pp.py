import numpy as np
import pytest

from sccore import InputError
from sccore.io import standardise
from sccore.pp import PreprocessParams, default_params, preprocess, qc_metrics, steps_table


def test_qc_metrics_from_counts(counts_adata):
    qc = qc_metrics(counts_adata)
    dense = counts_adata.X.toarray()
    np.testing.assert_allclose(qc["total_counts"], dense.sum(1))
    np.testing.assert_array_equal(qc["n_genes"], (dense > 0).sum(1))
    mito = dense[:, -3:].sum(1) / dense.sum(1) * 100
    np.testing.assert_allclose(qc["pct_mito"], mito, rtol=1e-5)


def test_preprocess_reports_what_each_step_removed(counts_adata):
    params = PreprocessParams(min_genes=150, max_pct_mito=100, min_cells=3, n_top_genes=200)
    result = preprocess(standardise(counts_adata), params)
    dense = counts_adata.X.toarray()
    kept_cells = (dense > 0).sum(1) >= 150
    kept_genes = (dense[kept_cells] > 0).sum(0) >= 3
    assert result.shape == (kept_cells.sum(), kept_genes.sum())
    steps = steps_table(result)
    assert steps["cells_removed"].tolist()[0] == (~kept_cells).sum()
    assert steps["genes_removed"].tolist()[2] == (~kept_genes).sum()
    assert result.var["highly_variable"].sum() == 200
    # X = log1p(counts / total * 1e4), counts kept in a layer
    counts = result.layers["counts"].toarray()
    expected = np.log1p(counts / dense[kept_cells].sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(result.X.toarray(), expected, rtol=1e-5)


def test_library_size_key_changes_normalisation(counts_adata):
    adata = standardise(counts_adata)
    adata.obs["full_total_umis"] = np.asarray(adata.X.sum(1)).ravel() * 10
    params = default_params(adata, min_genes=0, max_pct_mito=100)
    assert params.library_size_key == "full_total_umis"
    result = preprocess(adata, params)
    counts = result.layers["counts"].toarray()
    expected = np.log1p(counts / result.obs["full_total_umis"].to_numpy()[:, None] * 1e4)
    np.testing.assert_allclose(result.X.toarray(), expected, rtol=1e-5)


def test_filtering_everything_names_the_fix(counts_adata):
    with pytest.raises(InputError, match="Lower the minimum detected genes"):
        preprocess(standardise(counts_adata), PreprocessParams(min_genes=10_000))


def test_demo_qc_uses_whole_transcriptome_columns(demo):
    params = default_params(demo)
    assert (params.library_size_key, params.n_genes_key, params.pct_mito_key) == (
        "full_total_umis", "full_n_genes", "full_pct_mito")
    result = preprocess(demo, params)
    assert result.n_obs == 700  # every demo cell has >= 1,000 detected genes and < 5 % mitochondrial counts
