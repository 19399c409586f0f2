"""Which FAISS index finds the 15 nearest neighbours of every cell of a large embedding (issue 17): time and recall.

Run from the repository root on the PCA that ``python -m sccore embed --method pca`` wrote::

    .venv/bin/python benchmarks/bench_knn_index.py --pca pca.h5ad                  # the index table
    .venv/bin/python benchmarks/bench_knn_index.py --pca pca.h5ad --leiden 100000  # and the Leiden check
    .venv/bin/python benchmarks/bench_knn_index.py --pca pca.h5ad --write-results

Each index of ``CANDIDATES`` (``sccore.neighbors.IndexParams``) is built over every cell, then searched for the 15
nearest of ``--queries`` random cells; recall@15 is the mean share of each query's exact 15 nearest (brute force,
the cell itself included) that it returns, distance / exact the mean distance of its other 14 over that of the
exact 14 (1: as near as the true neighbours), and the time of a search of every cell is the timed search scaled to all
cells (searches cost the same per query). Times are wall-clock and CPU (user + system of all threads) of this
process; other load is the cores other processes used meanwhile. ``--leiden N`` also clusters the kNN graph (UMAP
connectivities, :func:`sccore.cluster.leiden`) of N random cells from exact neighbours, HNSW's (before) and the
default index's (``IndexParams()``), and gives their ARI against the exact graph's beside that of a second Leiden
seed on the exact graph (Leiden's own spread) and that of a control: the exact graph with as many of its neighbours
as the default index misses swapped, at random, for the next-nearest cells (the approximate search's kind of miss
without its pattern). ``--queries 0`` skips the index table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import faiss
import h5py
import numpy as np
import pandas as pd
from anndata.io import read_elem
from results import OtherLoad, command_line, machine_facts, markdown, write_section

from sccore.neighbors import IndexParams, Neighbors, build_index, knn, knn_graph, search

SECTION_HEADING = "## FAISS index for the neighbours of a 200,000-cell embedding (issue 17)"
K = 15
CANDIDATES = {
    "exact (flat)": IndexParams(kind="flat"),
    "HNSW M=32, efC 64, efS 96 (before)": IndexParams(kind="hnsw"),
    "HNSW M=32, efC 64, efS 48": IndexParams(kind="hnsw", ef_search=48),
    "HNSW M=16, efC 40, efS 48": IndexParams(kind="hnsw", hnsw_m=16, ef_construction=40, ef_search=48),
    "IVF-Flat, 4 sqrt(n) lists, 16 probes": IndexParams(kind="ivf", ivf_list_factor=4, ivf_probes=16),
    "IVF-Flat, 4 sqrt(n) lists, 64 probes": IndexParams(kind="ivf", ivf_list_factor=4, ivf_probes=64),
    "IVF-Flat, sqrt(n) lists, 8 probes": IndexParams(kind="ivf", ivf_probes=8),
    "IVF-Flat, sqrt(n) lists, 16 probes": IndexParams(kind="ivf", ivf_probes=16),
    "IVF-Flat, sqrt(n) lists, 32 probes": IndexParams(kind="ivf", ivf_probes=32),
}


class Timer:
    """Wall and CPU seconds (all this process's threads) of a ``with`` block."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """The mean share of each row of ``exact`` found in the same row of ``found``."""
    return float((exact[:, :, None] == found[:, None, :]).any(axis=2).mean())


def compare_indexes(embedding: np.ndarray, n_queries: int, seed: int = 0) -> pd.DataFrame:
    """Build time, search time of every cell (scaled from ``n_queries`` random cells) and recall@K of each index."""
    queries = np.sort(np.random.default_rng(seed).choice(len(embedding), size=n_queries, replace=False))
    squared, exact = faiss.knn(embedding[queries], embedding, K)
    exact_mean = np.sqrt(np.clip(squared[:, 1:], 0, None)).mean(axis=1)
    scale = len(embedding) / n_queries
    rows = []
    for name, params in CANDIDATES.items():
        load = OtherLoad()
        with Timer() as built:
            index = build_index(embedding, params)
        with Timer() as searched:
            found = search(index, embedding[queries], K)
        row = {"index": name, "build (s)": built.wall, "build CPU (s)": built.cpu,
               "search of all cells (s)": searched.wall * scale, "search CPU (s)": searched.cpu * scale,
               "recall@15": recall(found.indices, exact),
               "distance / exact": float(np.mean(found.distances[:, 1:].mean(axis=1) / exact_mean)),
               "other load (cores)": load.stop()}
        rows.append(row)
        print(row, flush=True)
    return pd.DataFrame(rows)


def next_nearest_swaps(wide: Neighbors, k: int, share: float, seed: int = 0) -> Neighbors:
    """The ``k`` exact neighbours of each cell (``wide``: more than ``k`` of them, nearest first, the cell itself first)
    with each neighbour other than the cell itself swapped, with probability ``share``, for the next-nearest cell not
    yet in the list (the (k+1)-th, then the (k+2)-th...); rows re-sorted by distance."""
    rng = np.random.default_rng(seed)
    indices, distances = wide.indices[:, :k].copy(), wide.distances[:, :k].copy()
    spare = wide.indices.shape[1] - k
    swapped = rng.random((len(indices), k - 1)) < share
    slot = np.cumsum(swapped, axis=1) - 1  # the j-th swap of a row takes the j-th next-nearest cell
    swapped &= slot < spare
    rows = np.broadcast_to(np.arange(len(indices))[:, None], swapped.shape)
    indices[:, 1:][swapped] = wide.indices[rows[swapped], k + slot[swapped]]
    distances[:, 1:][swapped] = wide.distances[rows[swapped], k + slot[swapped]]
    order = np.argsort(distances, axis=1, kind="stable")
    return Neighbors(indices=np.take_along_axis(indices, order, axis=1),
                     distances=np.take_along_axis(distances, order, axis=1))


def leiden_agreement(embedding: np.ndarray, n_cells: int, seed: int = 0,
                     approximate: IndexParams = IndexParams()) -> pd.DataFrame:
    """ARI of Leiden clusters on the kNN graph of ``n_cells`` random cells from the ``approximate`` index (by default
    the default index, exact below its threshold) and from HNSW (before) against the exact graph's, beside the ARI of
    another Leiden seed on the exact graph and of the exact graph with the approximate index's share of misses swapped
    at random for next-nearest cells (:func:`next_nearest_swaps`)."""
    from sccore.cluster import cluster_agreement, leiden

    cells = np.sort(np.random.default_rng(seed).choice(len(embedding), size=min(n_cells, len(embedding)),
                                                       replace=False))
    subset = np.ascontiguousarray(embedding[cells])
    kind = approximate.resolved_kind(len(subset))
    default = f"{kind} (default)" if approximate == IndexParams() else kind
    found = {"exact": knn(subset, K, IndexParams(kind="flat")),
             "HNSW (before)": knn(subset, K, IndexParams(kind="hnsw")), default: knn(subset, K, approximate)}
    missed = 1 - recall(found[default].indices, found["exact"].indices)
    control = f"exact, {100 * missed:.1f} % of neighbours swapped for next-nearest cells"
    found[control] = next_nearest_swaps(knn(subset, 2 * K, IndexParams(kind="flat")), K, missed * K / (K - 1), seed)
    clusters = {}
    for name, neighbours in found.items():
        adata = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(subset))]))
        adata.obsp["connectivities"] = knn_graph(neighbours)[1]
        for leiden_seed in (0, 1) if name == "exact" else (0,):
            leiden(adata, key_added="leiden", seed=leiden_seed)
            clusters[(name, leiden_seed)] = adata.obs["leiden"].to_numpy()
        print(name, f"recall@{K} {recall(neighbours.indices, found['exact'].indices):.4f}", flush=True)
    reference = clusters[("exact", 0)]
    return pd.DataFrame([{"graph": f"{name}, Leiden seed {leiden_seed}", "cells": len(subset),
                          f"recall@{K}": recall(found[name].indices, found["exact"].indices),
                          "clusters": len(set(labels)),
                          "ARI against exact, seed 0": cluster_agreement(labels, reference)["ARI"]}
                         for (name, leiden_seed), labels in clusters.items() if (name, leiden_seed) != ("exact", 0)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pca", type=Path, required=True, help="an h5ad with obsm['X_pca'] (`sccore embed` output)")
    parser.add_argument("--queries", type=int, default=20_000, help="random cells searched and scored (0: no index "
                                                                    "table)")
    parser.add_argument("--leiden", type=int, default=0, help="cells of the Leiden check (0: none)")
    parser.add_argument("--leiden-index", choices=["auto", "ivf"], default="auto",
                        help="the Leiden check's approximate index: the default (exact below 50,000 cells) or the "
                             "inverted file whatever the size")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    with h5py.File(args.pca, "r") as handle:
        embedding = np.ascontiguousarray(read_elem(handle["obsm/X_pca"]), dtype=np.float32)
    facts = machine_facts(["numpy", "faiss-cpu", "igraph"])
    tables = [markdown(compare_indexes(embedding, args.queries), digits=3)] if args.queries else []
    if args.leiden:
        approximate = IndexParams(kind=args.leiden_index)
        tables.append(markdown(leiden_agreement(embedding, args.leiden, approximate=approximate), digits=4))
    text = "\n\n".join(tables)
    print(text)
    if args.write_results:
        machine = "\n".join(f"- {key}: {value}" for key, value in facts.items())
        write_section(SECTION_HEADING, f"Command: `{command_line()}`\n\nEmbedding: `{args.pca.name}`, "
                                       f"{len(embedding):,} cells x {embedding.shape[1]} PCs; {args.queries:,} random "
                                       f"queries.\n\n{text}\n\nMachine:\n{machine}")


if __name__ == "__main__":
    main()
