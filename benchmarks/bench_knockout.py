"""In-silico knockouts on real data: a CRISPR screen, an interferon screen with a goal state, and speed.

1. Papalexi 2021 (``lowmoi_example_data.h5ad``, confident guides): knock out each measured target in
   the control cells and compare with the real knockout cells in the method's own embedding (direction
   cosine; Spearman of predicted vs observed shift size), for the encoder and both baselines.
2. Kang 2018 control vs IFN-beta (``valid.h5ad``): screen stimulated cells with goal = control; the
   ranks of ten interferon-stimulated genes fixed in advance (ISG15, IFI6, IFIT1, IFIT3, MX1, ISG20,
   IFITM3, OAS1, LY6E, IFI44L) among all screened genes, per method.
3. Speed: the ``small`` encoder's screen of 300 cells x 200 genes on this CPU.

The encoders are trained here, label-free, on each dataset's own cells (``small`` config, seed 0).

    python benchmarks/bench_knockout.py [--quick] [--write-results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402

from results import markdown, write_section  # noqa: E402
import pandas as pd  # noqa: E402

from sccore.embed import pca  # noqa: E402
from sccore.encode import embed_cells  # noqa: E402
from sccore.io import open_dataset  # noqa: E402
from sccore.models import TrainConfig, load_model, train  # noqa: E402
from sccore.models import preset  # noqa: E402
from sccore.perturb import (choose_cells, expression_baselines, goal_from_groups, screen, spearman,  # noqa: E402
                            validate_knockouts)
from sccore.pp import default_params, preprocess  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "out"
ISGS = ["ISG15", "IFI6", "IFIT1", "IFIT3", "MX1", "ISG20", "IFITM3", "OAS1", "LY6E", "IFI44L"]
SECTION = "## In-silico knockouts on real data (issue 4)"


def processed_dataset(name: str, where: dict | None = None, cells: int | None = None):
    """Open, optionally subset, preprocess with the dataset's defaults, and add PCA."""
    adata = open_dataset(DATA / name)
    if where:
        adata = adata[choose_cells(adata, where)].copy()
    if cells and adata.n_obs > cells:
        adata = adata[np.sort(np.random.default_rng(0).choice(adata.n_obs, cells, replace=False))].copy()
    params = default_params(adata)
    processed = preprocess(adata, params)
    pca(processed)
    return processed, params


# Overrides of the ``small`` preset for this run (``--set KEY=VALUE``), e.g. objective weights; empty: the preset.
OVERRIDES: dict = {}


def model_folder(name: str) -> Path:
    """The folder of a dataset's model for this run's overrides (so runs of other configurations never mix)."""
    suffix = "".join(f"-{key}{value}" for key, value in sorted(OVERRIDES.items()))
    return OUT / f"{name}{suffix}"


def trained_model(adata, params, folder: Path, epochs: float, fresh: bool = False):
    """Train a ``small`` encoder on the dataset's own cells, without labels; a finished one is reused unless
    ``fresh``, an interrupted one resumed."""
    record = json.loads((folder / "training.json").read_text()) if (folder / "training.json").exists() else {}
    finished = record.get("steps", 0) >= record.get("total_steps", 1)
    if fresh or not finished:
        config = preset("small", vocab_size=3, **OVERRIDES)
        train(adata, folder, config, TrainConfig(epochs=epochs, device="cpu", eval_every=100),
              library_size_key=params.library_size_key, resume=not fresh)
    return load_model(folder)


def crispr_validation(quick: bool, epochs: float, strategies: list[str]) -> tuple[pd.DataFrame, float]:
    adata, params = processed_dataset("lowmoi_example_data.h5ad", {"guide_confident": "True"},
                                      cells=2000 if quick else None)
    started = time.perf_counter()
    model = trained_model(adata, params, model_folder("lowmoi_quick" if quick else "lowmoi_small"), epochs, fresh=quick)
    train_seconds = time.perf_counter() - started
    tables = [expression_baselines(adata, "perturbation", "control", min_cells=5 if quick else 10)]
    encoder_embedding = embed_cells(adata, model, library_size_key=params.library_size_key).astype(np.float64)
    for strategy in strategies:
        table = validate_knockouts(adata, "encoder", encoder_embedding, "perturbation", "control", model=model,
                                   min_cells=5 if quick else 10, library_size_key=params.library_size_key,
                                   strategy=strategy)
        if len(strategies) > 1:
            table["method"] = f"encoder ({strategy})"
        tables.append(table)
    for method in ("pca", "linear"):
        tables.append(validate_knockouts(adata, method, adata.obsm["X_pca"].astype(np.float64), "perturbation",
                                         "control", min_cells=5 if quick else 10,
                                         library_size_key=params.library_size_key))
    return pd.concat(tables, ignore_index=True), train_seconds


