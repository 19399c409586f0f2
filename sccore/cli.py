"""The command line: the same work as the dashboard, for servers and scripts.

Every subcommand prints a one-line reason and exits with status 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import InputError


def _progress_bar(description: str):
    """A tqdm bar driven by the ``(fraction, message)`` progress callbacks of :mod:`sccore.workflow`."""
    from tqdm import tqdm

    bar = tqdm(total=100, desc=description, unit="%", file=sys.stderr, leave=False)

    def update(fraction: float, message: str) -> None:
        bar.set_postfix_str(message[:60])
        bar.update(max(0, round(fraction * 100) - bar.n))

    return bar, update


def _write_h5ad(adata, path: str) -> None:
    from .cache import atomic_write

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomic_write(path, adata.write_h5ad, suffix=".h5ad")


def _add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quality control and normalisation")
    group.add_argument("--library-size-key", metavar="KEY",
                       help="obs column with each cell's whole-transcriptome total counts (default: the counts' sum, "
                            "or obs['full_total_umis'] when present)")
    group.add_argument("--min-genes", type=int, default=200, help="keep cells with at least this many detected genes")
    group.add_argument("--max-pct-mito", type=float, default=10.0, help="keep cells with at most this %% mitochondrial counts")
    group.add_argument("--min-cells", type=int, default=3, help="keep genes detected in at least this many cells")
    group.add_argument("--n-top-genes", type=int, default=2000, help="number of highly variable genes")


def _preprocess(adata, args: argparse.Namespace):
    """Filter, normalise and select genes with the command line's QC flags; returns the data and parameters."""
    from .pp import default_params, preprocess, steps_table

    params = default_params(adata, min_genes=args.min_genes, max_pct_mito=args.max_pct_mito, min_cells=args.min_cells,
                            n_top_genes=args.n_top_genes,
                            **({"library_size_key": args.library_size_key} if args.library_size_key else {}))
    processed = preprocess(adata, params)
    print(steps_table(processed).to_string(index=False), file=sys.stderr)
    return processed, params


def _cmd_embed(args: argparse.Namespace) -> int:
    from .embed import PCAParams, pca
    from .io import open_dataset

    if args.method not in ("pca", "encoder"):
        raise InputError(f"Unknown --method '{args.method}': use pca or encoder.")
    adata = open_dataset(args.input, library_size_key=args.library_size_key)
    for note in adata.uns["input"]["notes"]:
        print(note, file=sys.stderr)
    if args.method == "encoder":
        return _embed_with_encoder(adata, args)
    processed, _ = _preprocess(adata, args)
    pca(processed, PCAParams(n_comps=args.n_comps), key_added=args.key_added)
    _write_h5ad(processed, args.output)
    print(f"Wrote obsm['{args.key_added}'] ({processed.n_obs} cells x {processed.obsm[args.key_added].shape[1]}) "
          f"to {args.output}")
    return 0


def _embed_with_encoder(adata, args: argparse.Namespace) -> int:
    from .encode import encoder

    if not args.model:
        raise InputError("--method encoder needs --model DIR (a folder from `python -m sccore train`, "
                         "assets/demo_model, or a Geneformer checkpoint).")
    key = args.key_added if args.key_added != "X_pca" else "X_encoder"
    bar, progress = _progress_bar("embed")
    encoder(adata, args.model, key_added=key, pooling=args.pooling, layer=args.layer, batch_size=args.batch_size,
            device=args.device, library_size_key=args.library_size_key, gene_id_key=args.gene_id_key,
            progress=progress)
    bar.close()
    _write_h5ad(adata, args.output)
    info = adata.uns[key]
    print(f"Wrote obsm['{key}'] ({adata.n_obs} cells x {adata.obsm[key].shape[1]}; {info['genes_matched']} of "
          f"{info['genes_in_dataset']} genes in the model's vocabulary; {info['device']}) to {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .io import open_dataset
    from .models import TrainConfig, preset, train

    adata = open_dataset(args.input, library_size_key=args.library_size_key)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
                         learning_rate=args.learning_rate, seed=args.seed, device=args.device)
    bar, progress = _progress_bar("train")
    model_config = preset(args.config, vocab_size=3, n_bins=args.n_bins, add_cls=args.cls)
    history = train(adata, args.out, model_config, config, library_size_key=args.library_size_key,
                    resume=not args.no_resume, progress=progress)
    bar.close()
    last = history["val_loss"][-1] if history["val_loss"] else float("nan")
    print(f"Wrote the model to {args.out} (validation loss {last:.3f} after {history['step'][-1]} steps)")
    return 0


