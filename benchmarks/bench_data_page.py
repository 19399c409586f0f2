"""The first visit to Data & QC after opening a new file (issue 17: 20 s on a 542-cell file), beside a baseline commit.

Each version (this checkout, and a ``git worktree`` of the baseline, default cd526f9) opens the page in a new Python
process (as a new server would) on a file it has never seen: the first 542 cells of ``../shared/data/valid.h5ad``,
with an empty cache; timed with Streamlit's ``AppTest`` from the script's start to its end. The versions alternate,
``--repeats`` times each.

    python benchmarks/bench_data_page.py [--baseline cd526f9] [--repeats 2] [--write-results]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_latency import baseline_checkout, head_commit, remove_checkout
from results import TreeLoad, command_line, machine_facts, md_table, write_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## First visit to Data & QC of a new file (issue 17)"
DATA = ROOT.parent / "shared" / "data" / "valid.h5ad"
N_CELLS = 542
VISIT = """
import os, sys, time
from streamlit.testing.v1 import AppTest
app = AppTest.from_file(os.path.join(sys.argv[1], "pages", "data.py"), default_timeout=900)
app.session_state["source"] = sys.argv[2]
start = time.perf_counter()
app.run()
assert not app.exception and not app.error, [e.value for e in [*app.exception, *app.error]]
print(time.perf_counter() - start)
"""


def visit(root: Path, path: Path, folder: Path) -> float:
    """Seconds of the first Data & QC run in a new process of the checkout ``root``, with an empty cache."""
    cache = Path(tempfile.mkdtemp(dir=folder))
    env = dict(os.environ, PYTHONPATH=str(root), SCCORE_CACHE_DIR=str(cache / "cache"), SCCORE_SETTINGS=os.devnull,
               SCCORE_UPLOAD_DIR=str(cache / "uploads"), SCCORE_DATA_DIRS=str(path.parent))
    result = subprocess.run([sys.executable, "-c", VISIT, str(root), str(path)], cwd=root, env=env,
                            capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    """Time both versions, print the table; with ``--write-results`` update benchmarks/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="cd526f9", help="the commit to compare with")
    parser.add_argument("--repeats", type=int, default=2, help="visits of each version (alternating)")
    parser.add_argument("--write-results", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} not found (the shared data sets, see its README)")
    import anndata as ad

    facts = machine_facts(["streamlit", "umap-learn", "numba"])
    seconds: dict[str, list[float]] = {"this checkout": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="sccore-data-page-") as folder:
        workdir = Path(folder)
        (workdir / "data").mkdir()
        path = workdir / "data" / f"valid_{N_CELLS}.h5ad"
        ad.read_h5ad(DATA)[:N_CELLS].copy().write_h5ad(path)
        checkout = baseline_checkout(args.baseline, workdir / "baseline-checkout")
        load = TreeLoad()
        try:
            for _ in range(args.repeats):
                for label, root in (("baseline", checkout), ("this checkout", ROOT)):
                    seconds[label].append(visit(root, path, workdir))
                    print(f"  {label}: {seconds[label][-1]:.2f} s", flush=True)
        finally:
            remove_checkout(checkout)
        other = load.stop()
    mine, theirs = statistics.median(seconds["this checkout"]), statistics.median(seconds["baseline"])
    table = md_table(["version", "visits", "median s", "each (s)"],
                     [[label, len(values), f"{statistics.median(values):.2f}", ", ".join(f"{v:.2f}" for v in values)]
                      for label, values in seconds.items()])
    body = "\n".join([table, "", f"- this / baseline: **{mine / theirs:.2f}x**",
                      f"- cores used by processes other than the timed ones meanwhile: {other:.2f}"])
    print(body)
    if args.write_results:
        text = "\n".join([
            f"The first {N_CELLS} cells of `valid.h5ad`, never seen before (empty cache), opened on the Data & QC "
            "page in a new Python process (as by a new server): Streamlit's AppTest from the script's start to its "
            f"end, imports included. This checkout: {head_commit()}; baseline: `git worktree` of {args.baseline}, "
            "alternating.", "", f"Command: `{command_line()}`", "", body, "", "Machine:", "",
            md_table(["", ""], [[key, value] for key, value in facts.items()])])
        write_section(HEADING, text)
        print("wrote the section into benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
