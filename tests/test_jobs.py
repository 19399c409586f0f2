"""Background jobs on a local Dask cluster of one worker process: results, the cache, cancelling, a killed
worker, heartbeats, users kept apart, `python -m sccore submit --wait`, and the subcommands with --scheduler."""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import anndata as ad
import dask
import numpy as np
import pandas as pd
import pytest

from sccore import cli, jobs
from sccore.embed import pca
from sccore.errors import InputError
from sccore.perturb import screen
from sccore.pp import default_params, preprocess
from tests.conftest import ROOT, certificate_settings, make_counts

SMALL = {"min_genes": 0, "top": 40}


@pytest.fixture(scope="module")
def client():
    """A local cluster of one worker process; a task whose worker dies fails at once (no retry), so the test
    sees the failure the page would show. Dask's settings name its certificate, so `--scheduler` reaches it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "0")  # read by the scheduler's subprocess
        client = jobs.connect()
    with certificate_settings(client):
        yield client
    jobs.close(client)


def test_only_a_process_with_the_cluster_s_certificate_can_connect(client, tmp_path):
    """Another account (here: a process without the certificate, or with a certificate of its own) cannot submit
    work to the local cluster's scheduler, over TLS or plain TCP; the certificate's folder is private."""
    address = client.scheduler.address
    assert address.startswith("tls://127.0.0.1:")
    folder = jobs.certificate_folder(client)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all((folder / name).stat().st_mode & 0o777 == 0o600 for name in ("ca.pem", "cert.pem", "key.pem"))
    attempt = ("import sys\nfrom distributed import Client\nfrom distributed.security import Security\n"
               "address, own = sys.argv[1], sys.argv[2] == 'own'\n"
               "try:\n    Client(address, timeout='5s', security=Security.temporary() if own else None)\n"
               "except Exception as error:\n    print('refused', type(error).__name__)\nelse:\n    print('connected')")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}
    for target, certificate in ((address, "none"), (address, "own"), (address.replace("tls://", "tcp://"), "none")):
        run = subprocess.run([sys.executable, "-c", attempt, target, certificate], capture_output=True, text=True,
                             env=env, timeout=120)
        assert run.stdout.startswith("refused"), (target, certificate, run.stdout, run.stderr[-2000:])
    assert client.submit(sum, [1, 2]).result() == 3  # the app's own client still works
    with pytest.raises(InputError, match="not reached over TLS"):
        jobs.connect(address.replace("tls://", "tcp://"))
    with dask.config.set({"distributed.comm.tls.ca-file": None}), pytest.raises(InputError, match="No certificate"):
        jobs.connect(address)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """Counts whose full screen takes several seconds: long enough to cancel or kill it midway."""
    path = tmp_path_factory.mktemp("big") / "big.h5ad"
    make_counts(n_cells=3000, n_genes=900, seed=1).write_h5ad(path)
    return path


def wait_until_screening(store, user, job_id, timeout_s=60):
    """Wait until the job reports progress from inside the screen."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        record = store.read(user, job_id)
        if record.message.startswith("screened") or record.done:
            return record
        time.sleep(0.05)
    raise AssertionError("the job never started screening")


