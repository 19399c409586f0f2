import logging
from dataclasses import replace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sccore import InputError
from sccore.io import standardise
from sccore.pp import (GENE_PANEL_MAX_GENES, PreprocessParams, compare_rules, default_params, is_gene_panel,
                       preprocess, qc_cuts, qc_metrics, qc_warnings, steps_table)
from tests.conftest import make_counts


def test_qc_metrics_from_counts(counts_adata):
    qc = qc_metrics(counts_adata)
    dense = counts_adata.X.toarray()
    np.testing.assert_allclose(qc["total_counts"], dense.sum(1))
    np.testing.assert_array_equal(qc["n_genes"], (dense > 0).sum(1))
    mito = dense[:, -3:].sum(1) / dense.sum(1) * 100
    np.testing.assert_allclose(qc["pct_mito"], mito, rtol=1e-5)


def test_preprocess_reports_what_each_step_removed():
    counts_adata = make_counts(n_cells=200, n_genes=GENE_PANEL_MAX_GENES)  # a whole transcriptome: min_genes applies
    dense = counts_adata.X.toarray()
    min_genes = int(np.percentile((dense > 0).sum(1), 30))
    params = PreprocessParams(qc_rule="thresholds", min_genes=min_genes, max_pct_mito=100, min_cells=3, n_top_genes=200)
    result = preprocess(standardise(counts_adata), params)
    kept_cells = (dense > 0).sum(1) >= min_genes
    assert 0 < (~kept_cells).sum() < len(kept_cells) / 2
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


def test_filtering_everything_names_the_fix():
    with pytest.raises(InputError, match="Lower the minimum detected genes"):
        preprocess(standardise(make_counts(n_cells=50, n_genes=GENE_PANEL_MAX_GENES)),
                   PreprocessParams(qc_rule="thresholds", min_genes=10_000))


def test_demo_qc_uses_whole_transcriptome_columns(demo):
    params = default_params(demo)
    assert (params.library_size_key, params.n_genes_key, params.pct_mito_key) == (
        "full_total_umis", "full_n_genes", "full_pct_mito")
    result = preprocess(demo, replace(params, qc_rule="thresholds"))
    assert result.n_obs == 700  # every demo cell has >= 1,000 detected genes and < 5 % mitochondrial counts
    outliers = preprocess(demo, params).uns["preprocess"]
    assert outliers["params"]["qc_rule"] == "outliers" and not outliers["gene_panel"] and not outliers["warnings"]
    assert list(outliers["criteria"]["metric"]) == ["total_counts", "n_genes", "pct_mito"]


def _mad_outliers(values: np.ndarray, n_mads: float, upper_only: bool = False) -> np.ndarray:
    """Outliers by the sc-best-practices recipe, written out with numpy (the raw MAD, no scaling)."""
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    high = values > median + n_mads * mad
    return high if upper_only else high | (values < median - n_mads * mad)


@pytest.mark.parametrize("n_mads", [2.0, 5.0])
def test_outlier_rule_matches_a_direct_mad_computation(n_mads):
    adata = standardise(make_counts(n_cells=400, seed=3))
    rng = np.random.default_rng(3)
    adata.obs["full_n_genes"] = rng.lognormal(7, 0.3, adata.n_obs).round()  # a whole-transcriptome column
    params = default_params(adata, n_mads=n_mads, min_cells=0)
    qc = qc_metrics(adata, params)
    expected = pd.DataFrame({
        "total_counts": _mad_outliers(np.log1p(qc["total_counts"].to_numpy()), n_mads),
        "n_genes": _mad_outliers(np.log1p(adata.obs["full_n_genes"].to_numpy()), n_mads),
        "pct_mito": _mad_outliers(qc["pct_mito"].to_numpy(), n_mads, upper_only=True)})
    assert expected.any(axis=1).sum() > 0
    result = preprocess(adata, params)
    np.testing.assert_array_equal(result.obs_names, adata.obs_names[~expected.any(axis=1).to_numpy()])
    criteria = result.uns["preprocess"]["criteria"]
    np.testing.assert_array_equal(criteria["cells_failing"], expected.sum().to_numpy())
    log_genes = np.log1p(adata.obs["full_n_genes"].to_numpy())
    mad = np.median(np.abs(log_genes - np.median(log_genes)))
    np.testing.assert_allclose(criteria["low"][1], np.expm1(np.median(log_genes) - n_mads * mad))
    assert criteria["low"][2] == -np.inf  # mitochondrial share: the upper side only
    steps = steps_table(result)
    assert steps["cells_removed"].iloc[:3].sum() == expected.any(axis=1).sum()
    table = compare_rules(qc, params)
    assert table.loc[0, "cells removed"] == expected.any(axis=1).sum()
    assert table.loc[0, "detected genes"] == expected["n_genes"].sum()


