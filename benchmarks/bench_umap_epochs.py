"""Layout quality and CPU time of ``sccore.umap.fit_umap`` on a file's PCA at several epoch counts and seeds (issue 17).

Run from the repository root::

    .venv/bin/python benchmarks/bench_umap_epochs.py --data /work/bench_data/kang_10k.h5ad --small-thresholds 10000 5000

The file is prepared as the dashboard prepares it (``sccore.workflow.prepare``: quality control and PCA), its
neighbours found once, then laid out with each ``UMAPParams.small_threshold`` given (which sets the epochs through
``sccore.umap.layout_schedule``: at 9,985 cells, 10,000 gives umap-learn's 500 and 5,000, today's default, 250) and
each seed. Quality as ``bench_umap_large.py`` scores it (kNN preservation and cell-type neighbour agreement over a
random sample of cells, exact search). The CPU time is this process's, over the fit (the layout runs single-threaded).
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import replace
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from bench_umap_large import exact_neighbours, knn_preservation, label_agreement
from results import markdown

from sccore.neighbors import knn
from sccore.umap import UMAPParams, fit_umap, layout_schedule
from sccore.workflow import PipelineParams, prepare


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Print one row per (threshold, seed): epochs, wall and CPU seconds of the fit, and the layout's quality."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an .h5ad of raw counts with obs['cell_type']")
    parser.add_argument("--small-thresholds", type=int, nargs="+", default=[10_000, 5_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sample", type=int, default=5_000, help="cells whose neighbourhoods are scored")
    args = parser.parse_args()
    adata = prepare(ad.read_h5ad(args.data), PipelineParams()).adata
    embedding = np.ascontiguousarray(adata.obsm["X_pca"], dtype=np.float32)
    found = knn(embedding, UMAPParams.n_neighbors)
    labels = adata.obs["cell_type"].astype("category").cat.codes.to_numpy()
    cells = np.sort(np.random.default_rng(0).choice(len(embedding), min(args.sample, len(embedding)), replace=False))
    in_pca = exact_neighbours(embedding, cells)
    fit_umap(embedding[:200], None)  # umap-learn's first use (loading or compiling its numba functions), untimed
    rows = []
    for threshold in args.small_thresholds:
        for seed in args.seeds:
            params = replace(UMAPParams(), small_threshold=threshold, random_state=seed)
            start, start_cpu = time.perf_counter(), cpu_seconds()
            _, coords = fit_umap(embedding, found, params)
            wall, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
            in_layout = exact_neighbours(coords, cells)
            rows.append({"small_threshold": threshold, "epochs": layout_schedule(len(embedding), params)[1],
                         "seed": seed, "fit (s)": wall, "fit CPU (s)": cpu,
                         "kNN preservation": knn_preservation(in_pca, in_layout),
                         "cell-type agreement (layout)": label_agreement(labels, cells, in_layout)})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(f"{len(embedding):,} cells\n" + markdown(table, digits=4))
    means = table.groupby("epochs")[["fit CPU (s)", "kNN preservation", "cell-type agreement (layout)"]].mean()
    print("\nmeans over the seeds\n" + markdown(means.reset_index(), digits=4))


if __name__ == "__main__":
    main()