def _cmd_umap(args: argparse.Namespace) -> int:
    from .io import read_h5ad
    from .neighbors import IndexParams, build_index, knn
    from .umap import UMAPParams, umap

    adata = read_h5ad(args.input)
    if args.use_rep not in adata.obsm:
        raise InputError(f"{Path(args.input).name} has no obsm['{args.use_rep}']. Run `python -m sccore embed` first; "
                         f"obsm holds: {', '.join(adata.obsm.keys()) or 'nothing'}.")
    bar, progress = _progress_bar("umap")
    index_params = IndexParams(kind=args.index)
    embedding = adata.obsm[args.use_rep]
    progress(0.1, f"FAISS index ({index_params.resolved_kind(adata.n_obs)})")
    index = build_index(embedding, index_params)
    progress(0.3, "nearest neighbours")
    neighbors = knn(embedding, args.n_neighbors + 1, index_params, index=index)
    progress(0.5, "UMAP")
    params = replace(UMAPParams(), n_neighbors=args.n_neighbors, min_dist=args.min_dist, random_state=args.seed)
    umap(adata, args.use_rep, neighbors, params, index_params, key_added=args.key_added)
    progress(1.0, "writing")
    bar.close()
    _write_h5ad(adata, args.output)
    print(f"Wrote obsm['{args.key_added}'] ({adata.n_obs} cells) to {args.output}")
    return 0


def _parse_where(items: list[str] | None) -> dict[str, str]:
    where = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--where/--goal takes KEY=VALUE (an obs column and a value), not '{item}'.")
        key, value = item.split("=", 1)
        where[key] = value
    return where


def _open_for_perturbation(args: argparse.Namespace):
    """The processed dataset with PCA, the method, the loaded model (encoder only) and the preprocessing."""
    from .device import resolve_device
    from .embed import PCAParams, pca
    from .io import open_dataset
    from .models import load_model

    processed, params = _preprocess(open_dataset(args.input, library_size_key=args.library_size_key), args)
    pca(processed, PCAParams())
    if args.model in ("pca", "linear"):
        return processed, args.model, None, params
    return processed, "encoder", load_model(args.model, resolve_device(args.device)), params


def _method_embedding(adata, method: str, model, params, cells=None):
    from .encode import embed_cells

    if method != "encoder":
        embedding = np.asarray(adata.obsm["X_pca"], dtype=np.float64)
        return embedding if cells is None else embedding[cells]
    subset = adata if cells is None else adata[cells]
    return embed_cells(subset, model, library_size_key=params.library_size_key).astype(np.float64)


def _goal(adata, method, model, params, start, goal_where):
    from .perturb import choose_cells, goal_from_groups

    if not goal_where:
        return None
    goal_cells = choose_cells(adata, goal_where)
    needed = np.union1d(start, goal_cells)
    embedding = _method_embedding(adata, method, model, params, needed)
    return goal_from_groups(embedding, np.searchsorted(needed, start), np.searchsorted(needed, goal_cells))


def _write_csv(table, path: str) -> None:
    from .cache import atomic_write

    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False), suffix=".csv")


def _cmd_knockout(args: argparse.Namespace) -> int:
    import pandas as pd

    from .perturb import choose_cells, goal_scores, knockout

    adata, method, model, params = _open_for_perturbation(args)
    cells = choose_cells(adata, _parse_where(args.where))
    goal = _goal(adata, method, model, params, cells, _parse_where(args.goal))
    genes = [g.strip() for g in args.genes.split(",") if g.strip()]
    groups = [genes] if args.together else [[g] for g in genes]
    rows = []
    for group in groups:
        result = knockout(adata, group, cells, method, model=model, mode=args.mode,
                          library_size_key=params.library_size_key)
        row = result.summary()
        if goal is not None:
            row.update(goal_scores(result.original, result.perturbed, goal))
        rows.append(row)
        print(f"{row['gene']}: {row['n_cells']} cells, mean cosine {row['mean_cosine']:.6f} "
              f"({row['n_not_expressed']} chosen cells do not express it)", file=sys.stderr)
    _write_csv(pd.DataFrame(rows), args.output)
    print(f"Wrote {len(rows)} row(s) to {args.output}")
    return 0


