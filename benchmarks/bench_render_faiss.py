"""Benchmark for issue 2: rendering millions of cells, and FAISS neighbour search on a 1M x 50 embedding.

Run from the repository root::

    .venv/bin/python benchmarks/bench_render_faiss.py                  # full sizes (~5-15 min)
    .venv/bin/python benchmarks/bench_render_faiss.py --quick          # smoke run (< 1 min)
    .venv/bin/python benchmarks/bench_render_faiss.py --write-results  # also update RESULTS.md

Part 1 renders synthetic UMAP-like layouts (1M and 5M cells, 20 categories) with
``sccore.render.render_categories`` and, in the same run, with a matplotlib scatter (Agg, 8x6 in at
100 dpi, s=1, one colour per category), and compares seconds per frame.

Part 2 builds ``sccore.neighbors.build_index`` (HNSW, the IndexParams defaults) over a synthetic
PCA-like 1M x 50 float32 embedding, measures build time, batch and one-at-a-time query latency, and
recall@15 against exact (flat) search on the same queries, for several ``efSearch`` values.

Everything is printed as Markdown tables; ``--write-results`` replaces this benchmark's section of
``benchmarks/RESULTS.md`` (other sections are kept). ``--strict`` makes a failed target exit with 1.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numba_cache")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

from results import (  # noqa: E402
    OtherLoad, command_line, load_average, machine_facts, md_table, replace_section,
)

SECTION_HEADING = "## Rendering and FAISS (issue 2)"

RENDER_TARGETS = {1_000_000: 0.3, 5_000_000: 1.0}  # seconds per frame
QUERY_TARGET_MS = 1.0  # per cell
RECALL_TARGET = 0.95
K = 15


# ----------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------

def umap_like_layout(n_cells: int, n_categories: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D layout resembling a UMAP: ``n_categories`` blobs of unequal size, spread and elongation.

    Cluster centres lie uniformly in a 30 x 30 box; each cluster has a random size (Dirichlet weights),
    an isotropic spread between 0.3 and 2.0, an elongation up to 3x along a random angle, and 30% of
    clusters are bent into an arc (trajectory-like). Returns float32 coordinates and int codes.
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_categories, 2.0))
    codes = rng.choice(n_categories, size=n_cells, p=weights).astype(np.int32)
    coords = np.empty((n_cells, 2), dtype=np.float32)
    centres = rng.uniform(-15, 15, size=(n_categories, 2))
    for cat in range(n_categories):
        members = np.flatnonzero(codes == cat)
        m = len(members)
        spread = rng.uniform(0.3, 2.0)
        stretch = rng.uniform(1.0, 3.0)
        local = rng.standard_normal((m, 2)) * np.array([spread * stretch, spread])
        if rng.random() < 0.3:  # bend into an arc
            bend = rng.uniform(0.1, 0.3)
            local[:, 1] += bend * local[:, 0] ** 2 / max(spread * stretch, 1e-3)
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        coords[members] = (local @ rot.T + centres[cat]).astype(np.float32)
    return coords, codes


def pca_like_embedding(n_cells: int, dim: int = 50, n_clusters: int = 30, seed: int = 1) -> np.ndarray:
    """A float32 ``n_cells x dim`` embedding resembling the top PCs of scRNA-seq data.

    Cell types: ``n_clusters`` Gaussian clusters with Dirichlet(1.5) sizes. Cluster centres are drawn
    with a per-dimension standard deviation ``3 * exp(-d / 8)`` (separation lives in the first ~15
    PCs, like biology); each cell adds within-cluster noise with per-dimension standard deviation
    ``s_c * (d + 1) ** -0.25`` (slowly decaying, like technical noise in lower PCs), ``s_c`` in
    [0.6, 1.4] per cluster. Dimensions are PC-ordered (decreasing variance), as an embedding is.
    """
    rng = np.random.default_rng(seed)
    d = np.arange(dim)
    between = 3.0 * np.exp(-d / 8.0)
    within = (d + 1.0) ** -0.25
    weights = rng.dirichlet(np.full(n_clusters, 1.5))
    labels = rng.choice(n_clusters, size=n_cells, p=weights)
    centres = (rng.standard_normal((n_clusters, dim)) * between).astype(np.float32)
    scale = rng.uniform(0.6, 1.4, size=n_clusters).astype(np.float32)
    X = np.empty((n_cells, dim), dtype=np.float32)
    chunk = 250_000
    for start in range(0, n_cells, chunk):
        stop = min(start + chunk, n_cells)
        lab = labels[start:stop]
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * within.astype(np.float32)
        X[start:stop] = centres[lab] + noise * scale[lab, None]
    return X


def levina_bickel_dimension(distances: np.ndarray) -> float:
    """Intrinsic dimension (Levina-Bickel MLE, MacKay-Ghahramani averaging) from sorted kNN distances
    that exclude the point itself."""
    d = np.asarray(distances, dtype=np.float64)
    d = d[np.all(d > 0, axis=1)]
    logs = np.log(d[:, -1:] / d[:, :-1])  # log(T_k / T_j), j < k
    inverse = logs.sum(axis=1) / (d.shape[1] - 1)
    return float(1.0 / inverse.mean())


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def now() -> float:
    return time.perf_counter()




def fmt_n(n: int) -> str:
    return f"{n:,}"


def machine_info() -> dict:
    import faiss
    import numba

    return {**machine_facts(["numpy", "faiss-cpu", "datashader", "numba", "matplotlib"]),
            "faiss.omp_get_max_threads()": faiss.omp_get_max_threads(),
            "numba threads": numba.config.NUMBA_NUM_THREADS}


def matplotlib_frame(coords: np.ndarray, codes: np.ndarray, colors: list[str], view,
                     per_point: bool = False) -> np.ndarray:
    """One matplotlib frame: new 8x6 in figure at 100 dpi, scatter s=1, draw, fetch RGBA.

    Default: one scatter per category (a single colour per collection lets Agg use its fast
    draw_markers path). ``per_point``: one scatter with an RGBA colour per point (the naive way).
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba_array
    fig = plt.figure(figsize=(8, 6), dpi=100)
    try:
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        ax.set_xlim(*view.x_range)
        ax.set_ylim(*view.y_range)
        if per_point:
            ax.scatter(coords[:, 0], coords[:, 1], s=1, c=to_rgba_array(colors)[codes], linewidths=0, marker="o")
        else:
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(colors) + 1))
            for cat, colour in enumerate(colors):
                members = order[bounds[cat]:bounds[cat + 1]]
                if len(members):
                    ax.scatter(coords[members, 0], coords[members, 1], s=1, c=colour, linewidths=0, marker="o")
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba()).copy()
    finally:
        plt.close(fig)


