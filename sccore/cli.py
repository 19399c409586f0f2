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


def _preprocess_params(adata, args: argparse.Namespace):
    """The preprocessing parameters of the command line's QC flags (whole-transcriptome obs columns where present)."""
    from .pp import default_params

    return default_params(adata, min_genes=args.min_genes, max_pct_mito=args.max_pct_mito, min_cells=args.min_cells,
                          n_top_genes=args.n_top_genes,
                          **({"library_size_key": args.library_size_key} if args.library_size_key else {}))


def _preprocess(adata, args: argparse.Namespace):
    """Filter, normalise and select genes with the command line's QC flags; returns the data and parameters."""
    from .pp import preprocess, steps_table

    params = _preprocess_params(adata, args)
    processed = preprocess(adata, params)
    print(steps_table(processed).to_string(index=False), file=sys.stderr)
    return processed, params


def _cmd_embed(args: argparse.Namespace) -> int:
    from .embed import PCAParams, pca
    from .io import open_dataset

    if args.method not in ("pca", "encoder"):
        raise InputError(f"Unknown --method '{args.method}': use pca or encoder.")
    if args.method == "encoder" and not args.model:
        raise InputError("--method encoder needs --model DIR (a folder from `python -m sccore train`, "
                         "assets/demo_model, or a Geneformer checkpoint).")
    if args.scheduler:
        return _embed_as_job(args)
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


def _encoder_key(args: argparse.Namespace) -> str:
    """The obsm key of an encoder embedding: ``--key-added``, with ``X_encoder`` in place of its default ``X_pca``."""
    return args.key_added if args.key_added != "X_pca" else "X_encoder"


def _embed_with_encoder(adata, args: argparse.Namespace) -> int:
    from .encode import encoder

    key = _encoder_key(args)
    bar, progress = _progress_bar("embed")
    encoder(adata, args.model, key_added=key, pooling=args.pooling, layer=args.layer, batch_size=args.batch_size,
            device=args.device, library_size_key=args.library_size_key, gene_id_key=args.gene_id_key,
            progress=progress)
    bar.close()
    _write_h5ad(adata, args.output)
    _print_encoder_summary(adata, key, args.output)
    return 0


def _print_encoder_summary(adata, key: str, output: str) -> None:
    info = adata.uns[key]
    print(f"Wrote obsm['{key}'] ({adata.n_obs} cells x {adata.obsm[key].shape[1]}; {info['genes_matched']} of "
          f"{info['genes_in_dataset']} genes in the model's vocabulary; {info['device']}) to {output}")


def _embed_as_job(args: argparse.Namespace) -> int:
    """``embed --method encoder --scheduler``: the embedding as an ``embed`` job, copied to ``-o``."""
    import anndata as ad

    if args.method != "encoder":
        raise InputError("--scheduler runs the encoder's embedding as a job (--method encoder --model DIR); a PCA "
                         "takes seconds to minutes here: drop --scheduler.")
    key = _encoder_key(args)
    record = _submit_job("embed", {"input": args.input, "model": args.model, "pooling": args.pooling,
                                   "layer": args.layer, "batch_size": args.batch_size, "device": args.device,
                                   "library_size_key": args.library_size_key, "gene_id_key": args.gene_id_key,
                                   "key_added": key}, args.scheduler)
    _copy_result(record.result, args.output, ".h5ad")
    adata = ad.read_h5ad(args.output, backed="r")
    for note in adata.uns["input"]["notes"]:
        print(note, file=sys.stderr)
    _print_encoder_summary(adata, key, args.output)
    adata.file.close()
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .io import open_dataset
    from .models import TrainConfig, preset, train

    if args.scheduler:
        return _train_as_job(args)
    adata = open_dataset(args.input, library_size_key=args.library_size_key)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, grad_accum=args.grad_accum,
                         learning_rate=args.learning_rate, seed=args.seed, device=args.device)
    bar, progress = _progress_bar("train")
    model_config = preset(args.config, vocab_size=3, n_bins=args.n_bins, add_cls=args.cls)
    history = train(adata, args.out, model_config, config, library_size_key=args.library_size_key,
                    resume=not args.no_resume, progress=progress)
    bar.close()
    _print_training_summary(history, args.out)
    return 0


def _print_training_summary(history: dict, out: str) -> None:
    last = history["val_loss"][-1] if history["val_loss"] else float("nan")
    print(f"Wrote the model to {out} (validation loss {last:.3f} after {history['step'][-1]} steps)")


