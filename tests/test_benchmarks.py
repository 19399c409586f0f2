"""The benchmark scripts run (small sizes, short training); their full figures are in benchmarks/RESULTS.md."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED_DATA

CHROMIUM = "/usr/bin/chromium"


def run_quick(script: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"benchmarks/{script}", "--quick", *options], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def test_render_and_faiss_benchmark_runs_quick():
    result = run_quick("bench_render_faiss.py")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "recall@15" in result.stdout and "s/frame" in result.stdout


def test_knockout_benchmark_runs_quick(shared_data):
    result = run_quick("bench_knockout.py")
    assert result.returncode == 0, result.stderr[-2000:]
    for method in ("encoder", "pca", "linear"):
        assert f"| {method} |" in result.stdout
    assert "ISG15" in result.stdout and "deletions_per_second" in result.stdout


def test_first_order_benchmark_runs_quick(shared_data):
    result = run_quick("bench_first_order.py")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| first-order |" in result.stdout and "Spearman vs exact" in result.stdout and "speed-up" in result.stdout


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data/kang_se.h5ad")
def test_encoder_speed_benchmark_runs_quick():
    result = run_quick("bench_encoder_speed.py")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "speed-up" in result.stdout


def test_partitioned_embed_benchmark_runs_quick(shared_data):
    result = run_quick("bench_partitioned_embed.py")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| 1 | 600 | 6 |" in result.stdout and "| 2 | 600 | 6 |" in result.stdout
    assert "2 workers / 1 worker" in result.stdout and "A million cells on 2 local workers" in result.stdout


def test_encoder_quality_benchmark_runs_quick(shared_data):
    result = run_quick("bench_encoder_quality.py")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kNN" in result.stdout and "PCA" in result.stdout


def test_transfer_benchmark_runs_quick(shared_data):
    result = run_quick("bench_transfer.py")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| PCA (reference loadings) |" in result.stdout and "| Encoder (reference's model) |" in result.stdout
    assert "shares no genes" in result.stdout and "no column 'celltype'" in result.stdout


def test_metrics_benchmark_runs_quick():
    result = run_quick("bench_metrics.py")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| X_integrated |" in result.stdout and "kBET per label" in result.stdout


@pytest.mark.browser
def test_concurrent_users_benchmark_runs_quick():
    """Two browser users run the demo flow beside a screen job with no error (issue 6; the full run: 10 users), then
    the same on the floor app (the flow with no work behind it, issue 17), reported beside."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: the concurrent-users benchmark drives Debian's Chromium")
    pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    result = run_quick("bench_concurrent_users.py", "--floor")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| search a cell's neighbours |" in result.stdout, result.stdout[-3000:]
    assert "- errors: **0**" in result.stdout, result.stdout[-3000:]
    assert "| server |" in result.stdout and "| chromium: renderers (pages) |" in result.stdout  # CPU by process group
    floor = result.stdout[result.stdout.index("The same flow on the floor app"):result.stdout.index("floor's CPU")]
    assert "errors 0," in floor and "| floor: p95 / 1 user |" in floor, floor
    assert "| search a cell's neighbours |" in floor and "–" not in floor, floor  # every step done on both apps


def test_atlas_benchmark_runs_quick(shared_data, tmp_path):
    result = subprocess.run([sys.executable, "benchmarks/bench_atlas.py", "--quick", "--data-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "load to first frame" in result.stdout and "recall@15" in result.stdout
    assert "time ratio" in result.stdout and "| 5,000 |" in result.stdout


def test_markers_benchmark_runs_quick(shared_data, tmp_path):
    """Beside scanpy on 2,000 cells (the atlas part's functions are unit-tested in test_atlas.py)."""
    result = subprocess.run([sys.executable, "benchmarks/bench_markers.py", "--quick", "--atlas-cells",
                             "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| 2,000 | markers | wilcoxon |" in result.stdout and "| 2,000 | de | t-test |" in result.stdout
    assert "1.00 / 1.00" in result.stdout


def test_knn_index_benchmark_runs_its_leiden_check(tmp_path):
    """The Leiden check of bench_knn_index.py on 3,000 cells (exact search below the threshold, so no swap)."""
    import anndata as ad
    import numpy as np

    pca = tmp_path / "pca.h5ad"
    ad.AnnData(obsm={"X_pca": np.random.default_rng(0).normal(size=(3000, 10)).astype(np.float32)}).write_h5ad(pca)
    result = subprocess.run([sys.executable, "benchmarks/bench_knn_index.py", "--pca", str(pca), "--queries", "0",
                             "--leiden", "3000"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| exact, Leiden seed 1 |" in result.stdout and "| HNSW (before), Leiden seed 0 |" in result.stdout
    control = next(line for line in result.stdout.splitlines() if line.startswith("| exact, 0.0 % of"))
    assert "swapped for next-nearest cells" in control and control.endswith("| 1.0000 |")  # the same graph