def bench_render(sizes: list[int], n_frames: int, mpl_frames_small: int, mpl_big_threshold: int,
                 skip_matplotlib: bool, skip_per_point: bool, seed: int) -> tuple[list[dict], list[dict]]:
    from sccore.render import category_colors, fit_view, render_categories
    colors = category_colors(20)

    # Warm-up: compile datashader's numba kernels and load matplotlib's fonts once, on a small layout.
    warm_coords, warm_codes = umap_like_layout(10_000, seed=seed)
    warm_view = fit_view(warm_coords, 800, 600)
    t0 = now()
    render_categories(warm_coords, warm_codes, colors, warm_view)
    first_call = now() - t0
    if not skip_matplotlib:
        matplotlib_frame(warm_coords, warm_codes, colors, warm_view)

    rows, details = [], []
    for n in sizes:
        t0 = now()
        coords, codes = umap_like_layout(n, seed=seed)
        gen_s = now() - t0
        t0 = now()
        view = fit_view(coords, 800, 600)
        fit_s = now() - t0
        load = OtherLoad()
        image = render_categories(coords, codes, colors, view)  # warm-up at this size
        assert image.shape == (600, 800, 4) and image.dtype == np.uint8, (image.shape, image.dtype)
        assert image[..., 3].any(), "render produced an empty image"
        times = []
        for _ in range(n_frames):
            t0 = now()
            render_categories(coords, codes, colors, view)
            times.append(now() - t0)
        project_s = statistics.median(times)

        mpl_s, mpl_frames = float("nan"), 0
        if not skip_matplotlib:
            frames = 1 if n >= mpl_big_threshold else mpl_frames_small
            mpl_times = []
            for _ in range(frames):
                gc.collect()
                t0 = now()
                buf = matplotlib_frame(coords, codes, colors, view)
                mpl_times.append(now() - t0)
            assert buf.shape == (600, 800, 4)
            mpl_s, mpl_frames = statistics.median(mpl_times), frames
        naive_s = float("nan")
        if not skip_matplotlib and not skip_per_point:
            gc.collect()
            t0 = now()
            matplotlib_frame(coords, codes, colors, view, per_point=True)
            naive_s = now() - t0
        other = load.stop()
        target = RENDER_TARGETS.get(n)
        status = "n/a" if target is None else ("PASS" if project_s <= target else "FAIL")
        rows.append({"n": n, "project_s": project_s, "project_min": min(times), "project_max": max(times),
                     "frames": n_frames, "mpl_s": mpl_s, "mpl_frames": mpl_frames, "naive_s": naive_s, "other": other, "target": target,
                     "status": status})
        details.append({"n": n, "gen_s": gen_s, "fit_view_s": fit_s})
        print(f"  render {fmt_n(n)} cells: project {project_s:.3f} s/frame "
              f"(min {min(times):.3f}, max {max(times):.3f}), matplotlib {mpl_s:.2f} s/frame "
              f"(per-point colours: {naive_s:.2f} s)", flush=True)
        del coords, codes
        gc.collect()
    details.append({"first_call_s": first_call})
    return rows, details