def _train_as_job(args: argparse.Namespace) -> int:
    """``train --scheduler``: a ``train`` job that trains into (and resumes) ``--out``."""
    import json

    if args.no_resume:
        raise InputError("A training job always resumes its --out folder (so that a job whose worker stopped goes "
                         "on): to start afresh, delete that folder or choose another --out, or drop --scheduler.")
    record = _submit_job("train", {"input": args.input, "out": args.out, "config": args.config, "epochs": args.epochs,
                                   "batch_size": args.batch_size, "grad_accum": args.grad_accum,
                                   "learning_rate": args.learning_rate, "n_bins": args.n_bins, "cls": args.cls,
                                   "library_size_key": args.library_size_key, "seed": args.seed,
                                   "device": args.device}, args.scheduler)
    training = json.loads((Path(record.result) / "training.json").read_text(encoding="utf-8"))
    _print_training_summary(training["history"], args.out)
    return 0


def _cmd_add_user(args: argparse.Namespace) -> int:
    from getpass import getpass

    from .auth import add_user
    from .settings import load_settings

    path = args.password_file or load_settings().auth.password_file
    if not path:
        raise InputError("No password file: pass --password-file FILE or set auth.password_file in the settings file.")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass(f"Password for {args.user}: ")
        if getpass("The same password again: ") != password:
            raise InputError("The two passwords differ; run the command again.")
    changed = add_user(path, args.user, password)
    print(f"{'Changed the password of' if changed else 'Added'} {args.user} in {path}")
    return 0


def _cmd_umap(args: argparse.Namespace) -> int:
    from .io import read_h5ad
    from .neighbors import IndexParams, build_index, knn
    from .umap import UMAPParams, umap

    if args.scheduler:
        return _umap_as_job(args)
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


def _umap_as_job(args: argparse.Namespace) -> int:
    """``umap --scheduler``: the layout as a ``umap`` job, copied to ``-o``."""
    import anndata as ad

    record = _submit_job("umap", {"input": args.input, "use_rep": args.use_rep, "key_added": args.key_added,
                                  "n_neighbors": args.n_neighbors, "min_dist": args.min_dist, "index": args.index,
                                  "seed": args.seed}, args.scheduler)
    _copy_result(record.result, args.output, ".h5ad")
    adata = ad.read_h5ad(args.output, backed="r")
    print(f"Wrote obsm['{args.key_added}'] ({adata.n_obs} cells) to {args.output}")
    adata.file.close()
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


def _write_csv(table, path: str) -> None:
    from .cache import atomic_write

    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False), suffix=".csv")


def _cmd_knockout(args: argparse.Namespace) -> int:
    import pandas as pd

    from .perturb import choose_cells, goal_for, goal_scores, knockout

    adata, method, model, params = _open_for_perturbation(args)
    cells = choose_cells(adata, _parse_where(args.where))
    goal = goal_for(adata, method, model, cells, _parse_where(args.goal), params.library_size_key)
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


def _at_most(cells: np.ndarray, max_cells: int, seed: int) -> np.ndarray:
    """``cells``, or a fixed random sample of ``max_cells`` of them (sorted) when there are more (0: no limit)."""
    if max_cells and len(cells) > max_cells:
        return np.sort(np.random.default_rng(seed).choice(cells, max_cells, replace=False))
    return cells


def _cmd_screen(args: argparse.Namespace) -> int:
    from .perturb import choose_cells, goal_for, screen

    if args.scheduler:
        return _screen_as_job(args)
    adata, method, model, params = _open_for_perturbation(args)
    cells = _at_most(choose_cells(adata, _parse_where(args.where)), args.max_cells, args.seed)
    goal = goal_for(adata, method, model, cells, _parse_where(args.goal), params.library_size_key)
    bar, progress = _progress_bar("screen")
    table = screen(adata, cells, method, model=model, top=args.top, goal=goal, library_size_key=params.library_size_key,
                   seed=args.seed, estimate=args.estimate, exact_top=args.exact_top, progress=progress)
    bar.close()
    _write_csv(table, args.output)
    print(f"Screened {len(table)} genes in {len(cells)} cells; wrote {args.output}")
    return 0


def _screen_as_job(args: argparse.Namespace) -> int:
    """``screen --scheduler``: the screen as a ``screen`` job, copied to ``-o``."""
    import pandas as pd

    record = _submit_job("screen", {"input": args.input, "model": args.model, "device": args.device,
                                    "where": _parse_where(args.where), "goal": _parse_where(args.goal),
                                    "top": args.top, "max_cells": args.max_cells, "seed": args.seed,
                                    "estimate": args.estimate, "exact_top": args.exact_top,
                                    "library_size_key": args.library_size_key, "min_genes": args.min_genes,
                                    "max_pct_mito": args.max_pct_mito, "min_cells": args.min_cells,
                                    "n_top_genes": args.n_top_genes}, args.scheduler)
    _copy_result(record.result, args.output, ".csv")
    print(f"Screened {len(pd.read_csv(args.output))} genes; wrote {args.output}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .perturb import choose_cells, method_embedding, spearman, validate_knockouts

    adata, method, model, params = _open_for_perturbation(args)
    if args.where:
        adata = adata[choose_cells(adata, _parse_where(args.where))].copy()
    embedding = method_embedding(adata, method, model, params.library_size_key)
    bar, progress = _progress_bar("validate")
    table = validate_knockouts(adata, method, embedding, args.perturbation_key, args.control, model=model,
                               min_cells=args.min_knockout_cells, library_size_key=params.library_size_key,
                               progress=progress)
    bar.close()
    _write_csv(table, args.output)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"Spearman correlation of predicted_norm vs observed_norm: {spearman(table):.3f}")
    return 0


