"""The task layer: parameters that check themselves and round-trip through JSON, CLI defaults read from them,
cancellation that leaves no result, and one run behind the CLI and the jobs."""

import json

import pandas as pd
import pytest

from sccore import InputError, jobs
from sccore.cli import build_parser
from sccore.errors import Cancelled
from sccore.tasks import screen, umap
from sccore.tasks.metrics import MetricsTaskParams
from sccore.tasks.screen import ScreenParams
from tests.conftest import make_counts


def test_parameters_round_trip_through_plain_json():
    params = ScreenParams(input="in.h5ad", where={"cell_type": "B"}, top=20, min_genes=0)
    data = json.loads(json.dumps(params.asdict()))
    assert ScreenParams.from_dict(data) == params
    metrics = MetricsTaskParams.from_dict({"input": "x", "label_key": "l", "batch_key": "b",
                                           "embeddings": "X_pca, X_encoder", "max_silhouette_cells": 500})
    assert metrics.embeddings == ("X_pca", "X_encoder") and metrics.asdict()["embeddings"] == ["X_pca", "X_encoder"]


def test_bad_parameters_are_refused_with_the_fix():
    with pytest.raises(InputError, match="takes no parameter colour; it takes min_genes, .*goal_start"):
        ScreenParams.from_dict({"input": "x", "colour": "red"})
    with pytest.raises(InputError, match="needs input"):
        ScreenParams.from_dict({"top": 3})
    with pytest.raises(InputError, match="top takes int, not 'many'"):
        ScreenParams.from_dict({"input": "x", "top": "many"})
    with pytest.raises(InputError, match="goal_start is cells .* or population"):
        ScreenParams(input="x", goal_start="everyone")
    with pytest.raises(InputError, match="max_pct_mito is a percentage"):
        ScreenParams(input="x", max_pct_mito=150)
    with pytest.raises(InputError, match="needs an output path"):
        screen.run(ScreenParams(input="x"))
    assert ScreenParams.from_dict({"input": "x", "max_pct_mito": 5}).max_pct_mito == 5.0


def test_the_cli_flags_default_to_the_dataclasses():
    parser = build_parser()
    args = parser.parse_args(["screen", "in.h5ad", "--model", "pca", "-o", "out.csv"])
    for name in ("top", "max_cells", "seed", "estimate", "exact_top", "goal_start", "n_comps", "min_genes",
                 "max_pct_mito", "min_cells", "n_top_genes", "device"):
        assert getattr(args, name) == ScreenParams.default(name), name
    args = parser.parse_args(["umap", "in.h5ad", "-o", "out.h5ad"])
    for name in ("use_rep", "key_added", "n_neighbors", "min_dist", "index", "seed", "neighbors_key"):
        assert getattr(args, name) == umap.UMAPTaskParams.default(name), name


def test_a_job_kind_runs_the_tasks_run_and_its_record_holds_the_serialised_parameters(tmp_path):
    make_counts(n_cells=60).write_h5ad(tmp_path / "counts.h5ad")
    assert jobs.JOB_KINDS["screen"].run is screen.run and jobs.JOB_KINDS["umap"].run is umap.run
    checked = jobs.checked_params("screen", {"input": str(tmp_path / "counts.h5ad"), "top": 5, "max_pct_mito": 5})
    params = ScreenParams(input=str((tmp_path / "counts.h5ad").resolve()), top=5, max_pct_mito=5.0)
    assert checked == params.asdict() == jobs.checked_params("screen", params)
    assert jobs.job_key("screen", checked) != jobs.job_key("screen", {**checked, "top": 6})


def test_a_stopped_task_raises_cancelled_and_writes_nothing(tmp_path):
    make_counts(n_cells=120).write_h5ad(tmp_path / "counts.h5ad")
    params = ScreenParams(input=str(tmp_path / "counts.h5ad"), output=str(tmp_path / "screen.csv"), min_genes=0,
                          top=30)
    reports = []

    def stop_once_screening() -> bool:
        return any(message.startswith("screened") for _, message in reports)

    with pytest.raises(Cancelled):
        screen.run(params, lambda fraction, message: reports.append((fraction, message)), stop_once_screening)
    assert not (tmp_path / "screen.csv").exists() and not list(tmp_path.glob(".*tmp*"))
    table = screen.run(params)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "screen.csv"), table.reset_index(drop=True),
                                  check_dtype=False)