def render_table(rows: list[dict]) -> str:
    headers = ["n_cells", "project s/frame (median)", "project min-max", "matplotlib s/frame",
               "speed-up (matplotlib / project)", "matplotlib, per-point colours, s/frame (1 frame)",
               "speed-up (per-point / project)", "target", "status", "other processes (cores)"]
    body = []
    for r in rows:
        mpl = "skipped" if r["mpl_frames"] == 0 else f"{r['mpl_s']:.2f} ({r['mpl_frames']} frame"\
            f"{'s, median' if r['mpl_frames'] > 1 else ''})"
        ratio = "—" if r["mpl_frames"] == 0 else f"{r['mpl_s'] / r['project_s']:.1f}x"
        target = "—" if r["target"] is None else f"<= {r['target']:g} s"
        naive = np.isfinite(r["naive_s"])
        body.append([fmt_n(r["n"]), f"{r['project_s']:.3f} ({r['frames']} frames)",
                     f"{r['project_min']:.3f}-{r['project_max']:.3f}", mpl, ratio,
                     f"{r['naive_s']:.2f}" if naive else "skipped",
                     f"{r['naive_s'] / r['project_s']:.1f}x" if naive else "—", target, r["status"], f"{r['other']:.2f}"])
    return md_table(headers, body)


# ----------------------------------------------------------------------------------------------
# Part 2: FAISS
# ----------------------------------------------------------------------------------------------

def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    hits = sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(found, exact))
    return hits / (len(exact) * k)