def _transfer_reference(stored, args: argparse.Namespace, model, progress):
    """The reference with ``obsm[--use-rep]``: ``stored`` (the file as read) when it can be reused, else computed
    here (PCA through the project's preprocessing, or the encoder in ``--model``)."""
    from .embed import PCAParams, pca
    from .encode import encoder
    from .io import open_dataset
    from .transfer import has_pca_projection

    if args.use_rep == "X_pca":
        if has_pca_projection(stored):
            return stored
        print("The reference holds no sccore PCA with loadings: computing one (quality control, normalisation, "
              "PCA).", file=sys.stderr)
        reference, _ = _preprocess(open_dataset(args.reference, library_size_key=args.library_size_key), args)
        pca(reference, PCAParams(n_comps=args.n_comps))
        return reference
    embedded_with = stored.uns.get(args.use_rep, {}).get("model")
    if args.use_rep in stored.obsm and embedded_with and Path(embedded_with).resolve() == Path(model.path).resolve():
        return stored
    print(f"Embedding the reference with {model.path}.", file=sys.stderr)
    reference = open_dataset(args.reference, library_size_key=args.library_size_key)
    encoder(reference, model, key_added=args.use_rep, device=args.device, library_size_key=args.library_size_key,
            gene_id_key=args.gene_id_key, progress=lambda f, m: progress(0.4 * f, f"reference: {m}"))
    return reference


def _transfer_model(stored, args: argparse.Namespace):
    """The loaded encoder for ``--use-rep X_encoder``: ``--model``, else the one the reference ``stored`` names."""
    from .device import resolve_device
    from .models import load_model

    if args.use_rep != "X_encoder":
        return None
    folder = args.model or stored.uns.get("X_encoder", {}).get("model")
    if not folder or not Path(folder).is_dir():
        raise InputError("--use-rep X_encoder needs --model DIR: the encoder folder that embeds both the reference "
                         "and the query.")
    return load_model(folder, resolve_device(args.device))


