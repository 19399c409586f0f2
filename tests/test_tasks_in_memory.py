"""The tasks' in-memory cores, which the pages call on the dataset they hold: the same numbers as the task's ``run``
on the file, the goal in an embedding the caller holds, a screen stopped in memory kept partial, and knockouts in the
cells the caller chose."""

import numpy as np
import pandas as pd
import pytest

from sccore.errors import Cancelled
from sccore.perturb import choose_cells, goal_for
from sccore.tasks import knockout, metrics, screen
from sccore.tasks.knockout import KnockoutParams
from sccore.tasks.metrics import MetricsTaskParams
from sccore.tasks.perturbation import open_for_perturbation
from sccore.tasks.screen import ScreenParams
from tests.conftest import make_counts


def screen_params(tmp_path, **changes) -> ScreenParams:
    make_counts(n_cells=120).write_h5ad(tmp_path / "counts.h5ad")
    return ScreenParams(input=str(tmp_path / "counts.h5ad"), output=str(tmp_path / "screen.csv"), min_genes=0,
                        top=12, max_cells=20, where={"cell_type": "type_0"}, goal={"cell_type": "type_1"},
                        goal_start="population", **changes)


def test_screen_compute_on_the_processed_cells_is_what_run_writes(tmp_path):
    params = screen_params(tmp_path)
    written = screen.run(params)
    opened = open_for_perturbation(params)
    population, cells = screen.screened_cells(opened.adata, params)
    assert len(population) > 20 and len(cells) == 20 and set(cells) <= set(population)
    held = screen.compute(opened.adata, params, library_size_key=opened.preprocess.library_size_key,
                          embedding=opened.adata.obsm["X_pca"])  # the goal in the embedding the page holds
    pd.testing.assert_frame_equal(held, written, check_dtype=False, rtol=1e-6)
    assert written["goal_alignment"].notna().all()


def test_the_goal_in_a_held_embedding_is_the_goal_computed_for_the_cells_it_needs(tmp_path):
    opened = open_for_perturbation(screen_params(tmp_path))
    adata = opened.adata
    start = choose_cells(adata, {"cell_type": "type_0"})
    computed = goal_for(adata, "pca", None, start, {"cell_type": "type_1"})
    held = goal_for(adata, "pca", None, start, {"cell_type": "type_1"}, embedding=adata.obsm["X_pca"])
    np.testing.assert_allclose(held.direction, computed.direction, rtol=1e-6)
    np.testing.assert_allclose(held.goal_mean, computed.goal_mean, rtol=1e-6)


def test_a_screen_stopped_in_memory_keeps_the_cells_screened_so_far(tmp_path):
    params = screen_params(tmp_path)
    opened = open_for_perturbation(params)
    reports = []
    table = screen.compute(opened.adata, params, progress=lambda fraction, message: reports.append(fraction),
                           should_stop=lambda: len(reports) >= 5)
    assert table.attrs["n_cells_screened"] == 5 and len(table) and (table["n_cells"] <= 5).all()


def test_metrics_compute_on_the_cells_in_memory_is_what_run_writes(tmp_path):
    from sccore.embed import pca
    from sccore.pp import default_params, preprocess

    raw = make_counts(n_cells=150)
    adata = preprocess(raw, default_params(raw, min_genes=0))
    pca(adata)
    adata.write_h5ad(tmp_path / "embedded.h5ad")
    params = MetricsTaskParams(input=str(tmp_path / "embedded.h5ad"), output=str(tmp_path / "metrics.csv"),
                               label_key="cell_type", batch_key="batch", max_silhouette_cells=100)
    written = metrics.run(params)
    in_memory = metrics.compute(adata, params)
    pd.testing.assert_frame_equal(in_memory, written, rtol=1e-6)
    assert list(in_memory.index) == ["X_pca"] and 0 <= in_memory.loc["X_pca", "total"] <= 1


def test_knockout_compute_on_the_processed_cells_is_what_run_writes(tmp_path):
    make_counts(n_cells=120).write_h5ad(tmp_path / "counts.h5ad")
    params = KnockoutParams(input=str(tmp_path / "counts.h5ad"), output=str(tmp_path / "knockout.csv"), model="pca",
                            min_genes=0, genes=("GENE0", "GENE91"), where={"cell_type": "type_0"})
    written = knockout.run(params)
    opened = open_for_perturbation(params)
    held = pd.DataFrame([result.summary() for result in knockout.compute(opened.adata, params)])
    pd.testing.assert_frame_equal(held, written, check_dtype=False, rtol=1e-6)
    assert list(written["gene"]) == ["GENE0", "GENE91"]
    chosen = choose_cells(opened.adata, {"cell_type": "type_0"})[:7]  # cells the caller chose (the page's sample)
    (result,) = knockout.compute(opened.adata, KnockoutParams(input=params.input, model="linear", genes=("GENE0",)),
                                 cells=chosen)
    assert result.method == "linear" and set(result.cells) | set(result.not_expressed) == set(chosen)
    with pytest.raises(Cancelled):
        list(knockout.compute(opened.adata, params, should_stop=lambda: True))