def isg_ranks(quick: bool, epochs: float, max_cells: int) -> pd.DataFrame:
    adata, params = processed_dataset("valid.h5ad", cells=600 if quick else None)
    model = trained_model(adata, params, model_folder("valid_quick" if quick else "valid_small"), epochs,
                          fresh=quick)
    stimulated = choose_cells(adata, {"condition": "stimulated"})
    control = choose_cells(adata, {"condition": "control"})
    cells = np.sort(np.random.default_rng(0).choice(stimulated, min(max_cells, len(stimulated)), replace=False))
    rows = []
    for method in ("encoder", "pca", "linear"):
        if method == "encoder":
            embedding = embed_cells(adata, model, library_size_key=params.library_size_key).astype(np.float64)
        else:
            embedding = np.asarray(adata.obsm["X_pca"], dtype=np.float64)
        goal = goal_from_groups(embedding, stimulated, control)
        started = time.perf_counter()
        table = screen(adata, cells, method, model=model if method == "encoder" else None, goal=goal,
                       top=30 if quick else None, library_size_key=params.library_size_key)
        seconds = time.perf_counter() - started
        for score in ("goal_alignment", "goal_cosine_gain"):
            ranked = table.sort_values(score, ascending=False, kind="stable").reset_index(drop=True)
            position = {gene: i + 1 for i, gene in enumerate(ranked["gene"])}
            ranks = [position.get(gene) for gene in ISGS]
            found = [r for r in ranks if r is not None]
            rows.append({"method": method, "score": score, "genes_screened": len(table), "cells": len(cells),
                         "seconds": round(seconds, 1),
                         **{gene: (r if r is not None else "-") for gene, r in zip(ISGS, ranks)},
                         "median_rank": float(np.median(found)) if found else np.nan,
                         "median_percentile": (float(np.median(found)) / len(table) * 100) if found else np.nan})
    return pd.DataFrame(rows)


def screen_speed(quick: bool, epochs: float) -> dict:
    adata, params = processed_dataset("kang_se.h5ad", cells=600 if quick else None)
    model = trained_model(adata, params, model_folder("kang_quick" if quick else "kang_small"), min(epochs, 0.5),
                          fresh=quick)  # speed only
    n_cells, n_genes = (10, 20) if quick else (300, 200)
    cells = np.sort(np.random.default_rng(0).choice(adata.n_obs, n_cells, replace=False))
    started = time.perf_counter()
    table = screen(adata, cells, "encoder", model=model, top=n_genes, n_null=5, library_size_key=params.library_size_key)
    seconds = time.perf_counter() - started
    deletions = int(table["n_cells"].sum())
    return {"cells": n_cells, "genes": n_genes, "deletions": deletions, "null_deletions": n_cells * 5,
            "seconds": round(seconds, 1), "deletions_per_second": round((deletions + n_cells * 5) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data and short training, for a smoke test")
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--max-cells", type=int, default=200, help="stimulated cells screened on valid.h5ad")
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the small preset (e.g. gepc_weight=0); repeatable")
    parser.add_argument("--skip", action="append", default=[], choices=["isg", "speed"], help="leave a part out")
    parser.add_argument("--strategy", action="append", default=[], choices=["tokens", "decoder", "both"],
                        help="the encoder's knockout strategy on the CRISPR screen (repeatable; default tokens)")
    args = parser.parse_args()
    for item in args.set:
        key, value = item.split("=", 1)
        OVERRIDES[key] = type(getattr(preset("small", 3), key))(value)
    epochs = 0.2 if args.quick else args.epochs
    validation, train_seconds = crispr_validation(args.quick, epochs, args.strategy or ["tokens"])
    summary = validation.groupby("method", sort=False).agg(
        mean_cosine=("cosine", "mean"), mean_pearson_delta=("pearson_delta", "mean"),
        mean_rmse_delta=("rmse_delta", "mean")).reset_index()
    summary["spearman"] = [spearman(validation[validation["method"] == m]) for m in summary["method"]]
    embedding_rows = validation.dropna(subset=["cosine"])
    wide = embedding_rows.pivot(index="target", columns="method", values="cosine").reset_index()
    wide_delta = validation.pivot(index="target", columns="method", values="pearson_delta").reset_index()
    print(markdown(wide, 3))
    print(markdown(wide_delta, 3))
    print(markdown(summary, 3))
    if "isg" not in args.skip:
        ranks = isg_ranks(args.quick, epochs, 10 if args.quick else args.max_cells)
        print(markdown(ranks, 1))
    if "speed" not in args.skip:
        speed = screen_speed(args.quick, epochs)
        print(speed)
    if args.write_results and not args.quick and not args.skip:
        command = f".venv/bin/python benchmarks/bench_knockout.py --epochs {args.epochs:g} " \
                  f"--max-cells {args.max_cells} --write-results"
        text = "\n\n".join([
            f"Command: `{command}`", f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
            f"2-core CPU, no GPU. Encoders: `small`, {args.epochs:g} epochs, trained label-free on each dataset "
            f"(lowmoi: {train_seconds:.0f} s).",
            "### CRISPR screen (Papalexi 2021): cosine of predicted vs observed mean shift, per target",
            markdown(wide, 3),
            "Gene space: Pearson correlation of the predicted and the observed mean change in log-expression of the "
            "other genes (the target left out), per target, beside the baselines of Ahlmann-Eltze et al. 2025 "
            "(`no-change`: Pearson undefined; `mean-perturbation`: the mean observed change of the other targets):",
            markdown(wide_delta, 3),
            "Mean direction cosine, mean gene-space Pearson and RMSE, and Spearman correlation (predicted vs "
            "observed shift size) across targets:",
            markdown(summary, 3),
            f"### IFN-beta screen (valid.h5ad): ranks of the ten ISGs among screened genes "
            f"({args.max_cells} stimulated cells, goal = control; rank 1 = strongest)",
            markdown(ranks, 1),
            "### Speed: `small` encoder screen on this CPU",
            markdown(pd.DataFrame([speed]))]) + "\n"
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