def _cmd_transfer(args: argparse.Namespace) -> int:
    from .io import open_dataset, read_h5ad
    from .transfer import UNASSIGNED, map_query, reference_labels, score, transfer

    stored = read_h5ad(args.reference)
    reference_labels(stored.obs, args.label_key)  # bad keys fail before anything is computed
    query = open_dataset(args.query)
    true_key = args.query_label_key or (args.label_key if args.label_key in query.obs.columns else None)
    if true_key and true_key not in query.obs.columns:
        raise InputError(f"The query's obs has no column '{true_key}' to score against; columns: "
                         f"{', '.join(map(str, query.obs.columns))}.")
    model = _transfer_model(stored, args)
    bar, progress = _progress_bar("transfer")
    try:
        reference = _transfer_reference(stored, args, model, progress)
        progress(0.4, "mapping the query onto the reference")
        report = map_query(reference, query, args.use_rep, model=model, gene_id_key=args.gene_id_key,
                           progress=lambda f, m: progress(0.4 + 0.5 * f, f"query: {m}"))
        progress(0.9, f"voting ({args.k} nearest reference cells)")
        result = transfer(reference, query, args.label_key, args.use_rep, args.key_added, args.k, args.threshold)
    finally:
        bar.close()
    print(f"{report['genes_matched']:,} of the {report['genes_used']:,} genes the reference's {args.use_rep} uses "
          f"matched by {report['matched_by']}; query library sizes from {report['library_size']}.", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if true_key:
        scores = score(query.obs[true_key], query.obs[args.key_added])
        print(f"Against the query's obs['{true_key}']: accuracy {scores['accuracy']:.3f}, macro F1 "
              f"{scores['macro_f1']:.3f} ({scores['n_unassigned']:,} unassigned counted as wrong)")
    _write_h5ad(query, args.output)
    n_unassigned = int((query.obs[args.key_added] == UNASSIGNED).sum())
    print(f"Wrote obs['{args.key_added}'] and obs['{args.key_added}_confidence'] for {query.n_obs:,} query cells "
          f"({n_unassigned:,} unassigned below confidence {args.threshold:g}) to {args.output}")
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from .io import read_h5ad
    from .metrics import MetricsParams, benchmark_embeddings, check_inputs
    from .neighbors import IndexParams

    embeddings = [key.strip() for key in args.embeddings.split(",") if key.strip()]
    if args.scheduler:
        return _metrics_as_job(args, embeddings)
    adata = read_h5ad(args.input)
    check_inputs(adata, args.label_key, args.batch_key, embeddings, args.unintegrated_key)  # before the progress bar
    params = MetricsParams(max_silhouette_cells=args.max_silhouette_cells, seed=args.seed,
                           index=IndexParams(kind=args.index))
    bar, progress = _progress_bar("metrics")
    try:
        table = benchmark_embeddings(adata, args.label_key, args.batch_key, embeddings, args.unintegrated_key, params,
                                     progress=progress)
    finally:
        bar.close()
    for note in table.attrs["notes"]:
        print(f"note: {note}", file=sys.stderr)
    _write_csv(table.reset_index(), args.output)
    print(table.T.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"Wrote {len(table)} row(s) ({table.attrs['n_cells']:,} cells) to {args.output}")
    return 0


def _metrics_as_job(args: argparse.Namespace, embeddings: list[str]) -> int:
    """``metrics --scheduler``: the scores as a ``metrics`` job, copied to ``-o``."""
    import pandas as pd

    record = _submit_job("metrics", {"input": args.input, "label_key": args.label_key, "batch_key": args.batch_key,
                                     "embeddings": embeddings, "unintegrated_key": args.unintegrated_key,
                                     "max_silhouette_cells": args.max_silhouette_cells, "seed": args.seed,
                                     "index": args.index}, args.scheduler)
    _copy_result(record.result, args.output, ".csv")
    table = pd.read_csv(args.output, index_col=0)
    print(table.T.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"Wrote {len(table)} row(s) to {args.output}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from .device import resolve_device
    from .io import open_dataset
    from .models import load_model
    from .perturb import choose_cells, goal_for, goal_scores, knockout, screen
    from .pp import qc_metrics
    from .report import ScreenReport, describe_cells, main_annotation, write_report
    from .workflow import PipelineParams, analyse

    raw = open_dataset(args.input, library_size_key=args.library_size_key)
    main_annotation(raw, args.color_by)  # a bad --color-by fails before anything is computed
    genes = [gene.strip() for gene in (args.knockout or "").split(",") if gene.strip()]
    where, goal_where = _parse_where(args.where), _parse_where(args.goal)
    params = PipelineParams(preprocess=_preprocess_params(raw, args), encoder_model=args.model or "",
                            encoder_device=args.device)
    bar, progress = _progress_bar("report")
    try:
        analysis = analyse(raw, params, progress=lambda fraction, message: progress(0.4 * fraction, message))
        adata = analysis.adata
        model = load_model(args.model, resolve_device(args.device)) if args.model else None
        methods = (["encoder"] if model is not None else []) + ["pca", "linear"]
        population = choose_cells(adata, where)
        cells = _at_most(population, args.max_cells, args.seed)
        about = describe_cells(where, len(cells), len(population))
        goals = {method: goal_for(adata, method, model, cells, goal_where, params.preprocess.library_size_key)
                 for method in methods}
        rows = []
        for position, gene in enumerate(genes):
            progress(0.4 + 0.1 * position / len(genes), f"knocking out {gene}")
            for method in methods:
                result = knockout(adata, [gene], cells, method, model=model,
                                  library_size_key=params.preprocess.library_size_key)
                rows.append({**result.summary(), "cells": about, "mode": "delete",
                             **(goal_scores(result.original, result.perturbed, goals[method]) if goal_where else {})})
        screens = []
        if args.screen:
            tables = {}
            for position, method in enumerate(methods):
                def report(fraction: float, message: str, position: int = position, method: str = method) -> None:
                    progress(0.5 + 0.45 * (position + fraction) / len(methods), f"screen, {method}: {message}")

                tables[method] = screen(adata, cells, method, model=model, top=args.top, goal=goals[method],
                                        library_size_key=params.preprocess.library_size_key, seed=args.seed,
                                        progress=report)
            goal_text = ", ".join(f"{key} = {value}" for key, value in goal_where.items())
            screens.append(ScreenReport(about, tables, goal=goal_text))
        progress(0.95, "writing the report")
        size = write_report(args.output, analysis, color_by=args.color_by, qc=qc_metrics(raw, params.preprocess),
                            knockouts=pd.DataFrame(rows) if rows else None, screens=screens, top=args.rows)
    finally:
        bar.close()
    print(f"Wrote the report ({size / 1024:,.0f} KB; {adata.n_obs:,} cells, {len(rows)} knockout row(s), "
          f"{len(screens)} screen(s)) to {args.output}")
    return 0


def _job_params(kind: str, items: list[str] | None) -> dict:
    """``--param KEY=VALUE`` options as job parameters: JSON values (numbers, true, {...}) or text; a
    comma-separated text for a list parameter becomes a list."""
    import json

    from .jobs import PARAMETERS

    params = {}
    for item in items or []:
        key, separator, text = item.partition("=")
        if not separator:
            raise InputError(f"--param takes KEY=VALUE, not '{item}'.")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if isinstance(PARAMETERS.get(kind, {}).get(key), list) and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        params[key] = value
    return params


def _submit_job(kind: str, params: dict, scheduler: str, user: str | None = None, wait: bool = True,
                announce=None):
    """Submit a ``kind`` job to ``scheduler`` (``""``: a local cluster that lives as long as this command), announce
    its id (default: on stderr), and wait for it with a progress bar. Returns its final record (``None`` with
    ``wait`` off); :class:`InputError` when it failed or was cancelled."""
    from .jobs import JobStore, checked_params, close, connect, submit, wait as wait_for
    from .settings import LOCAL_USER, load_settings

    user = user or LOCAL_USER
    store = JobStore(load_settings().cache_dir)
    params = checked_params(kind, params)
    client = connect(scheduler)
    try:
        job_id = submit(client, store, user, kind, params)
        if announce is None:
            print(f"Submitted {kind} job {job_id} to {scheduler}; `python -m sccore jobs` lists it.", file=sys.stderr)
        else:
            announce(job_id)
        if not wait:
            return None
        bar, progress = _progress_bar(kind)
        try:
            record = wait_for(store, user, job_id, progress)
        finally:
            bar.close()
    finally:
        close(client)
    if record.status != "finished":
        raise InputError(f"Job {job_id} {record.status}{': ' + record.error if record.error else ''}")
    return record


def _copy_result(result: str, output: str, suffix: str) -> None:
    """Copy a job's result file to ``output`` (atomically)."""
    import shutil

    from .cache import atomic_write

    atomic_write(output, lambda tmp: shutil.copyfile(result, tmp), suffix=suffix)


def _cmd_submit(args: argparse.Namespace) -> int:
    from .settings import load_settings

    scheduler = args.scheduler if args.scheduler is not None else load_settings().scheduler_address
    if not args.wait and not scheduler:
        print("No scheduler: the job runs on a local cluster that lives as long as this command, so it waits.",
              file=sys.stderr)
    record = _submit_job(args.kind, {"input": args.input, **_job_params(args.kind, args.param)}, scheduler, args.user,
                         wait=args.wait or not scheduler, announce=lambda job_id: print(job_id, flush=True))
    if record is not None:
        print(f"{record.result}{' (found in the cache)' if record.cached else ''}")
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    import time

    from .jobs import JobStore, cancel, list_jobs
    from .settings import load_settings

    store = JobStore(load_settings().cache_dir)
    if args.cancel:
        record = cancel(store, args.user, args.cancel)
        print(f"{record.id}: {record.status if record.done else 'cancel requested'}")
        return 0
    for record in list_jobs(store, args.user):
        submitted = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.submitted))
        duration = f"{record.duration:.1f}s" if record.duration is not None else "-"
        outcome = record.error or record.result or f"{record.progress:.0%} {record.message}"
        print(f"{record.id}  {record.kind:<8} {record.status:<9} {submitted}  {duration:>8}  {outcome}")
    return 0


