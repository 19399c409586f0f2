"""A Dask cluster started the way README and Dask's docs describe: `dask scheduler` and `dask worker` with TLS (a
certificate from `python -m sccore dask-certificates`) from the installed environment, with no PYTHONPATH and
outside the checkout, runs a job that `--scheduler` submits. The worker imports sccore from the install only
(`pip install -e .`), as a lab's cluster would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad

from sccore.dask_security import security, tls_environment, write_certificates
from tests.conftest import ROOT, make_counts

VENV_BIN = Path(sys.executable).parent  # the tests run in the installed environment, as .ci/run does
TIMEOUT_S = 300


def environment(tmp_path: Path, certificates: Path) -> dict[str, str]:
    """The environment of every process here: no PYTHONPATH, no settings file, a cache folder of the test's own
    (the job records and results), shared by the command line and the worker, and Dask's TLS settings for the
    cluster's certificate (as `python -m sccore dask-certificates` prints them)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(SCCORE_SETTINGS=os.devnull, SCCORE_CACHE_DIR=str(tmp_path / "cache"), **tls_environment(certificates))
    return env


def start(command: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd)


def stop(process: subprocess.Popen) -> None:
    """Stop a process this test started: SIGTERM (a nanny then stops its worker), SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sccore(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sccore", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def scheduler_address(scheduler_file: Path, processes: list[subprocess.Popen], logs: list[Path],
                      certificates: Path) -> str:
    """The scheduler's address, once it has written its file and a worker has joined it."""
    from distributed import Client

    deadline = time.monotonic() + TIMEOUT_S
    while not scheduler_file.is_file() or not scheduler_file.read_text().strip():
        for process, log in zip(processes, logs):
            assert process.poll() is None, f"{log.name}: it exited\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the scheduler wrote no file in time:\n" + logs[0].read_text()[-3000:]
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    with Client(address, timeout="30s", security=security(certificates)) as client:
        client.wait_for_workers(1, timeout=TIMEOUT_S)
    return address


def test_a_dask_command_line_cluster_runs_a_umap_job_from_the_installed_package(tmp_path):
    assert not tmp_path.resolve().is_relative_to(ROOT), "the processes must run outside the checkout"
    dask = VENV_BIN / "dask"
    assert dask.is_file(), f"no {dask}: install the project's requirements in the environment that runs the tests"
    certificates = write_certificates(tmp_path / "certificates")
    env = environment(tmp_path, certificates)
    tls = ["--tls-ca-file", str(certificates / "ca.pem"), "--tls-cert", str(certificates / "cert.pem"),
           "--tls-key", str(certificates / "key.pem")]
    make_counts().write_h5ad(tmp_path / "counts.h5ad")
    embedded = sccore("embed", "counts.h5ad", "-o", "pca.h5ad", "--method", "pca", "--min-genes", "0",
                      env=env, cwd=tmp_path)
    assert embedded.returncode == 0, embedded.stderr[-3000:]

    scheduler_file = tmp_path / "scheduler.json"
    logs = [tmp_path / "scheduler.log", tmp_path / "worker.log"]
    processes = []
    try:
        processes.append(start([str(dask), "scheduler", "--protocol", "tls", *tls, "--host", "127.0.0.1", "--port", "0",
                                "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                               logs[0], env, tmp_path))
        processes.append(start([str(dask), "worker", *tls, "--scheduler-file", str(scheduler_file),
                                "--host", "127.0.0.1",
                                "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                "--local-directory", str(tmp_path / "worker")], logs[1], env, tmp_path))
        address = scheduler_address(scheduler_file, processes, logs, certificates)
        assert address.startswith("tls://"), address

        layout = sccore("umap", "pca.h5ad", "-o", "umap.h5ad", "--use-rep", "X_pca", "--scheduler", address,
                        env=env, cwd=tmp_path)
        assert layout.returncode == 0, layout.stderr[-3000:] + "\nworker:\n" + logs[1].read_text()[-3000:]
        assert "X_umap" in ad.read_h5ad(tmp_path / "umap.h5ad").obsm
        listed = sccore("jobs", env=env, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr[-3000:]
        assert [line.split()[1:3] for line in listed.stdout.splitlines()] == [["umap", "finished"]], listed.stdout
    finally:
        for process in reversed(processes):
            stop(process)
