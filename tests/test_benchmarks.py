"""The benchmark scripts run (small sizes); their full figures are in benchmarks/RESULTS.md."""

import subprocess
import sys

from tests.conftest import ROOT


def test_render_and_faiss_benchmark_runs_quick():
    result = subprocess.run([sys.executable, "benchmarks/bench_render_faiss.py", "--quick"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env=None)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "recall@15" in result.stdout and "s/frame" in result.stdout