def _cmd_embed_partitions(args: argparse.Namespace) -> int:
    from .jobs import close, connect
    from .partitions import embed_partitions
    from .settings import load_settings

    scheduler = args.scheduler if args.scheduler is not None else load_settings().scheduler_address
    client = connect(scheduler, n_workers=args.workers)
    bar, progress = _progress_bar("embed-partitions")
    try:
        result = embed_partitions(args.input, args.model, args.output, client, partition_cells=args.partition_cells,
                                  pooling=args.pooling, layer=args.layer, batch_size=args.batch_size,
                                  library_size_key=args.library_size_key, gene_id_key=args.gene_id_key,
                                  device=args.device, torch_threads=args.torch_threads, overwrite=args.overwrite,
                                  progress=progress)
    finally:
        bar.close()
        close(client)
    print(f"Wrote {result.path} ({result.n_cells:,} cells; {result.computed} of {result.n_partitions} partitions "
          "embedded now, the others found finished)")
    return 0


def _cmd_atlas(args: argparse.Namespace) -> int:
    from .atlas import atlas_params, build_atlas, open_atlas

    if args.scheduler:
        if args.overwrite:
            raise InputError("--overwrite is not offered with --scheduler: delete the folder or choose another -o.")
        params = {"input": args.input, "chunk_cells": args.chunk_cells, "min_genes": args.min_genes,
                  "n_top_genes": args.n_top_genes, "recall": args.recall, "out": args.output}
        atlas = open_atlas(_submit_job("atlas", params, args.scheduler).result)
        print(f"Wrote the atlas of {atlas.adata.n_obs:,} cells x {atlas.adata.n_vars:,} genes to {atlas.folder}")
        return 0
    params = atlas_params(args.input, args.chunk_cells, args.recall, min_genes=args.min_genes,
                          n_top_genes=args.n_top_genes)
    bar, progress = _progress_bar("atlas")
    try:
        atlas = build_atlas(args.input, args.output, params, progress=progress, overwrite=args.overwrite)
    finally:
        bar.close()
    stages = atlas.manifest["stages"]
    print(f"Wrote the atlas of {atlas.adata.n_obs:,} cells x {atlas.adata.n_vars:,} genes to {atlas.folder} "
          f"(first frame: {atlas.folder / 'first_frame.png'}; index recall@{params.k} {stages['index']['recall']:.3f}; "
          f"{sum(stage['seconds'] for stage in stages.values()):.0f} s over all runs)")
    return 0