def test_screen_job_writes_the_direct_result_then_finds_it_in_the_cache(client, tmp_path):
    raw = make_counts()
    raw.write_h5ad(tmp_path / "counts.h5ad")
    store = jobs.JobStore(tmp_path / "cache")
    params = {"input": str(tmp_path / "counts.h5ad"), **SMALL}
    job_id = jobs.submit(client, store, "alice", "screen", params)
    record = jobs.wait(store, "alice", job_id, timeout_s=60)
    assert record.status == "finished", record.error
    assert not record.cached and record.duration > 0 and record.progress == 1.0

    adata = preprocess(raw, default_params(raw, min_genes=0))
    pca(adata)
    direct = screen(adata, np.arange(adata.n_obs), "pca", top=40)
    direct.to_csv(tmp_path / "direct.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv(record.result), pd.read_csv(tmp_path / "direct.csv"))

    written = os.stat(record.result).st_mtime_ns
    again = jobs.wait(store, "alice", jobs.submit(client, store, "alice", "screen", params), timeout_s=60)
    assert again.status == "finished" and again.cached and again.result == record.result
    assert os.stat(record.result).st_mtime_ns == written
    assert client.submit(os.nice, 0).result() >= jobs.JOB_NICENESS  # the worker ran them below the app's priority


def test_cancelling_a_running_screen_leaves_no_result(client, big_file, tmp_path):
    store = jobs.JobStore(tmp_path / "cache")
    params = {"input": str(big_file), "min_genes": 0}
    job_id = jobs.submit(client, store, "alice", "screen", params)
    assert wait_until_screening(store, "alice", job_id).status == "running"
    jobs.cancel(store, "alice", job_id)
    record = jobs.wait(store, "alice", job_id, timeout_s=30)
    assert record.status == "cancelled" and not record.result
    assert not jobs.result_path("screen", jobs.checked_params("screen", params), store.cache_dir).exists()


def test_a_killed_worker_leaves_no_half_result_and_a_resubmit_completes(client, big_file, tmp_path):
    store = jobs.JobStore(tmp_path / "cache")
    params = {"input": str(big_file), "min_genes": 0, "top": 300}
    job_id = jobs.submit(client, store, "bob", "screen", params)
    wait_until_screening(store, "bob", job_id)
    for pid in client.run(os.getpid).values():
        os.kill(pid, signal.SIGKILL)
    record = jobs.wait(store, "bob", job_id, timeout_s=30)
    assert record.status == "failed" and "Submit it again" in record.error
    target = jobs.result_path("screen", jobs.checked_params("screen", params), store.cache_dir)
    assert not target.exists()

    client.wait_for_workers(1, timeout=60)  # the nanny starts a fresh worker
    again = jobs.wait(store, "bob", jobs.submit(client, store, "bob", "screen", params), timeout_s=90)
    assert again.status == "finished" and not again.cached, again.error
    assert len(pd.read_csv(again.result)) > 0 and [path.name for path in target.parent.iterdir()] == ["screen.csv"]


def test_each_user_sees_only_their_jobs(tmp_path):
    store = jobs.JobStore(tmp_path)
    for user, job_id in [("alice", "a1"), ("alice", "a2"), ("bob/../alice", "b1")]:
        store.write(jobs.JobRecord(id=job_id, user=user, kind="umap", params={}))
    assert [record.id for record in jobs.list_jobs(store, "alice")] == ["a2", "a1"]
    assert [record.id for record in jobs.list_jobs(store, "bob/../alice")] == ["b1"]
    assert jobs.list_jobs(store, "carol") == []
    with pytest.raises(InputError, match="no job"):
        store.read("bob/../alice", "a1")


def test_bad_job_requests_are_refused_with_the_fix(tmp_path):
    (tmp_path / "x.h5ad").write_bytes(b"")
    with pytest.raises(InputError, match="Unknown job kind"):
        jobs.checked_params("clustering", {"input": str(tmp_path / "x.h5ad")})
    with pytest.raises(InputError, match="needs label_key, batch_key"):
        jobs.checked_params("metrics", {"input": str(tmp_path / "x.h5ad")})
    with pytest.raises(InputError, match="takes no parameter colour"):
        jobs.checked_params("umap", {"input": str(tmp_path / "x.h5ad"), "colour": "red"})
    with pytest.raises(InputError, match="existing .h5ad"):
        jobs.checked_params("umap", {"input": str(tmp_path / "missing.h5ad")})


def test_cli_submit_waits_and_jobs_lists_the_result(tmp_path):
    make_counts().write_h5ad(tmp_path / "counts.h5ad")
    env = {**os.environ, "SCCORE_CACHE_DIR": str(tmp_path / "cache"), "SCCORE_SETTINGS": os.devnull}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "sccore", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    submitted = run("submit", "screen", str(tmp_path / "counts.h5ad"), "--param", "min_genes=0", "--param", "top=20",
                    "--wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id, result = submitted.stdout.split()[:2]
    assert result.endswith("screen.csv") and len(pd.read_csv(result)) == 20
    listed = run("jobs")
    assert listed.returncode == 0 and job_id in listed.stdout and "finished" in listed.stdout
    assert run("jobs", "--user", "someone-else").stdout == ""


def test_train_embed_umap_and_metrics_jobs_chain(client, tmp_path):
    make_counts(n_cells=200, n_genes=120).write_h5ad(tmp_path / "counts.h5ad")
    store = jobs.JobStore(tmp_path / "cache")

    def run(kind, **params):
        record = jobs.wait(store, "alice", jobs.submit(client, store, "alice", kind, params), timeout_s=120)
        assert record.status == "finished", record.error
        return record

    counts = str(tmp_path / "counts.h5ad")
    model = run("train", input=counts, epochs=1, batch_size=32, device="cpu").result
    assert (Path(model) / "model.safetensors").is_file()
    assert run("train", input=counts, epochs=1, batch_size=32, device="cpu").cached
    embedded = run("embed", input=counts, model=model, device="cpu").result
    laid_out = run("umap", input=embedded, use_rep="X_encoder").result
    assert ad.read_h5ad(laid_out).obsm["X_umap"].shape == (200, 2)
    table = pd.read_csv(run("metrics", input=laid_out, label_key="cell_type", batch_key="batch",
                            embeddings=["X_encoder"], unintegrated_key="X_encoder").result)
    assert list(table["embedding"]) == ["X_encoder"] and 0 <= table["total"].iloc[0] <= 1


def test_a_markers_job_writes_what_the_markers_task_writes(client, tmp_path):
    from sccore.tasks.markers import MarkersParams, run

    make_counts(n_cells=150, n_genes=100).write_h5ad(tmp_path / "counts.h5ad")
    store = jobs.JobStore(tmp_path / "cache")
    params = MarkersParams(input=str(tmp_path / "counts.h5ad"), groupby="cell_type", method="t-test")
    record = jobs.wait(store, "alice", jobs.submit(client, store, "alice", "markers", params), timeout_s=60)
    assert record.status == "finished", record.error
    assert Path(record.result).name == "markers.csv"
    direct = run(replace(params, output=str(tmp_path / "direct.csv")))
    pd.testing.assert_frame_equal(pd.read_csv(record.result), pd.read_csv(tmp_path / "direct.csv"))
    assert len(direct) == 3 * 100


def test_a_running_job_whose_heartbeat_stopped_is_marked_failed(tmp_path, monkeypatch):
    store = jobs.JobStore(tmp_path)
    now = time.time()
    for job_id, status, heartbeat in [("old", "running", now - 120), ("fresh", "running", now - 5),
                                      ("waiting", "queued", None)]:
        store.write(jobs.JobRecord(id=job_id, user="alice", kind="screen", params={}, status=status,
                                   submitted=now - 600, started=now - 600 if heartbeat else None, heartbeat=heartbeat))
    listed = {record.id: record for record in jobs.list_jobs(store, "alice")}
    assert listed["old"].status == "failed" and listed["old"].finished is not None
    assert "worker running this job stopped (no heartbeat for 120 s)" in listed["old"].error
    assert "Submit it again" in listed["old"].error and store.read("alice", "old").status == "failed"
    assert listed["fresh"].status == "running" and listed["waiting"].status == "queued"  # a queue may be long
    monkeypatch.setattr(jobs, "STALE_AFTER_S", 1.0)
    assert jobs.status(store, "alice", "fresh").status == "failed"


def test_the_same_job_started_twice_at_once_runs_once_and_both_get_its_result(tmp_path):
    """Two identical jobs (two users' clicks, or one impatient user's) on two workers: the second waits for the first
    and finds its result, instead of computing it again or deleting the first one's temporary files."""
    make_counts().write_h5ad(tmp_path / "counts.h5ad")
    store, cache = jobs.JobStore(tmp_path / "cache"), str(tmp_path / "cache")
    params = jobs.checked_params("screen", {"input": str(tmp_path / "counts.h5ad"), "model": "pca", **SMALL})
    for job_id in ("first", "second"):
        store.write(jobs.JobRecord(id=job_id, user="local", kind="screen", params=params))
    workers = [threading.Thread(target=jobs.run_job, args=(cache, cache, "local", job_id)) for job_id in ("first",
                                                                                                          "second")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    records = [store.read("local", job_id) for job_id in ("first", "second")]
    assert [record.status for record in records] == ["finished", "finished"], [record.error for record in records]
    assert sorted(record.cached for record in records) == [False, True]  # computed once
    assert records[0].result == records[1].result and Path(records[0].result).is_file()


def test_a_job_that_finished_meanwhile_is_not_marked_failed_by_a_stale_check(tmp_path, monkeypatch):
    store = jobs.JobStore(tmp_path)
    long_ago = time.time() - 10 * jobs.STALE_AFTER_S
    store.write(jobs.JobRecord(id="j", user="u", kind="umap", params={}, status="running", started=long_ago,
                               heartbeat=long_ago))
    stale = store.read("u", "j")  # what the page read just before the job's own last update
    store.update("u", "j", status="finished", finished=time.time(), result="done.h5ad")
    reads = iter([stale])
    real_read = store.read
    monkeypatch.setattr(store, "read", lambda user, job_id: next(reads, None) or real_read(user, job_id))
    assert jobs.status(store, "u", "j").status == "finished"
    assert real_read("u", "j").status == "finished" and real_read("u", "j").result == "done.h5ad"


def test_a_job_runs_at_a_lower_cpu_priority_than_the_app(tmp_path):
    """On a machine shared with the app, a long job must not slow the pages: its process is niced, once."""
    script = "import os\nfrom sccore.jobs import lower_priority\nlower_priority()\nlower_priority()\nprint(os.nice(0))"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert int(run.stdout.strip()) == max(os.nice(0), jobs.JOB_NICENESS), run.stderr[-2000:]


def test_the_heartbeat_thread_beats_while_the_job_runs_and_then_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "HEARTBEAT_INTERVAL_S", 0.05)
    store = jobs.JobStore(tmp_path)
    store.write(jobs.JobRecord(id="j", user="alice", kind="umap", params={}, status="running", heartbeat=0.0))
    with jobs._heartbeat(store, "alice", "j", jobs.threading.Lock()):
        time.sleep(0.5)
        beat = store.read("alice", "j").heartbeat
        assert time.time() - beat < 0.3
    after = store.read("alice", "j").heartbeat
    time.sleep(0.3)
    assert store.read("alice", "j").heartbeat == after


def test_a_real_job_keeps_its_heartbeat_fresh(client, big_file, tmp_path):
    client.run(lambda: setattr(__import__("sccore.jobs").jobs, "HEARTBEAT_INTERVAL_S", 0.2))
    try:
        store = jobs.JobStore(tmp_path / "cache")
        job_id = jobs.submit(client, store, "alice", "screen", {"input": str(big_file), "min_genes": 0})
        first = wait_until_screening(store, "alice", job_id)
        time.sleep(1.0)
        record = jobs.status(store, "alice", job_id)
        assert record.status == "running" and record.heartbeat > first.heartbeat
        assert time.time() - record.heartbeat < 1.0
        jobs.cancel(store, "alice", job_id)
        assert jobs.wait(store, "alice", job_id, timeout_s=30).status == "cancelled"
    finally:
        client.run(lambda: setattr(__import__("sccore.jobs").jobs, "HEARTBEAT_INTERVAL_S", 10.0))


@pytest.fixture
def cli_cache(tmp_path, monkeypatch):
    """The CLI's settings: a cache folder of the test's own, no settings file."""
    monkeypatch.setenv("SCCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCCORE_SETTINGS", os.devnull)


def test_cli_screen_with_a_scheduler_writes_what_the_in_process_screen_writes(client, tmp_path, cli_cache, capsys):
    make_counts().write_h5ad(tmp_path / "counts.h5ad")
    command = ["screen", str(tmp_path / "counts.h5ad"), "--model", "pca", "--min-genes", "0", "--where",
               "cell_type=type_0", "--goal", "cell_type=type_1", "--top", "15", "--max-cells", "40"]
    assert cli.main([*command, "-o", str(tmp_path / "here.csv")]) == 0
    capsys.readouterr()
    assert cli.main([*command, "-o", str(tmp_path / "there.csv"), "--scheduler", client.scheduler.address]) == 0
    printed = capsys.readouterr()
    assert "Submitted screen job" in printed.err and "Screened 15 genes; wrote" in printed.out
    here, there = pd.read_csv(tmp_path / "here.csv"), pd.read_csv(tmp_path / "there.csv")
    assert "goal_alignment" in there.columns
    pd.testing.assert_frame_equal(here, there)
    listed = jobs.list_jobs(jobs.JobStore(tmp_path / "cache"), "local")
    assert [(record.kind, record.status) for record in listed] == [("screen", "finished")]


def test_cli_train_embed_umap_and_metrics_with_a_scheduler(client, tmp_path, cli_cache, capsys):
    make_counts(n_cells=200, n_genes=120).write_h5ad(tmp_path / "counts.h5ad")
    counts, scheduler = str(tmp_path / "counts.h5ad"), ["--scheduler", client.scheduler.address]
    model = str(tmp_path / "model")
    assert cli.main(["train", counts, "--out", model, "--epochs", "1", "--device", "cpu", *scheduler]) == 0
    assert f"Wrote the model to {model} (validation loss" in capsys.readouterr().out
    assert (tmp_path / "model" / "model.safetensors").is_file()

    def both(command: list[str], output: str) -> tuple:
        assert cli.main([*command, "-o", str(tmp_path / f"here-{output}")]) == 0
        assert cli.main([*command, "-o", str(tmp_path / f"there-{output}"), *scheduler]) == 0
        return tmp_path / f"here-{output}", tmp_path / f"there-{output}"

    here, there = both(["embed", counts, "--method", "encoder", "--model", model, "--device", "cpu"], "embedded.h5ad")
    embedded = ad.read_h5ad(there)
    assert embedded.uns["X_encoder"]["genes_matched"] > 0
    np.testing.assert_allclose(embedded.obsm["X_encoder"], ad.read_h5ad(here).obsm["X_encoder"], atol=1e-4)
    capsys.readouterr()
    assert cli.main(["umap", str(there), "--use-rep", "X_encoder", "-o", str(tmp_path / "umap.h5ad"), *scheduler]) == 0
    assert "Wrote obsm['X_umap'] (200 cells)" in capsys.readouterr().out
    assert ad.read_h5ad(tmp_path / "umap.h5ad").obsm["X_umap"].shape == (200, 2)
    here, there = both(["metrics", str(here), "--label-key", "cell_type", "--batch-key", "batch", "--embeddings",
                        "X_encoder", "--unintegrated-key", "X_encoder"], "metrics.csv")
    assert "Wrote 1 row(s) to" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(here), pd.read_csv(there))


def test_cli_refuses_what_a_job_cannot_do_with_the_fix(tmp_path, cli_cache, capsys):
    make_counts(n_cells=50).write_h5ad(tmp_path / "counts.h5ad")
    counts = str(tmp_path / "counts.h5ad")
    assert cli.main(["train", counts, "--out", str(tmp_path / "m"), "--no-resume", "--scheduler", "tcp://x:1"]) == 2
    assert "delete that folder or choose another --out" in capsys.readouterr().err
    assert cli.main(["embed", counts, "-o", str(tmp_path / "e.h5ad"), "--scheduler", "tcp://x:1"]) == 2
    assert "drop --scheduler" in capsys.readouterr().err


def test_an_atlas_job_builds_what_the_atlas_command_builds_and_resubmits_from_the_cache(client, tmp_path, cli_cache,
                                                                                        capsys):
    from sccore.atlas import open_atlas

    make_counts(n_cells=400, n_genes=150).write_h5ad(tmp_path / "counts.h5ad")
    counts = str(tmp_path / "counts.h5ad")
    assert cli.main(["atlas", counts, "-o", str(tmp_path / "here"), "--min-genes", "0", "--chunk-cells", "150"]) == 0
    assert cli.main(["atlas", counts, "-o", str(tmp_path / "there"), "--min-genes", "0", "--chunk-cells", "150",
                     "--scheduler", client.scheduler.address]) == 0
    assert "Submitted atlas job" in capsys.readouterr().err
    here, there = open_atlas(tmp_path / "here"), open_atlas(tmp_path / "there")
    np.testing.assert_allclose(there.adata.obsm["X_pca"], here.adata.obsm["X_pca"], rtol=1e-5, atol=1e-5)
    gene = here.adata.var_names[0]
    np.testing.assert_array_equal(there.expression(gene), here.expression(gene))
    store = jobs.JobStore(tmp_path / "jobs-cache")
    params = {"input": counts, "min_genes": 0, "chunk_cells": 150}
    first = jobs.wait(store, "ana", jobs.submit(client, store, "ana", "atlas", params))
    again = jobs.wait(store, "ana", jobs.submit(client, store, "ana", "atlas", params))
    assert first.status == again.status == "finished" and not first.cached and again.cached
    assert open_atlas(first.result).adata.n_obs == here.adata.n_obs
