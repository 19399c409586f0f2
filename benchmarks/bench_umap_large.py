"""Benchmark for issue 17's first target: `embed --method pca` then `umap --use-rep X_pca` of a 200,000-cell file.

Run from the repository root::

    .venv/bin/python benchmarks/bench_umap_large.py                   # this checkout and 86a4be8, ~10 min
    .venv/bin/python benchmarks/bench_umap_large.py --skip-baseline   # this checkout only
    .venv/bin/python benchmarks/bench_umap_large.py --write-results   # also update RESULTS.md
    .venv/bin/python benchmarks/bench_umap_large.py --quick           # 20,000 cells, this checkout only

The file is made by ``make_large_dataset.py`` (real Kang 2018 cells resampled with sampling noise, so many cells are
near-duplicates) unless it exists. Each code version runs both commands as subprocesses of the command line, its
own checkout first on ``PYTHONPATH`` (the baseline from a ``git worktree`` of ``--baseline-commit``, removed
afterwards), and is timed from start to exit with its peak resident memory (``wait4``'s ``ru_maxrss``). The layout's
quality is measured on a random sample of cells against every cell: kNN preservation (the share of each cell's 15
nearest neighbours in the PCA space that are among its 15 nearest in the 2-D layout, both exact) and cell-type
neighbour agreement (the share of its 15 nearest in the layout with its cell type; in the PCA space as a reference).
The machine is shared: the cores other processes used during each run are reported beside its time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import h5py
import numpy as np
import pandas as pd
from anndata.io import read_elem
from make_large_dataset import make_large_dataset
from results import REPO_ROOT, TreeLoad, command_line, machine_facts, markdown, write_section

SECTION_HEADING = "## UMAP of a 200,000-cell file through the command line (issue 17)"
BASELINE_COMMIT = "86a4be8"
K = 15


def run_measured(command: list[str], code_root: Path, log: Path) -> tuple[float, float, float]:
    """Run ``command`` with ``code_root`` first on PYTHONPATH (output to ``log``); its wall time and CPU time (user and
    system, all threads) in seconds and its peak resident memory in GiB. Raises when it fails."""
    env = dict(os.environ, PYTHONPATH=str(code_root))
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=code_root, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20


def knn_preservation(high_neighbours: np.ndarray, low_neighbours: np.ndarray) -> float:
    """The mean share of each row's neighbours in ``high_neighbours`` that are also in the same row of
    ``low_neighbours`` (cells x k each, the cell itself left out)."""
    return float(np.mean([len(np.intersect1d(high, low)) for high, low in zip(high_neighbours, low_neighbours)])
                 / high_neighbours.shape[1])


def label_agreement(labels: np.ndarray, cells: np.ndarray, neighbours: np.ndarray) -> float:
    """The mean share of the neighbours of ``cells`` (rows of ``neighbours``, cell positions) with the cell's label."""
    return float(np.mean(labels[neighbours] == labels[cells][:, None]))