def _add_perturbation_arguments(parser: argparse.ArgumentParser, model_help: str) -> None:
    parser.add_argument("input", metavar="IN.h5ad", help="raw counts (X, layers['counts'] or .raw)")
    parser.add_argument("--model", required=True, metavar="DIR|pca|linear", help=model_help)
    parser.add_argument("-o", "--output", metavar="OUT.csv", required=True)
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    _add_preprocess_arguments(parser)


def _add_scheduler_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the work as a job on this Dask scheduler (e.g. tcp://host:8786), wait for it with "
                             "a progress bar, then write the same output; its workers must see the same files")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sccore`` argument parser, one subcommand per task."""
    parser = argparse.ArgumentParser(prog="python -m sccore", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch and FAISS (default: all cores), e.g. on a shared machine")
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
    _add_scheduler_argument(embed)
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
    _add_scheduler_argument(trainer)
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
    screener.add_argument("--estimate", choices=["exact", "first-order"], default="exact",
                          help="encoder only: 'first-order' ranks all genes from gradients, then deletes the best "
                               "--exact-top genes exactly (fast with long inputs)")
    screener.add_argument("--exact-top", type=int, default=50, help="genes recomputed exactly after a first-order pass")
    _add_scheduler_argument(screener)
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
    _add_scheduler_argument(layout)
    layout.set_defaults(run=_cmd_umap)

    mapper = commands.add_parser("transfer", help="label transfer from a reference dataset to query cells",
                                 description="Embed the query's raw counts into the reference's space (its PCA "
                                             "loadings or encoder, never refitted on the query) and give each query "
                                             "cell the similarity-weighted vote of its k nearest reference cells; "
                                             "writes obs['predicted_cell_type'] and "
                                             "obs['predicted_cell_type_confidence'].")
    mapper.add_argument("--reference", metavar="REF.h5ad", required=True,
                        help="labelled cells: raw counts, or a file from `python -m sccore embed` (its PCA is reused)")
    mapper.add_argument("--query", metavar="Q.h5ad", required=True, help="raw counts of the cells to label")
    mapper.add_argument("--label-key", required=True, help="the reference's obs column to transfer, e.g. cell_type")
    mapper.add_argument("--use-rep", default="X_pca", choices=["X_pca", "X_encoder"], help="the embedding to vote in")
    mapper.add_argument("--model", metavar="DIR", help="encoder folder for --use-rep X_encoder (default: the one "
                                                       "that embedded the reference)")
    mapper.add_argument("-o", "--output", metavar="OUT.h5ad", required=True, help="the query with its new labels")
    mapper.add_argument("--key-added", default="predicted_cell_type", help="obs column to write (and _confidence)")
    mapper.add_argument("--k", type=int, default=15, help="reference neighbours that vote")
    mapper.add_argument("--threshold", type=float, default=0.5,
                        help="label 'unassigned' below this confidence (the winning label's share of the vote)")
    mapper.add_argument("--gene-id-key", metavar="KEY",
                        help="var column with Ensembl IDs, in both files, to match genes by instead of symbols")
    mapper.add_argument("--query-label-key", metavar="KEY",
                        help="the query's obs column with true labels, to print accuracy and macro F1 (default: "
                             "--label-key when the query has it)")
    mapper.add_argument("--n-comps", type=int, default=50, help="principal components when the reference needs a PCA")
    mapper.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    _add_preprocess_arguments(mapper)
    mapper.set_defaults(run=_cmd_transfer)

    scorer = commands.add_parser("metrics", help="scIB integration metrics of embeddings (bio conservation, batch "
                                                 "correction)",
                                 description="Score each embedding's bio conservation and batch correction (scIB, as "
                                             "scib-metrics computes them, on FAISS neighbours); one CSV row per "
                                             "embedding, one column per metric, then bio_conservation, "
                                             "batch_correction and total = 0.6 bio + 0.4 batch.")
    scorer.add_argument("input", metavar="IN.h5ad", help="a dataset with the embeddings in obsm (e.g. from `embed`)")
    scorer.add_argument("--label-key", required=True, help="obs column with the cell types, e.g. cell_type")
    scorer.add_argument("--batch-key", required=True, help="obs column with the batches, e.g. batch")
    scorer.add_argument("--embeddings", required=True, metavar="X_pca,X_encoder",
                        help="obsm keys to score, comma-separated")
    scorer.add_argument("-o", "--output", metavar="OUT.csv", required=True)
    scorer.add_argument("--unintegrated-key", default="X_pca",
                        help="obsm key of the unintegrated embedding that pcr_comparison compares with")
    scorer.add_argument("--max-silhouette-cells", type=int, default=10_000,
                        help="above this many cells, silhouettes are averaged over a label-stratified sample")
    scorer.add_argument("--index", choices=["auto", "flat", "hnsw"], default="auto",
                        help="FAISS index: exact below 50,000 cells, HNSW above (auto)")
    scorer.add_argument("--seed", type=int, default=0, help="seed of KMeans and the silhouette sample")
    _add_scheduler_argument(scorer)
    scorer.set_defaults(run=_cmd_metrics)

    reporter = commands.add_parser("report", help="a self-contained HTML report of the analysis",
                                   description="Run the pipeline (quality control, PCA, the encoder with --model, "
                                               "FAISS neighbours, UMAP), optionally knockouts and a screen beside "
                                               "the PCA and linear baselines, and write one HTML file with the "
                                               "dataset, parameters, figures, ranked tables, the baseline comparison "
                                               "and software versions. It opens offline in any browser.")
    reporter.add_argument("input", metavar="IN.h5ad", help="raw counts (X, layers['counts'] or .raw)")
    reporter.add_argument("-o", "--output", metavar="REPORT.html", required=True)
    reporter.add_argument("--model", metavar="DIR", help="an encoder folder: adds its embedding, UMAP and knockouts "
                                                         "(default: PCA and the baselines only)")
    reporter.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    reporter.add_argument("--color-by", metavar="KEY", help="obs annotation to colour the layouts and score the "
                                                            "embeddings by (default: cell_type, batch... if present)")
    reporter.add_argument("--knockout", metavar="G1,G2", help="genes to knock out one at a time, by every method")
    reporter.add_argument("--where", action="append", metavar="KEY=VALUE", help="the cells: obs[KEY] == VALUE")
    reporter.add_argument("--screen", action="store_true",
                          help="screen the most often expressed genes, by every method")
    reporter.add_argument("--top", type=int, default=100, help="genes to screen: the N expressed in the most cells")
    reporter.add_argument("--goal", action="append", metavar="KEY=VALUE", help="a goal state, e.g. condition=control")
    reporter.add_argument("--max-cells", type=int, default=0, help="knock out and screen a random subset of this many "
                                                                   "cells")
    reporter.add_argument("--seed", type=int, default=0)
    reporter.add_argument("--rows", type=int, default=20, help="rows shown of each ranked table")
    _add_preprocess_arguments(reporter)
    reporter.set_defaults(run=_cmd_report)

    from .jobs import KINDS
    from .settings import LOCAL_USER

    submitter = commands.add_parser("submit",
                                    help="run training, embedding, UMAP, a screen, metrics or an atlas as a Dask job",
                                    description="Submit a background job to a Dask cluster (--scheduler, else "
                                                "scheduler_address in the settings, else a local cluster) and print "
                                                "its id; the result goes to the cache folder, under a key made from "
                                                "the input's content and the parameters.")
    submitter.add_argument("kind", choices=KINDS)
    submitter.add_argument("input", metavar="IN.h5ad")
    submitter.add_argument("--param", action="append", metavar="KEY=VALUE",
                           help="a job parameter (sccore.jobs.PARAMETERS), e.g. model=pca, top=100, epochs=2, "
                                'where=\'{"cell_type": "B"}\', embeddings=X_pca,X_encoder')
    submitter.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, e.g. tcp://host:8786")
    submitter.add_argument("--wait", action="store_true", help="wait for the job with a progress bar")
    submitter.add_argument("--user", default=LOCAL_USER, help="whose job it is (default: the app's local user)")
    submitter.set_defaults(run=_cmd_submit)

    lister = commands.add_parser("jobs", help="list (or cancel) background jobs",
                                 description="One line per job, newest first: id, kind, status, submitted, "
                                             "duration, and the result, the error or the progress.")
    lister.add_argument("--user", default=LOCAL_USER, help="whose jobs (default: the app's local user)")
    lister.add_argument("--cancel", metavar="JOB_ID", help="ask this job to stop")
    lister.set_defaults(run=_cmd_jobs)

    users = commands.add_parser("add-user", help="add a user to the password file for login (or change a password)",
                                description="Add a user to the password file (user:salt:scrypt-hash lines) that "
                                            "auth.mode = 'password' checks logins against, or change their "
                                            "password. Prompts for the password twice.")
    users.add_argument("user", help="the user name: letters, digits and @ . _ -")
    users.add_argument("--password-file", metavar="FILE", help="default: auth.password_file in the settings")
    users.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input instead of prompting")
    users.set_defaults(run=_cmd_add_user)

    from .partitions import PARTITION_CELLS

    partitioner = commands.add_parser(
        "embed-partitions", help="encoder embedding of a large file as Dask tasks over partitions, resumable",
        description="Embed every cell of IN.h5ad with an encoder, one Dask task per partition of consecutive cells "
                    "(each reads only its rows), into OUT_DIR/embedding.npy (cells x d_model, float32). Finished "
                    "partitions stay in OUT_DIR: the same command run again after an interruption resumes where it "
                    "stopped.")
    partitioner.add_argument("input", metavar="IN.h5ad", help="raw counts in X or layers['counts'], stored by cells "
                                                              "(CSR) or dense")
    partitioner.add_argument("--model", required=True, metavar="DIR", help="the encoder's model folder")
    partitioner.add_argument("-o", "--output", metavar="OUT_DIR", required=True,
                             help="folder for the partitions, manifest.json and embedding.npy")
    partitioner.add_argument("--partition-cells", type=int, default=PARTITION_CELLS, metavar="N", help="cells per task")
    partitioner.add_argument("--workers", type=int, default=1, metavar="N",
                             help="worker processes of the local cluster (without --scheduler)")
    partitioner.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, e.g. tcp://host:8786, whose "
                                                                    "workers share this file system (default: "
                                                                    "scheduler_address in the settings, else a local "
                                                                    "cluster)")
    partitioner.add_argument("--torch-threads", type=int, default=1, metavar="N", help="torch threads per task")
    partitioner.add_argument("--pooling", default="mean", choices=["mean", "all-layers", "cls"],
                             help="mean of a layer's outputs (default), mean over all layers, or the cls token")
    partitioner.add_argument("--layer", type=int, default=-1, help="layer for --pooling mean (-1 = last)")
    partitioner.add_argument("--batch-size", type=int, default=64)
    partitioner.add_argument("--library-size-key", metavar="KEY",
                             help="obs column with each cell's whole-transcriptome total counts (default: the sum of "
                                  "the file's counts)")
    partitioner.add_argument("--gene-id-key", metavar="KEY", help="var column with Ensembl IDs to match the model's "
                                                                  "genes")
    partitioner.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu, "
                                                              "on each worker")
    partitioner.add_argument("--overwrite", action="store_true",
                             help="discard what OUT_DIR holds from a run with other inputs or options")
    partitioner.set_defaults(run=_cmd_embed_partitions)

    atlas = commands.add_parser(
        "atlas", help="QC, PCA, FAISS index, UMAP and a first frame of a large file, read in chunks, resumable",
        description="Build the atlas of IN.h5ad (raw counts, X stored by cells) in OUT_DIR without loading the counts: "
                    "quality control, normalisation and highly variable genes as `embed` does, exact PCA, an HNSW "
                    "index with its recall measured, UMAP on a subsample with the other cells placed, and "
                    "first_frame.png. Run again after an interruption: finished stages are kept.")
    atlas.add_argument("input", metavar="IN.h5ad")
    atlas.add_argument("-o", "--output", metavar="OUT_DIR", required=True, help="the atlas folder")
    atlas.add_argument("--chunk-cells", type=int, default=50_000, metavar="N", help="cells read at a time")
    atlas.add_argument("--min-genes", type=int, help="keep cells with at least this many detected genes (default 200)")
    atlas.add_argument("--n-top-genes", type=int, help="highly variable genes for PCA (default 2000)")
    atlas.add_argument("--recall", type=float, default=0.95, help="recall@15 the index must reach (default 0.95)")
    atlas.add_argument("--overwrite", action="store_true", help="replace an atlas of another input or parameters")
    _add_scheduler_argument(atlas)
    atlas.set_defaults(run=_cmd_atlas)
    return parser


def _limit_threads(n_threads: int) -> None:
    import faiss
    import torch

    torch.set_num_threads(n_threads)
    faiss.omp_set_num_threads(n_threads)


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; bad input gives a one-line reason and exit status 2."""
    args = build_parser().parse_args(argv)
    if args.threads > 0:
        _limit_threads(args.threads)
    try:
        return args.run(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