def _cmd_screen(args: argparse.Namespace) -> int:
    from .perturb import choose_cells, screen

    adata, method, model, params = _open_for_perturbation(args)
    cells = choose_cells(adata, _parse_where(args.where))
    if args.max_cells and len(cells) > args.max_cells:
        cells = np.sort(np.random.default_rng(args.seed).choice(cells, args.max_cells, replace=False))
    goal = _goal(adata, method, model, params, cells, _parse_where(args.goal))
    bar, progress = _progress_bar("screen")
    table = screen(adata, cells, method, model=model, top=args.top, goal=goal, library_size_key=params.library_size_key,
                   seed=args.seed, progress=progress)
    bar.close()
    _write_csv(table, args.output)
    print(f"Screened {len(table)} genes in {len(cells)} cells; wrote {args.output}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .perturb import choose_cells, spearman, validate_knockouts

    adata, method, model, params = _open_for_perturbation(args)
    if args.where:
        adata = adata[choose_cells(adata, _parse_where(args.where))].copy()
    embedding = _method_embedding(adata, method, model, params)
    bar, progress = _progress_bar("validate")
    table = validate_knockouts(adata, method, embedding, args.perturbation_key, args.control, model=model,
                               min_cells=args.min_knockout_cells, library_size_key=params.library_size_key,
                               progress=progress)
    bar.close()
    _write_csv(table, args.output)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"Spearman correlation of predicted_norm vs observed_norm: {spearman(table):.3f}")
    return 0