def _panel(n_cells: int = 300, n_genes: int = 366, seed: int = 0) -> ad.AnnData:
    """A CRISPRi-style gene panel: few detected genes per cell in X, whole-transcriptome totals in obs."""
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(rng.poisson(0.15, (n_cells, n_genes)).astype(np.float32))
    obs = pd.DataFrame({"full_total_umis": rng.lognormal(9, 0.3, n_cells).round(),
                        "full_pct_mito": rng.uniform(1, 6, n_cells)}, index=[f"c{i}" for i in range(n_cells)])
    return standardise(ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)])))


def test_a_gene_panel_keeps_its_cells_under_either_rule():
    panel = _panel()
    params = default_params(panel)
    assert params.library_size_key == "full_total_umis" and params.n_genes_key is None
    assert is_gene_panel(panel.n_vars, params) and not is_gene_panel(GENE_PANEL_MAX_GENES, replace(
        params, library_size_key=None))
    assert (qc_metrics(panel, params)["n_genes"] < 200).all()  # every cell fails "200 detected genes" on the panel
    thresholds = preprocess(panel, replace(params, qc_rule="thresholds"))
    assert thresholds.n_obs == panel.n_obs
    assert "skipped (a gene panel" in steps_table(thresholds)["step"].iloc[0]
    outliers = preprocess(panel, params)
    assert outliers.n_obs > 0.9 * panel.n_obs and outliers.uns["preprocess"]["gene_panel"]
    cuts = qc_cuts(qc_metrics(panel, params), replace(params, qc_rule="thresholds"), gene_panel=True)
    assert cuts.set_index("metric")["skipped"].to_dict() == {"n_genes": cuts["skipped"].iloc[0], "pct_mito": ""}


def whole_transcriptome(n_cells: int = 300, seed: int = 0) -> ad.AnnData:
    """Synthetic counts of a whole transcriptome (fixed cuts apply) whose mitochondrial share varies smoothly."""
    adata = make_counts(n_cells=n_cells, n_genes=GENE_PANEL_MAX_GENES, seed=seed)
    counts = adata.X.toarray()
    counts[:, -3:] += np.random.default_rng(seed).poisson(30, (n_cells, 3))  # the three MT- genes
    adata.X = sp.csr_matrix(counts)
    return adata


def test_a_step_removing_more_than_half_of_the_cells_is_warned(caplog):
    adata = standardise(whole_transcriptome())
    pct_mito = qc_metrics(adata)["pct_mito"]
    limit = float(np.percentile(pct_mito, 30))  # a fixed cut that removes 70 % of the cells
    with caplog.at_level(logging.WARNING, logger="sccore"):
        result = preprocess(adata, PreprocessParams(qc_rule="thresholds", max_pct_mito=limit, min_genes=0))
    warnings = qc_warnings(result)
    assert len(warnings) == 1 and f"removed {(pct_mito > limit).sum():,} of 300 cells (70%)" in warnings[0]
    assert "--qc-rule outliers" in warnings[0] and "--max-pct-mito" in warnings[0]
    assert warnings == [record.getMessage() for record in caplog.records]
    assert not qc_warnings(preprocess(adata, PreprocessParams(qc_rule="thresholds", min_genes=0)))


def test_unknown_rule_and_bad_mads_are_refused():
    with pytest.raises(InputError, match="outliers, thresholds"):
        PreprocessParams(qc_rule="mad")
    with pytest.raises(InputError, match="n_mads"):
        PreprocessParams(n_mads=0)
