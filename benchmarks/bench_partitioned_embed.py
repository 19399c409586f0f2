"""Partitioned encoder embedding on Dask (issue 7): cells per second with 1, then 2 local workers.

The first ``--cells`` cells of an ``.h5ad`` (default: 4,000 of ``../shared/data/kang_se.h5ad``, Kang 2018
control PBMCs, written to a temporary file with their CSR counts) are embedded with a model folder (default:
the committed demo model, ``assets/demo_model``) by ``sccore.partitions.embed_partitions``, on a local cluster
(``sccore.jobs.connect``) of 1 worker process, then of 2, one thread each and one torch thread per task, in
the same process; partitions of ``--partition-cells`` cells. Before the clock starts every worker has imported
torch and anndata and loaded the model (reported apart as start-up); the timed run opens the file in each
task, reads the partition's rows, tokenizes and embeds them (bf16 autocast where the CPU has it), writes the
parts and assembles ``embedding.npy``. The million-cell time is the rate extrapolated, start-up excluded.

    .venv/bin/python benchmarks/bench_partitioned_embed.py [--cells 4000] [--quick] [--write-results]
    .venv/bin/python benchmarks/bench_partitioned_embed.py --input .cache/large/kang_1m.h5ad \\
        --cells 0 --partition-cells 10000     # a whole file, e.g. from benchmarks/make_large_dataset.py
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from results import TreeLoad  # noqa: E402
from results import command_line, load_average, machine_facts, md_table, write_section  # noqa: E402
from sccore.jobs import close, connect  # noqa: E402
from sccore.models.store import model_fingerprint  # noqa: E402
from sccore.partitions import embed_partitions  # noqa: E402

KANG = ROOT.parent / "shared" / "data" / "kang_se.h5ad"
MODEL = ROOT / "assets" / "demo_model"
SECTION = "## Partitioned encoder embedding on Dask (issue 7)"
MILLION = 1_000_000


def first_cells(source: Path, n_cells: int, folder: Path) -> Path:
    """The first ``n_cells`` cells of ``source`` (read in backed mode: only their rows) as a new file in ``folder``."""
    import anndata as ad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backed = ad.read_h5ad(source, backed="r")
        if n_cells > backed.n_obs:
            sys.exit(f"{source.name} has {backed.n_obs:,} cells, fewer than --cells {n_cells:,}; make a larger file "
                     "with benchmarks/make_large_dataset.py and pass it as --input.")
        subset = backed[:n_cells].to_memory()
        backed.file.close()
        path = folder / f"first_{n_cells}.h5ad"
        subset.write_h5ad(path)
    return path


def warm_worker(model: str, fingerprint: str, device: str) -> None:
    """Run in each worker: import what a task imports and load the model into the worker's cache."""
    import anndata.io  # noqa: F401
    import h5py  # noqa: F401

    from sccore import partitions

    partitions._worker_model(model, fingerprint, device)


def measure(path: Path, model: Path, n_workers: int, args: argparse.Namespace, out_dir: Path) -> dict:
    """Start a local cluster of ``n_workers``, warm it, time one ``embed_partitions`` run, close the cluster."""
    started = time.perf_counter()
    client = connect(n_workers=n_workers)
    try:
        client.wait_for_workers(n_workers, timeout=120)
        client.run(warm_worker, str(model.resolve()), model_fingerprint(model), args.device)
        startup = time.perf_counter() - started
        load = TreeLoad()  # this process and its cluster's count as this benchmark's own
        start = time.perf_counter()
        result = embed_partitions(path, model, out_dir, client, partition_cells=args.partition_cells,
                                  library_size_key=args.library_size_key, device=args.device)
        seconds = time.perf_counter() - start
        other = load.stop()
    finally:
        close(client)
    return {"workers": n_workers, "cells": result.n_cells, "partitions": result.n_partitions, "startup": startup,
            "seconds": seconds, "rate": result.n_cells / seconds, "other": other, "path": result.path}


def duration(seconds: float) -> str:
    """``seconds`` as hours and minutes (or minutes and seconds)."""
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=KANG, help="an .h5ad of raw counts (default: Kang 2018)")
    parser.add_argument("--cells", type=int, help="embed the input's first N cells (default 4000, quick 600; 0: all)")
    parser.add_argument("--partition-cells", type=int, help="cells per task (default 500, quick 100)")
    parser.add_argument("--model", type=Path, default=MODEL, help="model folder (default: assets/demo_model)")
    parser.add_argument("--library-size-key", metavar="KEY", help="obs column with whole-transcriptome totals")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    parser.add_argument("--quick", action="store_true", help="600 cells, for a smoke test")
    parser.add_argument("--write-results", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    n_cells = (600 if args.quick else 4000) if args.cells is None else args.cells
    args.partition_cells = args.partition_cells or (100 if args.quick else 500)
    facts = machine_facts(["torch", "dask", "distributed", "anndata", "h5py"])
    with tempfile.TemporaryDirectory(prefix="sccore-partitions-") as folder:
        path = first_cells(args.input, n_cells, Path(folder)) if n_cells else args.input
        runs = [measure(path, args.model, n_workers, args, Path(folder) / f"out-{n_workers}") for n_workers in (1, 2)]
        difference = float(np.abs(np.load(runs[0]["path"]) - np.load(runs[1]["path"])).max())
    rows = [[run["workers"], f"{run['cells']:,}", run["partitions"], f"{run['startup']:.1f}", f"{run['seconds']:.1f}",
             f"{run['rate']:.1f}", duration(MILLION / run["rate"]), f"{run['other']:.2f}"] for run in runs]
    table = md_table(["local workers", "cells", "partitions", "start-up (s)", "embedding (s)", "cells/s",
                      "1,000,000 cells (extrapolated)", "other processes (cores)"], rows)
    ratio = runs[1]["rate"] / runs[0]["rate"]
    summary = (f"2 workers / 1 worker: **{ratio:.2f}x** cells/s; the two runs' embeddings differ by at most "
               f"{difference:.2g}. A million cells on 2 local workers: about {duration(MILLION / runs[1]['rate'])}.")
    print(table)
    print(summary)
    if args.write_results and not args.quick:
        body = "\n\n".join([
            f"Command: `{command_line()}`",
            f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC. Input: {args.input.name}"
            f"{f', its first {n_cells:,} cells' if n_cells else ''}; model: `{args.model.name}`; "
            f"{args.partition_cells:,} cells per partition; device {args.device}.",
            __doc__.split("\n\n")[1].replace("\n", " "),
            table, summary,
            md_table(["machine", "value"], [[key, value] for key, value in facts.items()]
                     + [["load average at end (1/5/15 min)", load_average()]]),
        ])
        write_section(SECTION, body)
        print("wrote the section into benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