def _add_perturbation_arguments(parser: argparse.ArgumentParser, model_help: str) -> None:
    parser.add_argument("input", metavar="IN.h5ad", help="raw counts (X, layers['counts'] or .raw)")
    parser.add_argument("--model", required=True, metavar="DIR|pca|linear", help=model_help)
    parser.add_argument("-o", "--output", metavar="OUT.csv", required=True)
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    _add_preprocess_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sccore`` argument parser, one subcommand per task."""
    parser = argparse.ArgumentParser(prog="python -m sccore", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser("embed", help="quality control, normalisation and a cell embedding",
                                description="Filter, normalise and embed cells; writes obsm['X_pca'].")
    embed.add_argument("input", metavar="IN.h5ad", help="raw counts (X, layers['counts'] or .raw)")
    embed.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    embed.add_argument("--method", default="pca", choices=["pca", "encoder"], help="embedding method")
    embed.add_argument("--model", metavar="DIR", help="model folder for --method encoder")
    embed.add_argument("--pooling", default="mean", choices=["mean", "all-layers", "cls"],
                       help="encoder: mean of a layer's outputs (default), mean over all layers, or the cls token")
    embed.add_argument("--layer", type=int, default=-1, help="encoder layer for --pooling mean (-1 = last)")
    embed.add_argument("--batch-size", type=int, default=64)
    embed.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    embed.add_argument("--gene-id-key", metavar="KEY", help="var column with Ensembl IDs to match the model's genes")
    embed.add_argument("--n-comps", type=int, default=50, help="number of principal components")
    embed.add_argument("--key-added", default="X_pca", help="obsm key to write (X_encoder for --method encoder)")
    _add_preprocess_arguments(embed)
    embed.set_defaults(run=_cmd_embed)

    trainer = commands.add_parser("train", help="masked-gene pretraining of a transformer encoder",
                                  description="Pretrain a cell encoder on raw counts; writes a model folder.")
    trainer.add_argument("input", metavar="IN.h5ad")
    trainer.add_argument("--out", metavar="DIR", required=True, help="model folder (resumed if it holds a run)")
    trainer.add_argument("--config", default="small", choices=["small", "v1"], help="model size")
    trainer.add_argument("--epochs", type=float, default=10.0)
    trainer.add_argument("--batch-size", type=int, default=32)
    trainer.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    trainer.add_argument("--learning-rate", type=float, default=1e-3)
    trainer.add_argument("--n-bins", type=int, default=0, help="expression bins per token (0 = rank encoding only)")
    trainer.add_argument("--cls", action="store_true", help="prepend a cls token (enables embed --pooling cls)")
    trainer.add_argument("--library-size-key", metavar="KEY", help="obs column with whole-transcriptome totals")
    trainer.add_argument("--seed", type=int, default=0)
    trainer.add_argument("--device", default="auto")
    trainer.add_argument("--no-resume", action="store_true", help="start afresh even if --out holds a run")
    trainer.set_defaults(run=_cmd_train)

    model_help = "a model folder (the encoder), or the baselines: pca (zero and re-project), linear (co-expression)"
    knock = commands.add_parser("knockout", help="in-silico knockout of genes in chosen cells",
                                description="Knock out genes in silico; one CSV row per gene.")
    _add_perturbation_arguments(knock, model_help)
    knock.add_argument("--genes", required=True, metavar="G1,G2", help="genes to knock out, comma-separated")
    knock.add_argument("--together", action="store_true", help="knock the genes out together (one row)")
    knock.add_argument("--where", action="append", metavar="KEY=VALUE", help="the cells: obs[KEY] == VALUE")
    knock.add_argument("--goal", action="append", metavar="KEY=VALUE", help="a goal state, e.g. condition=control")
    knock.add_argument("--mode", choices=["delete", "overexpress"], default="delete")
    knock.set_defaults(run=_cmd_knockout)

    screener = commands.add_parser("screen", help="knock out every expressed gene and rank the shifts",
                                   description="An in-silico knockout screen; one CSV row per gene.")
    _add_perturbation_arguments(screener, model_help)
    screener.add_argument("--where", action="append", metavar="KEY=VALUE", help="the cells: obs[KEY] == VALUE")
    screener.add_argument("--goal", action="append", metavar="KEY=VALUE", help="a goal state, e.g. condition=control")
    screener.add_argument("--top", type=int, help="screen only the N genes expressed in the most cells")
    screener.add_argument("--max-cells", type=int, default=0, help="screen a random subset of this many cells")
    screener.add_argument("--seed", type=int, default=0)
    screener.set_defaults(run=_cmd_screen)

    validate = commands.add_parser("validate-knockout", help="compare in-silico knockouts with a CRISPR screen",
                                   description="Knock out each measured target in the control cells and compare "
                                               "with the real knockout cells; one CSV row per target.")
    _add_perturbation_arguments(validate, model_help)
    validate.add_argument("--perturbation-key", default="perturbation", help="obs column naming each cell's target")
    validate.add_argument("--control", default="control", help="the value of that column for control cells")
    validate.add_argument("--where", action="append", metavar="KEY=VALUE",
                          help="keep only these cells first, e.g. guide_confident=True")
    validate.add_argument("--min-knockout-cells", type=int, default=10)
    validate.set_defaults(run=_cmd_validate)

    layout = commands.add_parser("umap", help="UMAP of an embedding on FAISS neighbours",
                                 description="UMAP layout of obsm[--use-rep]; writes obsm['X_umap'].")
    layout.add_argument("input", metavar="IN.h5ad")
    layout.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    layout.add_argument("--use-rep", default="X_pca", help="obsm key of the embedding to lay out")
    layout.add_argument("--key-added", default="X_umap", help="obsm key to write")
    layout.add_argument("--n-neighbors", type=int, default=15)
    layout.add_argument("--min-dist", type=float, default=0.3)
    layout.add_argument("--index", choices=["auto", "flat", "hnsw"], default="auto",
                        help="FAISS index: exact below 50,000 cells, HNSW above (auto)")
    layout.add_argument("--seed", type=int, default=0)
    layout.set_defaults(run=_cmd_umap)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; bad input gives a one-line reason and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
