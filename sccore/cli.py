"""The command line: the same work as the dashboard, for servers and scripts.

Every subcommand prints a one-line reason and exits with status 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

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


def _cmd_embed(args: argparse.Namespace) -> int:
    from .embed import PCAParams, pca
    from .io import open_dataset
    from .pp import default_params, preprocess, steps_table

    if args.method not in ("pca", "encoder"):
        raise InputError(f"Unknown --method '{args.method}': use pca or encoder.")
    adata = open_dataset(args.input, library_size_key=args.library_size_key)
    for note in adata.uns["input"]["notes"]:
        print(note, file=sys.stderr)
    if args.method == "encoder":
        return _embed_with_encoder(adata, args)
    preprocess_params = default_params(adata, min_genes=args.min_genes, max_pct_mito=args.max_pct_mito,
                                       min_cells=args.min_cells, n_top_genes=args.n_top_genes,
                                       **({"library_size_key": args.library_size_key} if args.library_size_key else {}))
    processed = preprocess(adata, preprocess_params)
    print(steps_table(processed).to_string(index=False), file=sys.stderr)
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