def bench_faiss(n_cells: int, dim: int, n_queries: int, n_single: int, ef_values: list[int],
                seed: int, hnsw_m: int | None = None, ef_construction: int | None = None,
                batch_repeats: int = 2) -> dict:
    import faiss

    from sccore.neighbors import IndexParams, build_index, search

    out: dict = {"n": n_cells, "dim": dim, "n_queries": n_queries, "n_single": n_single,
                 "threads": faiss.omp_get_max_threads()}
    t0 = now()
    X = pca_like_embedding(n_cells, dim, seed=seed)
    out["gen_s"] = now() - t0
    variance = X.var(axis=0)
    out["variance_ratio"] = variance / variance.sum()

    rng = np.random.default_rng(seed + 1)
    query_ids = rng.choice(n_cells, size=n_queries, replace=False)
    queries = X[query_ids]
    single_ids = query_ids[:n_single]

    params = IndexParams(kind="hnsw")
    out["defaults"] = params
    overrides = {k: v for k, v in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction)) if v is not None}
    if overrides:
        from dataclasses import replace
        params = replace(params, **overrides)
    out["params"] = params
    out["batch_repeats"] = batch_repeats
    print(f"  building HNSW over {fmt_n(n_cells)} x {dim} (M={params.hnsw_m}, "
          f"efConstruction={params.ef_construction}) ...", flush=True)
    load = OtherLoad()
    t0 = now()
    hnsw = build_index(X, params)
    out["build_s"] = now() - t0
    out["build_other"] = load.stop()
    print(f"  HNSW build {out['build_s']:.1f} s", flush=True)

    t0 = now()
    flat = build_index(X, IndexParams(kind="flat"))
    out["flat_build_s"] = now() - t0
    load.start()
    t0 = now()
    exact = search(flat, queries, K)
    out["flat_query_s"] = now() - t0
    out["flat_other"] = load.stop()
    print(f"  exact search of {fmt_n(n_queries)} queries {out['flat_query_s']:.1f} s", flush=True)
    # Queries are indexed cells, so each one's exact list starts with itself; drop it for the estimate.
    out["intrinsic_dim"] = levina_bickel_dimension(exact.distances[:, 1:])
    del flat
    gc.collect()

    sweep = []
    values = sorted(set(ef_values) | {params.ef_search})
    for ef in values:
        hnsw.hnsw.efSearch = int(ef)
        search(hnsw, queries[:100], K)  # warm caches for this setting
        load.start()
        batch_runs = []
        for _ in range(max(1, batch_repeats)):
            t0 = now()
            found = search(hnsw, queries, K)
            batch_runs.append(now() - t0)
        batch_s = min(batch_runs)
        recall = recall_at_k(found.indices, exact.indices)
        single = []
        for i in single_ids:
            q = X[i:i + 1]
            t0 = now()
            search(hnsw, q, K)
            single.append(now() - t0)
        other = load.stop()
        single_ms = 1e3 * statistics.median(single)
        single_p95 = 1e3 * float(np.percentile(single, 95))
        batch_ms = 1e3 * batch_s / n_queries
        ok = batch_ms < QUERY_TARGET_MS and recall >= RECALL_TARGET
        ok_single = single_ms < QUERY_TARGET_MS and recall >= RECALL_TARGET
        sweep.append({"ef": ef, "recall": recall, "batch_ms": batch_ms, "batch_s": batch_s,
                      "single_ms": single_ms, "single_p95": single_p95, "default": ef == params.ef_search, "other": other,
                      "status": "PASS" if ok else "FAIL", "status_single": "PASS" if ok_single else "FAIL"})
        print(f"  efSearch={ef}: recall@{K} {recall:.4f}, batch {batch_ms:.3f} ms/cell, "
              f"single {single_ms:.3f} ms (p95 {single_p95:.3f})", flush=True)
    hnsw.hnsw.efSearch = params.ef_search
    out["sweep"] = sweep
    return out


def faiss_tables(res: dict) -> str:
    p, d = res["params"], res["defaults"]
    default = next(s for s in res["sweep"] if s["default"])
    same = (p.hnsw_m, p.ef_construction) == (d.hnsw_m, d.ef_construction)
    label = "IndexParams defaults" if same else \
        f"overridden; defaults are M={d.hnsw_m}, efConstruction={d.ef_construction}, efSearch={d.ef_search}"
    summary = md_table(
        ["measure", "value"],
        [["embedding", f"{fmt_n(res['n'])} x {res['dim']} float32 (synthetic, PCA-like; see below)"],
         ["index", f"HNSW (M={p.hnsw_m}, efConstruction={p.ef_construction}, efSearch={p.ef_search}; {label})"],
         ["faiss threads", res["threads"]],
         ["HNSW build", f"{res['build_s']:.1f} s (other processes: {res['build_other']:.2f} cores)"],
         ["exact (flat) search, reference", f"{res['flat_query_s']:.1f} s for {fmt_n(res['n_queries'])} queries "
                                            f"({1e3 * res['flat_query_s'] / res['n_queries']:.2f} ms/cell; other processes: "
                                            f"{res['flat_other']:.2f} cores)"],
         [f"batch query latency ({fmt_n(res['n_queries'])} queries, k={K}, best of {res['batch_repeats']})",
          f"{default['batch_ms']:.3f} ms/cell ({default['batch_s']:.2f} s total)"],
         [f"single-query latency ({res['n_single']} one-at-a-time queries)",
          f"{default['single_ms']:.3f} ms median, {default['single_p95']:.3f} ms p95"],
         [f"recall@{K} vs exact", f"{default['recall']:.4f}"],
         [f"target: < {QUERY_TARGET_MS:g} ms/cell at recall@{K} >= {RECALL_TARGET}",
          f"batch: **{default['status']}**, single query: **{default['status_single']}**"]])
    sweep = md_table(
        ["efSearch", f"recall@{K}", "batch ms/cell", "single-query ms (median)", "single-query ms (p95)",
         "status (batch)", "status (single)", "other processes (cores)"],
        [[f"{s['ef']}{' (default)' if s['default'] else ''}", f"{s['recall']:.4f}", f"{s['batch_ms']:.3f}",
          f"{s['single_ms']:.3f}", f"{s['single_p95']:.3f}", s["status"], s["status_single"], f"{s['other']:.2f}"]
         for s in res["sweep"]])
    vr = res["variance_ratio"]
    spectrum = ("Variance share of dimensions 1/2/5/10/20/50: "
                + "/".join(f"{vr[i]:.3f}" for i in (0, 1, 4, 9, 19, len(vr) - 1) if i < len(vr))
                + f"; top 10 dimensions hold {vr[:10].sum():.0%}. Local intrinsic dimension (Levina-Bickel "
                  f"MLE on the exact {K - 1} nearest other cells of the queries): {res['intrinsic_dim']:.1f}.")
    return summary + "\n\n" + sweep + "\n\n" + spectrum


