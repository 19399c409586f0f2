"""Encoder embedding over partitions of cells on a local Dask cluster of 2 workers (issue 7): equal to
``embed_cells``, resumed after an interrupt whose workers were killed midway, refused when the inputs change,
and `python -m sccore embed-partitions`."""

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest
import scipy.sparse as sp

from sccore import jobs
from sccore.cli import main
from sccore.encode import embed_cells
from sccore.errors import InputError
from sccore.models.store import load_model, model_fingerprint
from sccore.partitions import embed_partitions
from tests.conftest import ROOT, certificate_settings

MODEL = ROOT / "assets" / "demo_model"
SIZES = "full_total_umis"  # the demo's whole-transcriptome library sizes


class Interrupted(Exception):
    """Raised from a progress callback to stop a run midway."""


@pytest.fixture(scope="module")
def client():
    """A local cluster of 2 worker processes with one thread each."""
    client = jobs.connect(n_workers=2)
    client.wait_for_workers(2, timeout=60)
    with certificate_settings(client):
        yield client
    jobs.close(client)


@pytest.fixture(scope="module")
def demo_file(demo, tmp_path_factory):
    """The demo's first 320 cells (CSR counts, obs['full_total_umis']) as an .h5ad."""
    path = tmp_path_factory.mktemp("partitions") / "demo.h5ad"
    demo[:320].copy().write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def expected(demo):
    """``embed_cells`` on the same cells, all at once."""
    return embed_cells(demo[:320].copy(), load_model(MODEL), library_size_key=SIZES, precision="fp32")


def embed(path, out_dir, client, **options):
    options = {"partition_cells": 96, "library_size_key": SIZES, "precision": "fp32", **options}
    return embed_partitions(path, MODEL, out_dir, client, **options)


def worker_pids(client) -> set[int]:
    return set(client.run(os.getpid).values())


def test_partitions_on_two_workers_equal_embed_cells_and_a_rerun_computes_nothing(client, demo_file, expected,
                                                                                    tmp_path):
    fractions = []
    result = embed(demo_file, tmp_path / "out", client, progress=lambda fraction, message: fractions.append(fraction))
    assert (result.n_cells, result.n_partitions, result.computed) == (320, 4, 4)  # the last partition: 32 cells
    np.testing.assert_allclose(np.load(result.path), expected, rtol=1e-4, atol=1e-5)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["embedding.npy", "manifest.json"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model_fingerprint"] == model_fingerprint(MODEL)
    assert manifest["input_size"] == demo_file.stat().st_size and manifest["n_cells"] == 320
    assert (manifest["partition_cells"], manifest["pooling"], manifest["library_size_key"]) == (96, "cell", SIZES)
    loaded = client.run(lambda: len(__import__("sccore.partitions", fromlist=["_MODELS"])._MODELS))
    assert list(loaded.values()) == [1, 1]  # both workers embedded, each loading the model once

    written = os.stat(result.path).st_mtime_ns
    again = embed(demo_file, tmp_path / "out", client)
    assert again.computed == 0 and os.stat(again.path).st_mtime_ns == written


def test_an_interrupted_run_resumes_with_only_the_missing_partitions(client, demo_file, expected, tmp_path):
    out = tmp_path / "out"
    killed = set()

    def crash_after_two(fraction, message):
        if "(2 of 10 partitions)" in message:  # kill every worker midway, as a crash would, and stop
            killed.update(worker_pids(client))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
            raise Interrupted

    with pytest.raises(Interrupted):
        embed(demo_file, out, client, partition_cells=32, progress=crash_after_two)
    parts = {path.name: path.stat().st_mtime_ns for path in out.glob("part-*.npy")}
    assert 2 <= len(parts) < 10 and not (out / "embedding.npy").exists()
    for name in parts:  # every file named as a partition is complete and right (killed writes stay temporary)
        start, stop = map(int, name.removesuffix(".npy").split("-")[1:])
        np.testing.assert_allclose(np.load(out / name), expected[start:stop], rtol=1e-4, atol=1e-5)

    deadline = time.monotonic() + 60  # the nannies start fresh workers
    while time.monotonic() < deadline:
        try:
            if len(pids := worker_pids(client)) == 2 and not pids & killed:
                break
        except OSError:
            pass
        time.sleep(0.2)
    seen = {}
    result = embed(demo_file, out, client, partition_cells=32, progress=lambda fraction, message: seen.update(
        {path.name: path.stat().st_mtime_ns for path in out.glob("part-*.npy")}))
    assert result.computed == 10 - len(parts) and len(seen) == 10
    assert {name: seen[name] for name in parts} == parts  # the finished partitions were not written again
    np.testing.assert_allclose(np.load(result.path), expected, rtol=1e-4, atol=1e-5)
    assert sorted(path.name for path in out.iterdir()) == ["embedding.npy", "manifest.json"]  # no temporaries left


def test_a_rerun_with_other_inputs_is_refused_until_overwrite(client, demo_file, expected, tmp_path):
    copy = tmp_path / "copy.h5ad"
    shutil.copy(demo_file, copy)
    out = tmp_path / "out"
    embed(copy, out, client)
    with pytest.raises(InputError, match=r"pooling 'cell' then, 'all-layers' now.*new output folder.*overwrite=True"):
        embed(copy, out, client, pooling="all-layers")
    with pytest.raises(InputError, match="partition_cells 96 then, 200 now"):
        embed(copy, out, client, partition_cells=200)
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))
    with pytest.raises(InputError, match="input_mtime_ns"):
        embed(copy, out, client)
    result = embed(copy, out, client, partition_cells=200, overwrite=True)
    assert result.computed == 2
    np.testing.assert_allclose(np.load(result.path), expected, rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_refused_with_the_fix(client, demo, tmp_path):
    with pytest.raises(InputError, match="no column 'total_umis'"):
        embed_partitions(_write(demo, tmp_path / "a.h5ad"), MODEL, tmp_path / "a", client,
                         library_size_key="total_umis")
    by_genes = demo.copy()
    by_genes.X = sp.csc_matrix(by_genes.X)
    with pytest.raises(InputError, match="csc_matrix.*CSR"):
        embed_partitions(_write(by_genes, tmp_path / "b.h5ad"), MODEL, tmp_path / "b", client)
    lognormal = demo.copy()
    lognormal.X = lognormal.X.log1p()
    with pytest.raises(InputError, match="log-normalised values, not raw counts"):
        embed_partitions(_write(lognormal, tmp_path / "c.h5ad"), MODEL, tmp_path / "c", client, partition_cells=350)
    assert not any((tmp_path / "c").glob("part-*.npy"))


def _write(adata, path):
    adata.write_h5ad(path)
    return path


def test_cli_embeds_resumes_and_refuses_a_mismatch(client, demo_file, expected, tmp_path, capsys):
    arguments = ["embed-partitions", str(demo_file), "--model", str(MODEL), "-o", str(tmp_path / "out"),
                 "--partition-cells", "160", "--library-size-key", SIZES, "--scheduler", client.scheduler.address]
    assert main(arguments) == 0
    assert "320 cells; 2 of 2 partitions embedded now" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "out" / "embedding.npy"), expected, atol=0.02)  # bf16 where fast
    assert main(arguments) == 0 and "0 of 2 partitions embedded now" in capsys.readouterr().out
    assert main([*arguments, "--pooling", "all-layers"]) == 2
    assert "--overwrite" in capsys.readouterr().err
