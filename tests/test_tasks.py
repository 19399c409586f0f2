"""The task layer: parameters that check themselves and round-trip through JSON, CLI defaults read from them,
cancellation that leaves no result, and one run behind the CLI and the jobs."""

import json

import pandas as pd
import pytest

from sccore import InputError, jobs
from sccore.cli import build_parser
from sccore.errors import Cancelled
from sccore.tasks import cluster, de, finetune, markers, screen, train, umap
from sccore.tasks.metrics import MetricsTaskParams
from sccore.tasks.screen import ScreenParams
from sccore.training import TrainConfig
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
    with pytest.raises(InputError, match="max_pct_mito must lie between 0 and 100 for the screen task, not 150"):
        ScreenParams(input="x", max_pct_mito=150)
    with pytest.raises(InputError, match="needs an output path"):
        screen.run(ScreenParams(input="x"))
    assert ScreenParams.from_dict({"input": "x", "max_pct_mito": 5}).max_pct_mito == 5.0


def task_parameter_classes() -> list[type]:
    """Every task's parameters dataclass (the CLI's, the jobs' and the pages'), and the classes they extend."""
    import importlib
    import pkgutil

    from sccore import tasks
    from sccore.tasks.base import TaskParams

    found = set()
    for module in pkgutil.iter_modules(tasks.__path__):
        for value in vars(importlib.import_module(f"sccore.tasks.{module.name}")).values():
            if isinstance(value, type) and issubclass(value, TaskParams) and value is not TaskParams:
                found.add(value)
    return sorted(found, key=lambda kind: kind.__name__)


@pytest.mark.parametrize("kind", task_parameter_classes(), ids=lambda kind: kind.__name__)
def test_every_numeric_parameter_of_every_task_has_bounds(kind):
    """So that no request (a page, the CLI, a job) can ask for 10^9 epochs or 10^7 neighbours on a shared server."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(kind)
    numeric = [item.name for item in dataclasses.fields(kind)
               if {int, float} & set(typing.get_args(hints[item.name]) or (hints[item.name],))]
    assert sorted(set(numeric) - set(kind.bounds())) == []


def test_out_of_bounds_requests_are_refused_by_the_cli_the_jobs_and_the_dataclasses(tmp_path, capsys):
    make_counts(n_cells=50).write_h5ad(tmp_path / "counts.h5ad")
    counts = str(tmp_path / "counts.h5ad")
    with pytest.raises(InputError, match="epochs must lie between 0.001 and 1000 for the train task, not 1000000000"):
        jobs.checked_params("train", {"input": counts, "epochs": 1e9})
    with pytest.raises(InputError, match="n_neighbors must lie between 2 and 1000 for the umap task, not 10000000"):
        jobs.checked_params("umap", {"input": counts, "n_neighbors": 10_000_000})
    with pytest.raises(InputError, match="top must lie between 1 and 50000"):
        ScreenParams(input=counts, top=10**8)
    from sccore.cli import main

    assert main(["umap", counts, "-o", str(tmp_path / "u.h5ad"), "--n-neighbors", "10000000"]) == 2
    assert "n_neighbors must lie between 2 and 1000" in capsys.readouterr().err


def test_a_user_with_too_many_jobs_under_way_is_refused_until_one_ends(tmp_path):
    make_counts(n_cells=50).write_h5ad(tmp_path / "counts.h5ad")
    store = jobs.JobStore(tmp_path / "cache")
    for number in range(2):
        store.write(jobs.JobRecord(id=f"j{number}", user="alice", kind="umap", params={}, status="running"))
    with pytest.raises(InputError, match="alice already has 2 job.* queued or running, this server's limit per user"):
        jobs.submit(None, store, "alice", "umap", {"input": str(tmp_path / "counts.h5ad")}, max_active=2)
    store.update("alice", "j0", status="finished")
    with pytest.raises(AttributeError):  # past the limit check: it reaches the (absent) cluster
        jobs.submit(None, store, "alice", "umap", {"input": str(tmp_path / "counts.h5ad")}, max_active=2)


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


def test_clusters_markers_and_de_are_job_kinds_on_their_tasks(tmp_path):
    make_counts(n_cells=20).write_h5ad(tmp_path / "counts.h5ad")
    path = str((tmp_path / "counts.h5ad").resolve())
    for kind, task, params in [("cluster", cluster, {"use_rep": "X_pca", "resolution": 2}),
                               ("markers", markers, {"groupby": "cell_type", "method": "t-test"}),
                               ("de", de, {"a": "cell_type=type_0", "b": "cell_type=type_1"})]:
        assert jobs.JOB_KINDS[kind].run is task.run and kind in jobs.KINDS
        checked = jobs.checked_params(kind, {"input": path, **params})
        assert checked == jobs.JOB_KINDS[kind].params(input=path, **params).asdict()
        assert jobs.result_path(kind, checked, tmp_path).name == jobs.JOB_KINDS[kind].result_name
    assert jobs.default_parameters("cluster")["resolution"] == cluster.ClusterParams.default("resolution")
    with pytest.raises(InputError, match="needs a, b"):
        jobs.checked_params("de", {"input": path})


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


def test_training_parameters_have_one_home_for_their_defaults():
    for name in ("epochs", "batch_size", "grad_accum", "learning_rate", "seed", "device"):
        assert train.TrainParams.default(name) == getattr(TrainConfig(), name), name
    args = build_parser().parse_args(["train", "in.h5ad", "--out", "model"])
    params = train.TrainParams(input="in.h5ad", out="model")
    for name in ("epochs", "batch_size", "grad_accum", "learning_rate", "seed", "device", "config", "n_bins"):
        assert getattr(args, name) == getattr(params, name), name
    for name in train.MODEL_SETTINGS + ("batch_key",):  # None: the preset's
        assert getattr(args, name) is None and getattr(params, name) is None, name
    assert params.model_settings == {}
    args = build_parser().parse_args(["train", "in.h5ad", "--out", "m", "--gepc-weight", "1", "--likelihood", "poisson",
                                      "--mlm-weight", "0", "--batch-key", "donor"])
    assert (args.gepc_weight, args.likelihood, args.mlm_weight, args.batch_key) == (1.0, "poisson", 0.0, "donor")
    with pytest.raises(InputError, match="likelihood is one of nb, poisson"):
        train.TrainParams(input="x", likelihood="gaussian")
    with pytest.raises(InputError, match="gep_weight must lie between 0 and 1000 for the train task, not -1"):
        train.TrainParams(input="x", gep_weight=-1.0)


def test_finetune_is_a_subcommand_and_a_job_kind_on_one_task(tmp_path):
    args = build_parser().parse_args(["finetune", "in.h5ad", "--model", "m", "--label-key", "cell_type", "--out", "m2"])
    for name in ("epochs", "batch_size", "learning_rate", "head_learning_rate", "seed", "device"):
        assert getattr(args, name) == finetune.FinetuneParams.default(name), name
    assert jobs.JOB_KINDS["finetune"].run is finetune.run and "finetune" in jobs.KINDS
    make_counts(n_cells=20).write_h5ad(tmp_path / "counts.h5ad")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    checked = jobs.checked_params("finetune", {"input": str(tmp_path / "counts.h5ad"), "model": str(model),
                                               "label_key": "cell_type"})
    assert checked["model"] == str(model.resolve()) and checked["epochs"] == finetune.FinetuneParams.default("epochs")
    key = jobs.job_key("finetune", checked)
    (model / "config.json").write_text('{"changed": true}')  # the model's files are part of the key
    assert jobs.job_key("finetune", checked) != key
