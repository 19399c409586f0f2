"""Where a knockout moves the cells (arrows on a layout, mean shift per group) and the knockout's default gene."""

import numpy as np
import pandas as pd
import pytest

from sccore.perturb import KnockoutResult, default_gene
from sccore.shifts import group_shifts, umap_arrows
from tests.conftest import make_counts


def knocked_out(cells: np.ndarray, seed: int = 0) -> KnockoutResult:
    rng = np.random.default_rng(seed)
    original = rng.normal(size=(len(cells), 4)).astype(np.float32)
    perturbed = original + rng.normal(scale=0.1, size=original.shape).astype(np.float32)
    return KnockoutResult(["G"], "pca", np.asarray(cells), np.array([], dtype=np.int64), original, perturbed)


def test_an_arrow_starts_at_the_cells_position_and_moves_by_the_placed_difference():
    layout = np.arange(40, dtype=float).reshape(20, 2)
    result = knocked_out(np.array([3, 7, 11]))
    arrows = umap_arrows(result, layout, place=lambda rows: 2 * rows[:, :2])  # a linear placement
    assert list(arrows.cells) == [3, 7, 11] and arrows.n_moved == 3
    np.testing.assert_allclose(arrows.start, layout[[3, 7, 11]])
    np.testing.assert_allclose(arrows.end - arrows.start, 2 * (result.perturbed - result.original)[:, :2], rtol=1e-5)
    np.testing.assert_allclose(arrows.cosine, result.cosine)
    assert arrows.median_length == pytest.approx(np.median(np.linalg.norm(arrows.end - arrows.start, axis=1)))


def test_the_originals_can_be_placed_per_cell_and_give_the_same_arrows():
    layout = np.arange(40, dtype=float).reshape(20, 2)
    result = knocked_out(np.array([3, 7, 11]))
    place = lambda rows: 2 * rows[:, :2]  # noqa: E731 - a linear placement
    kept = {int(c): 2 * row[:2] for c, row in zip(result.cells, result.original)}  # placed before, by cell
    asked = []
    arrows = umap_arrows(result, layout, place, place_original=lambda cells, rows: asked.append(list(cells))
                         or np.array([kept[c] for c in cells]))
    assert asked == [[3, 7, 11]]
    np.testing.assert_allclose(arrows.end, umap_arrows(result, layout, place).end, rtol=1e-6)


def test_arrows_sample_at_most_max_arrows_cells_the_same_way_every_time():
    result = knocked_out(np.arange(0, 1000, 2))
    layout = np.zeros((1000, 2))
    first = umap_arrows(result, layout, place=lambda rows: rows[:, :2], max_arrows=50)
    again = umap_arrows(result, layout, place=lambda rows: rows[:, :2], max_arrows=50)
    assert len(first.cells) == 50 and np.all(np.diff(first.cells) > 0) and np.isin(first.cells, result.cells).all()
    np.testing.assert_array_equal(first.cells, again.cells)
    assert first.n_moved == 500


def test_group_shifts_are_the_mean_shift_of_each_groups_knocked_out_cells_largest_first():
    result = knocked_out(np.array([0, 1, 2, 3]))
    groups = pd.Series(pd.Categorical(["a", "b", "a", "b", "c"]))
    table = group_shifts(result, groups)
    shift = 1 - result.cosine
    assert set(table.index) == {"a", "b"} and list(table["count"]) == [2, 2]
    assert table.loc["a", "mean"] == pytest.approx(shift[[0, 2]].mean())
    assert table.loc["b", "sem"] == pytest.approx(pd.Series(shift[[1, 3]]).sem())
    assert table["mean"].is_monotonic_decreasing


def test_default_gene_is_the_highly_variable_gene_detected_in_the_most_cells():
    adata = make_counts(n_cells=50, n_genes=30)
    counts = adata.X.toarray()
    counts[:, 5] = 1  # detected everywhere, but not highly variable
    counts[:40, 9], counts[40:, 9] = 1, 0
    adata.X = counts
    assert default_gene(adata) == "GENE5"  # no highly_variable column: every gene counts
    adata.var["highly_variable"] = False
    adata.var.loc[["GENE9", "GENE10"], "highly_variable"] = True
    counts[:, 10] = 0
    counts[:3, 10] = 1
    adata.X = counts
    assert default_gene(adata) == "GENE9"