# ----------------------------------------------------------------------------------------------
# Results file
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small smoke run (20k/50k cells to render, 20k x 50 for FAISS); under a minute")
    parser.add_argument("--sizes", type=int, nargs="+", help="cells to render (default 1000000 5000000)")
    parser.add_argument("--frames", type=int, default=5, help="timed frames per size for the project (median)")
    parser.add_argument("--mpl-frames", type=int, default=3,
                        help="timed matplotlib frames below --mpl-single-above cells (median)")
    parser.add_argument("--mpl-single-above", type=int, default=2_000_000,
                        help="time only one matplotlib frame at or above this many cells")
    parser.add_argument("--skip-matplotlib", action="store_true", help="do not time matplotlib")
    parser.add_argument("--skip-per-point", action="store_true",
                        help="do not time the single-scatter, per-point-colour matplotlib variant")
    parser.add_argument("--faiss-cells", type=int, help="cells in the FAISS embedding (default 1000000)")
    parser.add_argument("--dim", type=int, default=50, help="embedding dimensions")
    parser.add_argument("--queries", type=int, help="batch queries (default 10000)")
    parser.add_argument("--single-queries", type=int, default=200, help="one-at-a-time queries")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 96, 128, 192],
                        help="efSearch values to sweep (the IndexParams default is always included)")
    parser.add_argument("--hnsw-m", type=int, help="override IndexParams.hnsw_m (default: the sccore default)")
    parser.add_argument("--ef-construction", type=int,
                        help="override IndexParams.ef_construction (default: the sccore default)")
    parser.add_argument("--batch-repeats", type=int, default=2,
                        help="time each batch search this many times and keep the fastest")
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--skip-faiss", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-results", action="store_true",
                        help=f"write/replace the '{SECTION_HEADING[3:]}' section of benchmarks/RESULTS.md")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "RESULTS.md",
                        help="results file for --write-results")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    args = parser.parse_args(argv)

    sizes = args.sizes or ([20_000, 50_000] if args.quick else [1_000_000, 5_000_000])
    faiss_cells = args.faiss_cells or (20_000 if args.quick else 1_000_000)
    n_queries = min(args.queries or (1_000 if args.quick else 10_000), faiss_cells)
    n_single = min(args.single_queries, n_queries)
    frames = 3 if args.quick and args.frames == 5 else args.frames
    mpl_frames = 1 if args.quick and args.mpl_frames == 3 else args.mpl_frames

    started = _dt.datetime.now().astimezone()
    wall0 = now()
    info = machine_info()
    print("# Rendering and FAISS benchmark" + (" (quick smoke run)" if args.quick else ""), flush=True)
    print(f"command: {command_line()}\n", flush=True)

    failed = False
    render_md = faiss_md = ""
    if not args.skip_render:
        print(f"Rendering {', '.join(fmt_n(n) for n in sizes)} cells ...", flush=True)
        rows, details = bench_render(sizes, frames, mpl_frames, args.mpl_single_above, args.skip_matplotlib,
                                     args.skip_per_point, args.seed)
        failed |= any(r["status"] == "FAIL" for r in rows)
        notes = "; ".join(f"{fmt_n(d['n'])} cells: layout generated in {d['gen_s']:.1f} s, fit_view "
                          f"{d['fit_view_s'] * 1e3:.0f} ms" for d in details if "n" in d)
        render_md = (render_table(rows) + "\n\n"
                     f"First render_categories call in the process (numba compile or cache load, 10k cells): "
                     f"{details[-1]['first_call_s']:.2f} s; project frames are timed after one warm-up frame at "
                     f"each size. Setup, not timed per frame: {notes}.")
    if not args.skip_faiss:
        print(f"\nFAISS on {fmt_n(faiss_cells)} x {args.dim} ...", flush=True)
        res = bench_faiss(faiss_cells, args.dim, n_queries, n_single, args.ef_search, args.seed + 1,
                          args.hnsw_m, args.ef_construction, args.batch_repeats)
        failed |= next(s for s in res["sweep"] if s["default"])["status"] == "FAIL"
        faiss_md = faiss_tables(res)
    total = now() - wall0
    info["load average at end (1/5/15 min)"] = load_average()

    machine_md = md_table(["machine", "value"], [[k, v] for k, v in info.items()])
    section = "\n\n".join(part for part in [
        SECTION_HEADING,
        f"Command (from the repository root): `{command_line()}`",
        f"Date: {started:%Y-%m-%d %H:%M %Z}. Total wall time: {total / 60:.1f} min. "
        f"Machine: {info['usable cores (affinity)']} cores ({info['cpu']}), {info['RAM (GiB)']} GiB RAM; "
        f"faiss threads: {info['faiss.omp_get_max_threads()']}.",
        machine_md,
        "### Rendering: `render_categories` vs matplotlib (800x600 px, 20 categories)" if render_md else "",
        ("Synthetic UMAP-like layout (`umap_like_layout` in the script): 20 Gaussian blobs with Dirichlet(2) "
         "sizes, centres uniform in a 30x30 box, spreads 0.3-2.0, elongation 1-3x at random angles, 30% bent "
         "into arcs; float32 coordinates, int32 codes. Project: `render_categories(coords, codes, "
         "category_colors(20), fit_view(coords, 800, 600))`, whole call timed (DataFrame, aggregation, "
         "shading, spreading; default `spread`). Matplotlib: a new 8x6 in figure at 100 dpi (Agg), one "
         "`scatter(s=1, linewidths=0)` per category (so Agg uses its fast single-colour marker path), "
         "`fig.canvas.draw()` and a copy of `buffer_rgba()`; figure creation included. The per-point column "
         "is the naive alternative: one `scatter` with an RGBA colour per point, one frame." if render_md else ""),
        render_md,
        ("\"other processes (cores)\": the machine is shared; this is the average number of cores that other "
         "processes kept busy while a figure was measured (machine busy CPU time from /proc/stat minus this "
         "process's, over wall time). With 2 cores, anything well above 0 inflates the timings." if (render_md or faiss_md) else ""),
        "### FAISS: HNSW on a PCA-like embedding (k = 15)" if faiss_md else "",
        ("Synthetic PCA-like embedding (`pca_like_embedding` in the script): 30 Gaussian clusters with "
         "Dirichlet(1.5) sizes; cluster centres have per-dimension s.d. 3·exp(-d/8) (separation in the first "
         "~15 dimensions), within-cluster noise has per-dimension s.d. s_c·(d+1)^-0.25 with s_c uniform in "
         "0.6-1.4 per cluster, so variance decays with the dimension index as in PCA output. Queries are "
         f"{fmt_n(n_queries)} distinct random indexed cells (so each finds itself, as in `knn`); recall@{K} is "
         f"the mean fraction of each query's exact {K} neighbours (`IndexParams(kind=\"flat\")`) that HNSW "
         "returns. Batch latency = wall time of one `search()` over all queries / number of queries (all faiss "
         f"threads; fastest of {args.batch_repeats} runs); single-query latency = `search()` on one row at a time, {n_single} rows. efSearch is "
         "changed on the built index with `index.hnsw.efSearch = v`." if faiss_md else ""),
        faiss_md,
    ] if part)

    print("\n" + section.replace(SECTION_HEADING, "## Results", 1), flush=True)
    if args.write_results:
        replace_section(section, args.results)
        print(f"\nUpdated {os.path.relpath(args.results, Path.cwd())}", flush=True)
    return 1 if (failed and args.strict) else 0


if __name__ == "__main__":
    sys.exit(main())
