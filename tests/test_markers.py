"""Marker genes and differential expression (sccore.markers), checked against scanpy's rank_genes_groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from sccore import markers
from sccore.errors import InputError
from sccore.markers import COLUMNS, differential_expression, rank_genes
from tests.conftest import make_counts

KANG = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kang_se.h5ad"


def log_normalised(adata):
    """Counts scaled to 1e4 per cell, then log1p (in place), as the markers are computed on."""
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


@pytest.fixture(scope="module")
def normalised():
    """300 synthetic cells x 400 genes of 3 cell types, log-normalised."""
    return log_normalised(make_counts())


def shifted_cells(n_per_set: int = 60, n_genes: int = 50, shifted=(3, 17, 29), seed: int = 1):
    """log1p of Poisson counts of two sets of cells (A first, then B); the ``shifted`` genes are up in A (not
    scaled to a total, which would move every other gene down in A)."""
    rng = np.random.default_rng(seed)
    rates = np.full((2 * n_per_set, n_genes), 2.0)
    rates[:n_per_set, list(shifted)] = 12.0
    counts = rng.poisson(rates).astype(float)
    return np.log1p(counts), [f"G{i}" for i in range(n_genes)]


@pytest.mark.parametrize("method", ["wilcoxon", "t-test"])
def test_rank_genes_matches_scanpy(normalised, method):
    """Scores, log fold changes, p-values and FDRs of every gene equal scanpy's (relative tolerance 1e-4 for
    scores and p-values, 1e-3 for fold changes, which scanpy averages in float32); top-10 genes are the same."""
    adata = normalised.copy()
    sc.tl.rank_genes_groups(adata, "cell_type", method=method, tie_correct=True, pts=True)
    expected = sc.get.rank_genes_groups_df(adata, group=None).rename(columns={"names": "gene"})
    ours = rank_genes(adata.X, adata.var_names, adata.obs["cell_type"], method=method)
    assert list(ours.columns) == COLUMNS
    assert list(ours["group"].unique()) == ["type_0", "type_1", "type_2"]
    assert len(ours) == 3 * adata.n_vars
    both = ours.merge(expected, on=["group", "gene"], validate="one_to_one")
    assert len(both) == len(ours)
    np.testing.assert_allclose(both["score"], both["scores"], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(both["pvalue"], both["pvals"], rtol=1e-4, atol=1e-300)
    np.testing.assert_allclose(both["fdr"], both["pvals_adj"], rtol=1e-4, atol=1e-300)
    np.testing.assert_allclose(both["logfoldchange"], both["logfoldchanges"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(both["pct_in"], both["pct_nz_group"], rtol=1e-12)
    np.testing.assert_allclose(both["pct_out"], both["pct_nz_reference"], rtol=1e-12)
    for group, table in ours.groupby("group"):
        assert table["score"].is_monotonic_decreasing
        assert set(table["gene"][:10]) == set(expected.loc[expected["group"] == group, "gene"][:10])


def test_dense_sparse_and_chunk_size_give_the_same_ranking(normalised, monkeypatch):
    """A dense matrix, and genes tested 7 at a time, give what the sparse matrix in chunks of 256 gives."""
    labels = normalised.obs["cell_type"]
    reference = rank_genes(normalised.X, normalised.var_names, labels)
    pd.testing.assert_frame_equal(rank_genes(normalised.X.toarray(), normalised.var_names, labels), reference)
    monkeypatch.setattr(markers, "GENES_PER_CHUNK", 7)
    pd.testing.assert_frame_equal(rank_genes(normalised.X, normalised.var_names, labels), reference)


def test_unlabelled_cells_are_left_out_and_groups_can_be_chosen(normalised):
    """Cells without a label count in neither the group nor the rest; ``groups_to_test`` reports only those."""
    labels = normalised.obs["cell_type"].astype(object).to_numpy().copy()
    labels[:40] = None
    labels[40:50] = np.nan
    ours = rank_genes(normalised.X, normalised.var_names, labels, groups_to_test=["type_2", "type_0"])
    subset = rank_genes(normalised.X[50:], normalised.var_names, labels[50:])
    assert list(ours["group"].unique()) == ["type_0", "type_2"]
    pd.testing.assert_frame_equal(ours, subset[subset["group"] != "type_1"].reset_index(drop=True))


@pytest.mark.parametrize("method", ["wilcoxon", "t-test"])
def test_differential_expression_finds_the_shifted_genes(method):
    """The genes shifted up in A come first, with positive fold changes and small FDRs; pct columns count cells."""
    expression, genes = shifted_cells()
    in_a = np.arange(120) < 60
    result = differential_expression(sp.csr_matrix(expression), genes, in_a, ~in_a, method=method)
    assert list(result.columns) == COLUMNS and set(result["group"]) == {"A"} and len(result) == 50
    top = result.iloc[:3]
    assert set(top["gene"]) == {"G3", "G17", "G29"}
    assert (top["logfoldchange"] > 1).all() and (top["fdr"] < 1e-6).all()
    assert (result.iloc[3:]["fdr"] > 1e-3).all()
    row = result.set_index("gene").loc["G5"]
    assert row["pct_in"] == pytest.approx((expression[:60, 5] > 0).mean())
    assert row["pct_out"] == pytest.approx((expression[60:, 5] > 0).mean())


def test_differential_expression_takes_positions_and_equals_ranking_two_groups():
    """Positions select the same cells as masks; A against B is group A of a two-group ranking."""
    expression, genes = shifted_cells()
    in_a = np.arange(120) < 60
    by_mask = differential_expression(expression, genes, in_a, ~in_a)
    by_position = differential_expression(expression, genes, np.arange(60)[::-1], np.arange(60, 120))
    pd.testing.assert_frame_equal(by_position, by_mask)
    labels = np.where(in_a, "A", "B")
    ranked = rank_genes(expression, genes, labels)
    pd.testing.assert_frame_equal(ranked[ranked["group"] == "A"].reset_index(drop=True), by_mask)


@pytest.mark.parametrize(("labels", "fragment"), [
    (["x"] * 10, "choose a column with two or more groups"),
    ([None] * 10, "choose a column with two or more groups"),
    (["x"] * 5 + ["y"] * 4 + ["lonely"], "lonely have only one cell: merge"),
    (["x"] * 5 + ["y"] * 4, "give one label per cell"),
])
def test_rank_genes_refuses_bad_groups(labels, fragment):
    """One group, a group of one cell and labels not one per cell are refused, naming the fix."""
    with pytest.raises(InputError, match=fragment):
        rank_genes(np.ones((10, 3)), ["a", "b", "c"], labels)


def test_rank_genes_refuses_bad_genes_methods_and_groups():
    """Gene names not one per column, an unknown method and an unknown group to test are refused."""
    labels = ["x"] * 5 + ["y"] * 5
    with pytest.raises(InputError, match="give one name per gene"):
        rank_genes(np.ones((10, 3)), ["a", "b"], labels)
    with pytest.raises(InputError, match="choose one of wilcoxon, t-test"):
        rank_genes(np.ones((10, 3)), ["a", "b", "c"], labels, method="logreg")
    with pytest.raises(InputError, match="choose among x, y"):
        rank_genes(np.ones((10, 3)), ["a", "b", "c"], labels, groups_to_test=["z"])


@pytest.mark.parametrize(("in_a", "in_b", "fragment"), [
    (np.zeros(10, bool), np.arange(10) >= 5, "Set A is empty: select at least 2 cells"),
    ([0, 1], [], "Set B is empty"),
    ([0, 1, 2], [2, 3], "1 cell\\(s\\) are in both A and B: remove them"),
    ([3, 1, 2], [1, 2, 3, 3], "A and B are the same 3 cells: choose other cells"),
    ([4], [5, 6], "Set A has only one cell: select at least 2 cells"),
    ([0, 1], [5, 10], "Set B holds positions outside"),
    (np.ones(9, bool), [0, 1], "give one entry per cell"),
])
def test_differential_expression_refuses_bad_selections(in_a, in_b, fragment):
    """Empty, overlapping, one-cell and out-of-range selections are refused, naming the fix."""
    with pytest.raises(InputError, match=fragment):
        differential_expression(np.ones((10, 3)), ["a", "b", "c"], in_a, in_b)


def test_top_genes_are_each_group_s_best_scores_in_the_table_s_order(normalised):
    """top_genes takes the first n rows of each group of a ranking, whose scores descend."""
    ranked = rank_genes(normalised.X, normalised.var_names, normalised.obs["cell_type"])
    best = markers.top_genes(ranked, 4)
    assert list(best) == ["type_0", "type_1", "type_2"]
    for group, genes in best.items():
        rows = ranked[ranked["group"] == group]
        assert genes == list(rows.nlargest(4, "score")["gene"])
    with pytest.raises(InputError, match="1 or more"):
        markers.top_genes(ranked, 0)


def test_expression_by_group_gives_means_and_shares_of_expressing_cells_in_category_order():
    """Each group's mean and share of cells > 0, groups in a categorical's order (empty categories and missing
    labels left out); unknown genes are refused."""
    matrix = sp.csr_matrix(np.array([[0.0, 1.0], [2.0, 0.0], [4.0, 3.0], [0.0, 0.0], [5.0, 5.0]]))
    groups = pd.Categorical(["b", "b", "a", "a", None], categories=["b", "empty", "a"])
    means, shares = markers.expression_by_group(matrix, ["g1", "g2"], groups, ["g2", "g1"])
    assert list(means.index) == ["b", "a"] and list(means.columns) == ["g2", "g1"]
    np.testing.assert_allclose(means.to_numpy(), [[0.5, 1.0], [1.5, 2.0]])
    np.testing.assert_allclose(shares.to_numpy(), [[0.5, 0.5], [0.5, 0.5]])
    assert markers.group_order(["z", "a", None, "z"]) == ["a", "z"]
    with pytest.raises(InputError, match="GX are not in the matrix"):
        markers.expression_by_group(matrix, ["g1", "g2"], groups, ["GX"])


def test_sample_by_group_draws_at_most_n_per_group_grouped():
    """At most per_group cells of each group, grouped in order, seeded, never a missing label."""
    groups = np.array(["b"] * 30 + ["a"] * 3 + [None] * 5, dtype=object)
    cells = markers.sample_by_group(groups, 10, seed=1)
    assert list(groups[cells]) == ["a"] * 3 + ["b"] * 10
    assert len(set(cells)) == 13 and np.array_equal(cells, markers.sample_by_group(groups, 10, seed=1))


def test_textbook_markers_of_real_pbmcs():
    """On Kang's PBMCs, each cell type's textbook markers are among its top 10 genes."""
    if not KANG.is_file():
        pytest.skip(f"real data not found at {KANG} (only CI and developers have ../shared/data)")
    adata = log_normalised(sc.read_h5ad(KANG))
    ranked = rank_genes(adata.X, adata.var_names, adata.obs["cell_type"])
    top = {group: set(table["gene"][:10]) for group, table in ranked.groupby("group")}
    assert top["CD14+ Monocytes"] & {"CD14", "LYZ"}
    assert top["B cells"] & {"MS4A1", "CD79A"}
    assert top["NK cells"] & {"GNLY", "NKG7"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])  # float32: values and groups sorted packed together
def test_zero_aware_ranking_equals_ranking_every_value(monkeypatch, dtype):
    """Ranking only the non-zero values (the zeros, stored or not, at their shared mid-rank) gives the Wilcoxon
    scores of ranking whole dense columns (scipy's rankdata and tiecorrect) on sparse data with many ties, negative
    values and unlabelled cells, whatever the ranges of genes read at once."""
    from scipy import stats

    rng = np.random.default_rng(7)
    n_cells, n_genes = 240, 30
    dense = rng.choice([-1.5, 0.5, 1.0, 2.0, 2.0 + 1e-9], size=(n_cells, n_genes))
    dense[rng.random((n_cells, n_genes)) < 0.7] = 0.0
    dense[:, 3] = 0.0  # a gene expressed nowhere
    dense[:, 4] = 1.0  # and one equal everywhere
    matrix = sp.csr_matrix(dense.astype(dtype))
    matrix.data[::11] = 0.0  # stored zeros are zeros
    labels = rng.choice(np.array(["a", "b", "c", None], dtype=object), size=n_cells)
    genes = [f"g{i}" for i in range(n_genes)]
    labelled = np.array([label is not None for label in labels])
    values, names = matrix.toarray()[labelled], labels[labelled]
    n = len(names)
    expected = {}
    for group in ("a", "b", "c"):
        inside = names == group
        n_in, n_out = inside.sum(), n - inside.sum()
        for gene in range(n_genes):
            rank_sum = stats.rankdata(values[:, gene])[inside].sum()
            spread = np.sqrt(stats.tiecorrect(stats.rankdata(values[:, gene])) * n_in * n_out * (n + 1) / 12)
            expected[group, genes[gene]] = (rank_sum - n_in * (n + 1) / 2) / spread if spread > 0 else 0.0
    ranked = rank_genes(matrix, genes, labels)
    ours = ranked.set_index(["group", "gene"])["score"]
    np.testing.assert_allclose([ours[key] for key in expected], list(expected.values()), rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(markers, "ENTRIES_PER_CHUNK", 40)  # a few genes at a time, and one alone when it is larger
    pd.testing.assert_frame_equal(rank_genes(matrix, genes, labels), ranked)