def exact_neighbours(points: np.ndarray, cells: np.ndarray, k: int = K) -> np.ndarray:
    """The ``k`` nearest points (by position, the cell itself left out) of each of ``cells``, by exact search."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    index = faiss.IndexFlatL2(points.shape[1])
    index.add(points)
    _, found = index.search(points[cells], k + 1)
    return np.stack([row[row != cell][:k] for row, cell in zip(found, cells)])


def layout_quality(path: Path, n_sample: int, seed: int = 0) -> dict:
    """Cells, kNN preservation and cell-type agreement (layout and PCA space) of the layout written to ``path``."""
    with h5py.File(path, "r") as handle:
        pca, layout = read_elem(handle["obsm/X_pca"]), read_elem(handle["obsm/X_umap"])
        labels = pd.Series(read_elem(handle["obs/cell_type"])).astype("category").cat.codes.to_numpy()
        fitted = read_elem(handle["uns/X_umap"])
    cells = np.sort(np.random.default_rng(seed).choice(len(pca), size=min(n_sample, len(pca)), replace=False))
    in_pca, in_layout = exact_neighbours(pca, cells), exact_neighbours(layout, cells)
    return {"cells": len(pca), "fitted with": f"{fitted.get('init', 'spectral')}, {fitted.get('n_epochs', 'default')} "
                                            "epochs",
            "kNN preservation": knn_preservation(in_pca, in_layout),
            "cell-type agreement (layout)": label_agreement(labels, cells, in_layout),
            "cell-type agreement (PCA)": label_agreement(labels, cells, in_pca)}


def run_version(name: str, code_root: Path, data: Path, work: Path, n_sample: int) -> dict:
    """Embed and lay out ``data`` with the code at ``code_root``; times, peak memory, load and layout quality."""
    work.mkdir(parents=True, exist_ok=True)
    embedded, laid_out = work / "pca.h5ad", work / "umap.h5ad"
    python = [sys.executable, "-m", "sccore"]
    load = TreeLoad()
    embed_s, embed_cpu, embed_gib = run_measured(
        python + ["embed", str(data), "--method", "pca", "-o", str(embedded)], code_root, work / "embed.log")
    umap_s, umap_cpu, umap_gib = run_measured(
        python + ["umap", str(embedded), "--use-rep", "X_pca", "-o", str(laid_out)], code_root, work / "umap.log")
    row = {"code": name, "embed (s)": embed_s, "umap (s)": umap_s, "total (s)": embed_s + umap_s,
           "total CPU (s)": embed_cpu + umap_cpu, "peak memory (GiB)": max(embed_gib, umap_gib),
           "other load (cores)": load.stop()}
    row.update(layout_quality(laid_out, n_sample))
    print(f"{name}: {row}", flush=True)
    return row


def baseline_checkout(commit: str, folder: Path) -> Path:
    """A detached ``git worktree`` of ``commit`` in ``folder`` (remove it with :func:`remove_checkout`)."""
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), commit], cwd=REPO_ROOT, check=True,
                   capture_output=True)
    return folder


def remove_checkout(folder: Path) -> None:
    """Remove the worktree :func:`baseline_checkout` made."""
    subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO_ROOT, check=False,
                   capture_output=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--data", type=Path, help="the file of raw counts (made if missing; default: "
                                                  ".cache/large/kang_<cells>.h5ad)")
    parser.add_argument("--quick", action="store_true", help="20,000 cells, no baseline")
    parser.add_argument("--skip-baseline", action="store_true", help=f"do not run the baseline ({BASELINE_COMMIT})")
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--sample", type=int, default=5_000, help="cells whose neighbourhoods are scored")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    n_cells = 20_000 if args.quick else args.cells
    data = args.data or REPO_ROOT / ".cache" / "large" / f"kang_{n_cells}.h5ad"
    if not data.is_file():
        print(f"making {data} ({n_cells:,} cells)", flush=True)
        make_large_dataset(n_cells, data)
    facts = machine_facts(["numpy", "faiss-cpu", "umap-learn", "numba", "scikit-learn"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_umap_large_") as scratch:
        rows.append(run_version("this checkout", REPO_ROOT, data, Path(scratch) / "new", args.sample))
        if not (args.quick or args.skip_baseline):
            checkout = baseline_checkout(args.baseline_commit, Path(scratch) / "baseline_code")
            try:
                rows.append(run_version(f"baseline ({args.baseline_commit})", checkout, data,
                                        Path(scratch) / "baseline", args.sample))
            finally:
                remove_checkout(checkout)
                shutil.rmtree(checkout, ignore_errors=True)
    table = pd.DataFrame(rows)
    text = markdown(table, digits=3)
    if len(rows) == 2:
        text += (f"\n\nSpeed-up of embed + umap: {rows[1]['total (s)'] / rows[0]['total (s)']:.2f}x in wall time, "
                 f"{rows[1]['total CPU (s)'] / rows[0]['total CPU (s)']:.2f}x in CPU time (baseline / this checkout, "
                 f"measured in the same run).")
    print(text)
    if args.write_results:
        machine = "\n".join(f"- {key}: {value}" for key, value in facts.items())
        body = (f"Command: `{command_line()}`\n\nFile: `{data.name}`, {n_cells:,} cells made by "
                f"`benchmarks/make_large_dataset.py`; kNN preservation and cell-type agreement over {args.sample:,} "
                f"random cells' {K} nearest neighbours (exact search). Times are wall-clock from start to exit of each "
                f"command; total CPU is user + system time of all their threads; other load is the cores other "
                f"processes used meanwhile (the machine's 2 cores are shared: 2 means they took all of it).\n\n"
                f"{text}\n\n"
                f"Machine:\n{machine}")
        write_section(SECTION_HEADING, body)


if __name__ == "__main__":
    main()
