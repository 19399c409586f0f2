"""The command line: the same work as the dashboard, for servers and scripts.

Each subcommand builds its task's parameters (:mod:`sccore.tasks`; the flags' defaults are the dataclass's) and
runs the task here with a progress bar, or, with ``--scheduler``, submits the same parameters as a job
(:mod:`sccore.jobs`) and waits for it. Every subcommand prints a one-line reason and exits with status 2 on bad
input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from .errors import InputError
from .pp import QC_RULES
from .tasks import atlas as atlas_task
from .tasks import cluster as cluster_task
from .tasks import de as de_task
from .tasks import integrate as integrate_task
from .tasks import markers as markers_task
from .tasks import (embed_encoder, embed_partitions, embed_pca, finetune, knockout, metrics, neighbors, report, screen,
                    train)
from .tasks import transfer as transfer_task
from .tasks import umap as umap_task
from .tasks import validate
from .tasks.base import TaskParams, never
from .training import LIKELIHOODS


class _ProgressBar:
    """A tqdm bar on stderr driven by the ``(fraction, message)`` progress callbacks of the tasks, drawn from the
    first report on (so that input refused at once leaves one line on stderr: the error)."""

    def __init__(self, description: str):
        self.description, self.bar = description, None

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, desc=self.description, unit="%", file=sys.stderr, leave=False)
        self.bar.set_postfix_str(message[:60])
        self.bar.update(max(0, round(fraction * 100) - self.bar.n))

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()


class _StderrWarnings(logging.Handler):
    """Prints the library's logged warnings (e.g. a quality-control step that removed most cells, with its fix) on
    stderr as ``warning: ...``, above the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print ``record``'s message."""
        from tqdm import tqdm

        tqdm.write(f"warning: {record.getMessage()}", file=sys.stderr)


def _parse_where(items: list[str] | None) -> dict[str, str]:
    """``--where``/``--goal`` options (``KEY=VALUE``) as ``{obs column: value}``."""
    where = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--where/--goal takes KEY=VALUE (an obs column and a value), not '{item}'.")
        key, value = item.split("=", 1)
        where[key] = value
    return where


def _add_test_arguments(parser: argparse.ArgumentParser, params) -> None:
    """The options the ``markers`` and ``de`` commands share: the test and the library sizes (defaults: ``params``')."""
    parser.add_argument("--method", choices=markers_task.METHODS, default=params.default("method"),
                        help="wilcoxon (Mann-Whitney U, as scanpy's) or t-test (Welch's)")
    parser.add_argument("--library-size-key", metavar="KEY", default=params.default("library_size_key"),
                        help="obs column with each cell's total counts (default: the counts' sum, or "
                             "obs['full_total_umis'] when present)")


def _names(text: str | None) -> tuple[str, ...]:
    """A comma-separated option (``G1,G2``) as a tuple of names."""
    return tuple(name.strip() for name in (text or "").split(",") if name.strip())


def _params(cls: type[TaskParams], args: argparse.Namespace, **given) -> TaskParams:
    """``cls`` from the flags whose destinations are its fields (a flag left unset, ``None``, keeps the dataclass's
    default) and ``given``."""
    values = {item.name: getattr(args, item.name) for item in fields(cls)
              if getattr(args, item.name, None) is not None}
    return cls(**{**values, **given})


def _run(task, params: TaskParams, scheduler: str | None = None, kind: str = ""):
    """Run ``task`` (a :mod:`sccore.tasks` module) on ``params`` here with a progress bar and return what it returns,
    or, with ``scheduler``, as a ``kind`` job on that Dask scheduler (waiting for it; returns ``None``)."""
    if scheduler:
        _submit_job(kind, params, scheduler)
        return None
    bar = _ProgressBar(params.task)
    try:
        return task.run(params, bar, never)
    finally:
        bar.close()


def _read_backed(path: str):
    """The ``.h5ad`` at ``path`` opened read-only on disk (close its ``.file``)."""
    import anndata as ad

    return ad.read_h5ad(path, backed="r")


def _print_notes(adata) -> None:
    for note in adata.uns["input"]["notes"]:
        print(note, file=sys.stderr)


def _cmd_embed(args: argparse.Namespace) -> int:
    if args.method == "encoder":
        return _embed_with_encoder(args)
    if args.scheduler:
        raise InputError("--scheduler runs the encoder's embedding as a job (--method encoder --model DIR); a PCA "
                         "takes seconds to minutes here: drop --scheduler.")
    from .pp import steps_table

    params = _params(embed_pca.EmbedPCAParams, args)
    processed = _run(embed_pca, params)
    _print_notes(processed)
    print(steps_table(processed).to_string(index=False), file=sys.stderr)
    print(f"Wrote obsm['{params.key_added}'] ({processed.n_obs} cells x {processed.obsm[params.key_added].shape[1]}) "
          f"to {params.output}")
    return 0


def _embed_with_encoder(args: argparse.Namespace) -> int:
    """``embed --method encoder``: the ``embed`` task (or job)."""
    if not args.model:
        raise InputError("--method encoder needs --model DIR (a folder from `python -m sccore train`, "
                         "assets/demo_model, or a Geneformer checkpoint).")
    params = _params(embed_encoder.EmbedEncoderParams, args)
    _run(embed_encoder, params, args.scheduler, "embed")
    adata = _read_backed(params.output)
    _print_notes(adata)
    info = adata.uns[params.key_added]
    print(f"Wrote obsm['{params.key_added}'] ({adata.n_obs} cells x {adata.obsm[params.key_added].shape[1]}; "
          f"{info['genes_matched']} of {info['genes_in_dataset']} genes in the model's vocabulary; {info['device']}) "
          f"to {params.output}")
    adata.file.close()
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    params = _params(train.TrainParams, args)
    if args.scheduler and not params.resume:
        raise InputError("A training job always resumes its --out folder (so that a job whose worker stopped goes "
                         "on): to start afresh, delete that folder or choose another --out, or drop --scheduler.")
    _run(train, params, args.scheduler, "train")
    history = json.loads((Path(params.out) / "training.json").read_text(encoding="utf-8"))["history"]
    last = history["val_loss"][-1] if history["val_loss"] else float("nan")
    print(f"Wrote the model to {params.out} (validation loss {last:.3f} after {history['step'][-1]} steps)")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    params = _params(finetune.FinetuneParams, args)
    _run(finetune, params, args.scheduler, "finetune")
    record = json.loads((Path(params.out) / "training.json").read_text(encoding="utf-8"))
    last = record["history"]["accuracy"][-10:]
    print(f"Wrote the fine-tuned model ({len(record['labels'])} labels of obs['{params.label_key}'], "
          f"{record['n_labelled_cells']:,} labelled cells; training accuracy {sum(last) / max(1, len(last)):.3f} over "
          f"the last {len(last)} steps) to {params.out}; `python -m sccore transfer --use-rep X_encoder --model "
          f"{params.out}` labels cells with its classifier")
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


def _cmd_dask_certificates(args: argparse.Namespace) -> int:
    from .dask_security import CA_FILE, CERT_FILE, KEY_FILE, tls_environment, write_certificates

    folder = write_certificates(args.folder).absolute()
    flags = f"--tls-ca-file {folder / CA_FILE} --tls-cert {folder / CERT_FILE} --tls-key {folder / KEY_FILE}"
    print(f"# A certificate for a Dask cluster is in {folder} (readable by this account only).\n"
          f"# Scheduler: dask scheduler --protocol tls {flags}\n# Workers:   dask worker tls://HOST:8786 {flags}\n"
          "# The app and the command line (scheduler_address = \"tls://HOST:8786\"), in their environment:")
    for name, value in tls_environment(folder).items():
        print(f"export {name}={value}")
    return 0


def _graph_text(key: str) -> str:
    from .neighbors import graph_keys

    distances, connectivities = graph_keys(key)
    return f"obsp['{distances}'], obsp['{connectivities}'] and uns['{key}']"


def _cmd_neighbors(args: argparse.Namespace) -> int:
    params = _params(neighbors.NeighborsTaskParams, args)
    adata = _run(neighbors, params)
    print(f"Wrote the {params.n_neighbors} nearest neighbours of obsm['{params.use_rep}'] ({adata.n_obs} cells) as "
          f"{_graph_text(params.key_added)} to {params.output}")
    return 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    params = _params(cluster_task.ClusterParams, args)
    adata = _run(cluster_task, params)
    sizes = adata.obs[params.key_added].value_counts().tolist()
    info = adata.uns[params.key_added]
    agreement = info.get("agreement")
    scores = (f"; against obs['{params.labels_key}']: ARI {agreement['ARI']:.3f}, NMI {agreement['NMI']:.3f}"
              if agreement else "")
    print(f"{info['n_clusters']} Leiden clusters (resolution {params.resolution:g}) of obsm['{params.use_rep}'], "
          f"largest {', '.join(map(str, sizes[:5]))} cells{scores}; wrote obs['{params.key_added}'] to {params.output}")
    return 0


def _cmd_integrate(args: argparse.Namespace) -> int:
    params = _params(integrate_task.IntegrateParams, args)
    _run(integrate_task, params, args.scheduler, "integrate")
    adata = _read_backed(params.output)
    from .integrate import default_key

    key = params.key_added or default_key(params.use_rep)
    info = adata.uns[key]
    print(f"Integrated the {info['n_batches']} batches of obs['{params.batch_key}'] in obsm['{params.use_rep}'] with "
          f"Harmony ({adata.n_obs} cells); wrote obsm['{key}'] to {params.output}")
    adata.file.close()
    return 0


def _cmd_umap(args: argparse.Namespace) -> int:
    params = _params(umap_task.UMAPTaskParams, args)
    _run(umap_task, params, args.scheduler, "umap")
    adata = _read_backed(params.output)
    print(f"Wrote obsm['{params.key_added}'] ({adata.n_obs} cells) and its neighbours, "
          f"{_graph_text(params.neighbors_key)}, to {params.output}")
    adata.file.close()
    return 0


def _cmd_knockout(args: argparse.Namespace) -> int:
    params = _params(knockout.KnockoutParams, args, genes=_names(args.genes), where=_parse_where(args.where),
                     goal=_parse_where(args.goal))
    table = _run(knockout, params)
    for row in table.to_dict("records"):
        print(f"{row['gene']}: {row['n_cells']} cells, mean cosine {row['mean_cosine']:.6f} "
              f"({row['n_not_expressed']} chosen cells do not express it)", file=sys.stderr)
    if params.expression_output:
        print(f"Wrote the predicted expression change of every gene after each knockout to {params.expression_output}")
    print(f"Wrote {len(table)} row(s) to {params.output}")
    return 0


def _cmd_screen(args: argparse.Namespace) -> int:
    import pandas as pd

    params = _params(screen.ScreenParams, args, where=_parse_where(args.where), goal=_parse_where(args.goal))
    _run(screen, params, args.scheduler, "screen")
    table = pd.read_csv(params.output)
    cells = int(table["n_cells"].max()) if len(table) else 0
    print(f"Screened {len(table)} genes; wrote {params.output} (at most {cells} expressing cells per gene)")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .perturb import spearman

    table = _run(validate, _params(validate.ValidateParams, args, where=_parse_where(args.where)))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"Mean pearson_delta (predicted vs observed change of the other genes' expression): "
          f"{table['pearson_delta'].mean():.3f}")
    print(f"Spearman correlation of predicted_norm vs observed_norm: {spearman(table):.3f}")
    return 0


def _cmd_transfer(args: argparse.Namespace) -> int:
    from .transfer import UNASSIGNED

    params = _params(transfer_task.TransferParams, args)
    outcome = _run(transfer_task, params)
    for note in outcome.notes:
        print(note, file=sys.stderr)
    mapping = outcome.mapping
    print(f"{mapping['genes_matched']:,} of the {mapping['genes_used']:,} genes the reference's {params.use_rep} uses "
          f"matched by {mapping['matched_by']}; query library sizes from {mapping['library_size']}.", file=sys.stderr)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if outcome.true_key and outcome.knn_key:
        print(f"Against the query's obs['{outcome.true_key}']:")
        for name, key, scores in (("classifier", params.key_added, outcome.scores),
                                  ("kNN vote", outcome.knn_key, outcome.knn_scores)):
            print(f"  {name} (obs['{key}']): accuracy {scores['accuracy']:.3f}, macro F1 {scores['macro_f1']:.3f} "
                  f"({scores['n_unassigned']:,} unassigned counted as wrong)")
    elif outcome.true_key:
        scores = outcome.scores
        print(f"Against the query's obs['{outcome.true_key}']: accuracy {scores['accuracy']:.3f}, macro F1 "
              f"{scores['macro_f1']:.3f} ({scores['n_unassigned']:,} unassigned counted as wrong)")
    query = outcome.query
    written = (f"obs['{params.key_added}'] (the classifier's label), obs['{outcome.knn_key}'] (the kNN vote) and "
               "their _confidence columns" if outcome.knn_key
               else f"obs['{params.key_added}'] and obs['{params.key_added}_confidence']")
    n_unassigned = int((query.obs[params.key_added] == UNASSIGNED).sum())
    print(f"Wrote {written} for {query.n_obs:,} query cells ({n_unassigned:,} of obs['{params.key_added}'] unassigned "
          f"below confidence {params.threshold:g}) to {params.output}")
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    import pandas as pd

    params = _params(metrics.MetricsTaskParams, args, embeddings=_names(args.embeddings))
    table = _run(metrics, params, args.scheduler, "metrics")
    for note in table.attrs["notes"] if table is not None else []:
        print(f"note: {note}", file=sys.stderr)
    table = pd.read_csv(params.output, index_col=0)
    print(table.T.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"Wrote {len(table)} row(s) to {params.output}")
    return 0


def _cmd_markers(args: argparse.Namespace) -> int:
    params = _params(markers_task.MarkersParams, args)
    table = _run(markers_task, params)
    print(f"Ranked {table['gene'].nunique():,} genes in each of the {table['group'].nunique()} groups of "
          f"obs['{params.groupby}'] ({params.method}); wrote {params.output}")
    return 0


def _cmd_de(args: argparse.Namespace) -> int:
    params = _params(de_task.DEParams, args)
    table = _run(de_task, params)
    up = table.loc[table["score"] > 0, "gene"].head(3)
    print(f"Tested {len(table):,} genes in A ({params.a}) against B ({params.b}) ({params.method}); top genes up in "
          f"A: {', '.join(map(str, up)) or 'none'}; wrote {params.output}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    params = _params(report.ReportParams, args, knockout=_names(args.knockout), where=_parse_where(args.where),
                     goal=_parse_where(args.goal))
    outcome = _run(report, params)
    print(f"Wrote the report ({outcome.size / 1024:,.0f} KB; {outcome.n_cells:,} cells, {outcome.n_knockouts} knockout "
          f"row(s), {outcome.n_screens} screen(s)) to {params.output}")
    return 0


def _job_params(items: list[str] | None) -> dict:
    """``--param KEY=VALUE`` options as job parameters: JSON values (numbers, true, {...}) or text (a list parameter
    also takes a comma-separated text)."""
    import json

    params = {}
    for item in items or []:
        key, separator, text = item.partition("=")
        if not separator:
            raise InputError(f"--param takes KEY=VALUE, not '{item}'.")
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text
    return params


def _submit_job(kind: str, params: dict | TaskParams, scheduler: str, user: str | None = None, wait: bool = True,
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
        bar = _ProgressBar(kind)
        try:
            record = wait_for(store, user, job_id, bar)
        finally:
            bar.close()
    finally:
        close(client)
    if record.status != "finished":
        raise InputError(f"Job {job_id} {record.status}{': ' + record.error if record.error else ''}")
    return record


def _cmd_submit(args: argparse.Namespace) -> int:
    from .settings import load_settings

    scheduler = args.scheduler if args.scheduler is not None else load_settings().scheduler_address
    if not args.wait and not scheduler:
        print("No scheduler: the job runs on a local cluster that lives as long as this command, so it waits.",
              file=sys.stderr)
    record = _submit_job(args.kind, {"input": args.input, **_job_params(args.param)}, scheduler, args.user,
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
    result = _run(embed_partitions, _params(embed_partitions.EmbedPartitionsParams, args))
    print(f"Wrote {result.path} ({result.n_cells:,} cells; {result.computed} of {result.n_partitions} partitions "
          "embedded now, the others found finished)")
    return 0


def _cmd_atlas(args: argparse.Namespace) -> int:
    from .atlas import open_atlas

    params = _params(atlas_task.AtlasTaskParams, args)
    if args.scheduler and params.overwrite:
        raise InputError("--overwrite is not offered with --scheduler: delete the folder or choose another -o.")
    _run(atlas_task, params, args.scheduler, "atlas")
    atlas = open_atlas(params.out)
    stages = atlas.manifest["stages"]
    print(f"Wrote the atlas of {atlas.adata.n_obs:,} cells x {atlas.adata.n_vars:,} genes to {atlas.folder} "
          f"(first frame: {atlas.folder / 'first_frame.png'}; index recall@{atlas.manifest['params']['k']} "
          f"{stages['index']['recall']:.3f}; {sum(stage['seconds'] for stage in stages.values()):.0f} s over all "
          f"runs)")
    return 0


def _add_preprocess_arguments(parser: argparse.ArgumentParser, params: type[TaskParams]) -> None:
    """The quality-control flags of a task whose parameters include :class:`sccore.tasks.base.QualityControl`."""
    group = parser.add_argument_group("quality control and normalisation")
    group.add_argument("--library-size-key", metavar="KEY",
                       help="obs column with each cell's whole-transcriptome total counts (default: the counts' sum, "
                            "or obs['full_total_umis'] when present)")
    group.add_argument("--qc-rule", choices=QC_RULES, default=params.default("qc_rule"),
                       help="outliers (best practice): remove cells more than --n-mads median absolute deviations "
                            "from the median in log counts or log detected genes, or above it in mitochondrial %%; "
                            "thresholds: --min-genes and --max-pct-mito (skipped for a gene panel's figures)")
    group.add_argument("--n-mads", type=float, default=params.default("n_mads"),
                       help="median absolute deviations from the median beyond which a cell is an outlier")
    group.add_argument("--min-genes", type=int, default=params.default("min_genes"),
                       help="--qc-rule thresholds: keep cells with at least this many detected genes")
    group.add_argument("--max-pct-mito", type=float, default=params.default("max_pct_mito"),
                       help="--qc-rule thresholds: keep cells with at most this %% mitochondrial counts")
    group.add_argument("--min-cells", type=int, default=params.default("min_cells"),
                       help="keep genes detected in at least this many cells")
    group.add_argument("--n-top-genes", type=int, default=params.default("n_top_genes"),
                       help="number of highly variable genes")


def _add_perturbation_arguments(parser: argparse.ArgumentParser, params: type[TaskParams], model_help: str) -> None:
    parser.add_argument("input", metavar="IN.h5ad", help="raw counts (X, layers['counts'] or .raw)")
    parser.add_argument("--model", required=True, metavar="DIR|pca|linear", help=model_help)
    parser.add_argument("-o", "--output", metavar="OUT.csv", required=True)
    parser.add_argument("--device", default=params.default("device"),
                        help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    parser.add_argument("--n-comps", type=int, default=params.default("n_comps"),
                        help="principal components of the PCA the baselines project with")
    _add_preprocess_arguments(parser, params)


def _add_scheduler_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the work as a job on this Dask scheduler (e.g. tls://host:8786), wait for it with "
                             "a progress bar, then write the same output; its workers must see the same files")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sccore`` argument parser, one subcommand per task; each flag's default is its task's."""
    parser = argparse.ArgumentParser(prog="python -m sccore", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch and FAISS (default: all cores), e.g. on a shared machine")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pca_params, encoder_params = embed_pca.EmbedPCAParams, embed_encoder.EmbedEncoderParams
    embed = commands.add_parser("embed", help="quality control, normalisation and a cell embedding",
                                description="Filter, normalise and embed cells; writes obsm['X_pca'].")
    embed.add_argument("input", metavar="IN.h5ad", help="raw counts (X, layers['counts'] or .raw)")
    embed.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    embed.add_argument("--method", default="pca", choices=["pca", "encoder"], help="embedding method")
    embed.add_argument("--model", metavar="DIR", help="model folder for --method encoder")
    embed.add_argument("--pooling", default=encoder_params.default("pooling"), choices=embed_encoder.POOLINGS,
                       help="encoder: the model's cell embedding (default; its latent space when it has one), "
                            "the mean of a layer's outputs, the mean over all layers, or the cls token")
    embed.add_argument("--layer", type=int, default=encoder_params.default("layer"),
                       help="encoder layer for --pooling mean (-1 = last)")
    embed.add_argument("--batch-size", type=int, default=encoder_params.default("batch_size"))
    embed.add_argument("--device", default=encoder_params.default("device"),
                       help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    embed.add_argument("--gene-id-key", metavar="KEY", help="var column with Ensembl IDs to match the model's genes")
    embed.add_argument("--n-comps", type=int, default=pca_params.default("n_comps"),
                       help="number of principal components")
    embed.add_argument("--key-added", help=f"obsm key to write (default: {pca_params.default('key_added')}, or "
                                           f"{encoder_params.default('key_added')} for --method encoder)")
    _add_preprocess_arguments(embed, pca_params)
    _add_scheduler_argument(embed)
    embed.set_defaults(run=_cmd_embed)

    train_params = train.TrainParams
    trainer = commands.add_parser("train", help="pretraining of a transformer encoder",
                                  description="Pretrain a cell encoder on raw counts; writes a model folder. The "
                                              "objective weights (0 = off) default to the --config preset's.")
    trainer.add_argument("input", metavar="IN.h5ad")
    trainer.add_argument("--out", metavar="DIR", required=True, help="model folder (resumed if it holds a run)")
    trainer.add_argument("--config", default=train_params.default("config"), choices=train.CONFIGS, help="model size")
    trainer.add_argument("--epochs", type=float, default=train_params.default("epochs"))
    trainer.add_argument("--batch-size", type=int, default=train_params.default("batch_size"))
    trainer.add_argument("--grad-accum", type=int, default=train_params.default("grad_accum"),
                         help="gradient accumulation steps")
    trainer.add_argument("--learning-rate", type=float, default=train_params.default("learning_rate"))
    trainer.add_argument("--n-bins", type=int, default=train_params.default("n_bins"),
                         help="expression bins per token (0 = rank encoding only; default: the preset's)")
    trainer.add_argument("--cls", action="store_true", help="prepend a cls token (enables embed --pooling cls)")
    objectives = trainer.add_argument_group("objectives (default: the preset's)")
    objectives.add_argument("--mlm-weight", type=float, metavar="W",
                            help="weight of Geneformer's masked-gene objective: the identity of hidden gene tokens")
    objectives.add_argument("--gep-weight", type=float, metavar="W",
                            help="weight of scGPT's GEP: the expression of the hidden genes")
    objectives.add_argument("--gepc-weight", type=float, metavar="W",
                            help="weight of scGPT's GEPC: every gene's counts from the cell embedding alone, through "
                                 "an expression decoder (> 0 gives the model the decoder that knockouts' predicted "
                                 "expression changes need)")
    objectives.add_argument("--likelihood", choices=LIKELIHOODS,
                            help="the counts' likelihood under GEPC: negative binomial or Poisson")
    objectives.add_argument("--contrastive-weight", type=float, metavar="W",
                            help="weight of a contrastive term between two down-sampled views of each cell")
    objectives.add_argument("--latent-dim", type=int, metavar="N",
                            help="size of the cell embedding: a projection of the pooled states that the decoder "
                                 "reads, as scVI's latent space (0 = the pooled states themselves)")
    trainer.add_argument("--batch-key", metavar="KEY",
                         help="obs column with each cell's batch: the expression decoder is conditioned on it (needs "
                              "--gepc-weight > 0), so that the embedding need not carry what only the batch explains")
    trainer.add_argument("--library-size-key", metavar="KEY", help="obs column with whole-transcriptome totals")
    trainer.add_argument("--seed", type=int, default=train_params.default("seed"))
    trainer.add_argument("--device", default=train_params.default("device"))
    trainer.add_argument("--no-resume", dest="resume", action="store_false",
                         help="start afresh even if --out holds a run")
    _add_scheduler_argument(trainer)
    trainer.set_defaults(run=_cmd_train)

    finetune_params = finetune.FinetuneParams
    tuner = commands.add_parser("finetune", help="add a cell-type classifier to a model and fine-tune it",
                                description="Add a classification head for obs[--label-key] to a model and train it "
                                            "with the encoder on the labelled cells; writes a new model folder (the "
                                            "source model is never changed) that `transfer --use-rep X_encoder "
                                            "--model DIR2` labels cells with.")
    tuner.add_argument("input", metavar="IN.h5ad", help="raw counts with the labels in obs (reference cells only)")
    tuner.add_argument("--model", required=True, metavar="DIR", help="the model folder to start from")
    tuner.add_argument("--label-key", required=True, metavar="KEY", help="obs column with the labels, e.g. cell_type")
    tuner.add_argument("--out", metavar="DIR2", required=True, help="the new model folder (must not hold a model)")
    tuner.add_argument("--epochs", type=float, default=finetune_params.default("epochs"))
    tuner.add_argument("--batch-size", type=int, default=finetune_params.default("batch_size"))
    tuner.add_argument("--learning-rate", type=float, default=finetune_params.default("learning_rate"),
                       help="the encoder's learning rate")
    tuner.add_argument("--head-learning-rate", type=float, default=finetune_params.default("head_learning_rate"),
                       help="the classification head's learning rate")
    tuner.add_argument("--library-size-key", metavar="KEY", help="obs column with whole-transcriptome totals")
    tuner.add_argument("--seed", type=int, default=finetune_params.default("seed"))
    tuner.add_argument("--device", default=finetune_params.default("device"),
                       help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    _add_scheduler_argument(tuner)
    tuner.set_defaults(run=_cmd_finetune)

    model_help = "a model folder (the encoder), or the baselines: pca (zero and re-project), linear (co-expression)"
    strategy_help = ("the encoder's deletion: tokens (remove the gene's token, as Geneformer), decoder (move the "
                     "embedding until the model's expression decoder predicts no expression of the gene) or both; "
                     "the baselines ignore it")
    knockout_params = knockout.KnockoutParams
    knock = commands.add_parser("knockout", help="in-silico knockout of genes in chosen cells",
                                description="Knock out genes in silico; one CSV row per gene.")
    _add_perturbation_arguments(knock, knockout_params, model_help)
    knock.add_argument("--genes", required=True, metavar="G1,G2", help="genes to knock out, comma-separated")
    knock.add_argument("--together", action="store_true", help="knock the genes out together (one row)")
    knock.add_argument("--where", action="append", metavar="KEY=VALUE", help="the cells: obs[KEY] == VALUE")
    knock.add_argument("--goal", action="append", metavar="KEY=VALUE", help="a goal state, e.g. condition=control")
    knock.add_argument("--mode", choices=knockout.MODES, default=knockout_params.default("mode"))
    knock.add_argument("--strategy", default=knockout_params.default("strategy"), help=strategy_help)
    knock.add_argument("--expression-out", dest="expression_output", metavar="FILE.csv",
                       help="also write every gene's predicted change of log-expression after each knockout (columns "
                            "gene, knocked_out, method, predicted_log_change; the encoder needs a model with an "
                            "expression decoder)")
    knock.add_argument("--decoder-batch", metavar="NAME",
                       help="the batch a batch-aware model's decoder assumes (default: the average of its training "
                            "batches)")
    knock.set_defaults(run=_cmd_knockout)

    screen_params = screen.ScreenParams
    screener = commands.add_parser("screen", help="knock out every expressed gene and rank the shifts",
                                   description="An in-silico knockout screen; one CSV row per gene.")
    _add_perturbation_arguments(screener, screen_params, model_help)
    screener.add_argument("--where", action="append", metavar="KEY=VALUE", help="the cells: obs[KEY] == VALUE")
    screener.add_argument("--goal", action="append", metavar="KEY=VALUE", help="a goal state, e.g. condition=control")
    screener.add_argument("--goal-start", choices=screen.GOAL_STARTS, default=screen_params.default("goal_start"),
                          help="where the goal's direction starts: the screened cells, or every --where cell")
    screener.add_argument("--top", type=int, help="screen only the N genes expressed in the most cells")
    screener.add_argument("--max-cells", type=int, default=screen_params.default("max_cells"),
                          help="screen a random subset of this many cells")
    screener.add_argument("--seed", type=int, default=screen_params.default("seed"))
    screener.add_argument("--estimate", choices=screen.ESTIMATES, default=screen_params.default("estimate"),
                          help="encoder only: 'first-order' ranks all genes from gradients, then deletes the best "
                               "--exact-top genes exactly (fast with long inputs)")
    screener.add_argument("--exact-top", type=int, default=screen_params.default("exact_top"),
                          help="genes recomputed exactly after a first-order pass")
    _add_scheduler_argument(screener)
    screener.set_defaults(run=_cmd_screen)

    validate_params = validate.ValidateParams
    validator = commands.add_parser("validate-knockout", help="compare in-silico knockouts with a CRISPR screen",
                                    description="Knock out each measured target in the control cells and compare "
                                                "with the real knockout cells, in the embedding (cosine, "
                                                "predicted_norm, observed_norm) and in gene space (pearson_delta, "
                                                "rmse_delta: the other genes' predicted against observed change of "
                                                "log-expression); one CSV row per target.")
    _add_perturbation_arguments(validator, validate_params, model_help)
    validator.add_argument("--perturbation-key", default=validate_params.default("perturbation_key"),
                           help="obs column naming each cell's target")
    validator.add_argument("--control", default=validate_params.default("control"),
                           help="the value of that column for control cells")
    validator.add_argument("--where", action="append", metavar="KEY=VALUE",
                           help="keep only these cells first, e.g. guide_confident=True")
    validator.add_argument("--min-knockout-cells", type=int, default=validate_params.default("min_knockout_cells"))
    validator.add_argument("--strategy", default=validate_params.default("strategy"), help=strategy_help)
    validator.set_defaults(run=_cmd_validate)

    neighbors_params = neighbors.NeighborsTaskParams
    graph = commands.add_parser("neighbors", help="the kNN graph of an embedding (FAISS), stored as scanpy stores it",
                                description="The n nearest neighbours of each cell in obsm[--use-rep] (itself "
                                            "included); writes obsp['<key>_distances'], obsp['<key>_connectivities'] "
                                            "(UMAP's fuzzy simplicial set, as scanpy.pp.neighbors computes it; "
                                            "obsp['distances'] and obsp['connectivities'] for the key neighbors) and "
                                            "uns['<key>'], for scanpy.tl.leiden/paga/umap(neighbors_key=KEY).")
    graph.add_argument("input", metavar="IN.h5ad")
    graph.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    graph.add_argument("--use-rep", default=neighbors_params.default("use_rep"), help="obsm key of the embedding")
    graph.add_argument("--n-neighbors", type=int, default=neighbors_params.default("n_neighbors"),
                       help="neighbours per cell, the cell itself included")
    graph.add_argument("--index", choices=neighbors.INDEX_KINDS, default=neighbors_params.default("index"),
                       help="FAISS index: exact below 50,000 cells, an inverted file above (auto)")
    graph.add_argument("--key-added", default=neighbors_params.default("key_added"),
                       help="uns key of the neighbours and prefix of their obsp keys")
    graph.set_defaults(run=_cmd_neighbors)

    cluster_params = cluster_task.ClusterParams
    clusterer = commands.add_parser("cluster", help="Leiden clusters of an embedding's kNN graph",
                                    description="The neighbours of obsm[--use-rep] (stored as `neighbors` stores "
                                                "them, unless the file holds them), then igraph's Leiden "
                                                "(modularity); writes obs[--key-added] (\"0\" the largest cluster) "
                                                "and its parameters in uns[--key-added], with ARI and NMI against "
                                                "obs[--labels-key] when given.")
    clusterer.add_argument("input", metavar="IN.h5ad", help="a dataset with the embedding in obsm (e.g. from `embed`), "
                                                            "or an atlas folder (its clusters are kept in it)")
    clusterer.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    clusterer.add_argument("--use-rep", default=cluster_params.default("use_rep"), help="obsm key of the embedding")
    clusterer.add_argument("--resolution", type=float, default=cluster_params.default("resolution"),
                           help="higher gives more, smaller clusters")
    clusterer.add_argument("--n-neighbors", type=int, default=cluster_params.default("n_neighbors"),
                           help="neighbours per cell, the cell itself included")
    clusterer.add_argument("--index", choices=neighbors.INDEX_KINDS, default=cluster_params.default("index"),
                           help="FAISS index: exact below 50,000 cells, an inverted file above (auto)")
    clusterer.add_argument("--key-added", default=cluster_params.default("key_added"), help="obs column to write")
    clusterer.add_argument("--seed", type=int, default=cluster_params.default("seed"))
    clusterer.add_argument("--n-iterations", type=int, default=cluster_params.default("n_iterations"),
                           help="Leiden passes: -1 until stable; 2 (scanpy's igraph default) is far faster on atlases")
    clusterer.add_argument("--labels-key", metavar="KEY", default=cluster_params.default("labels_key"),
                           help="obs column of known labels (e.g. cell_type) to print ARI and NMI against")
    clusterer.set_defaults(run=_cmd_cluster)

    integrate_params = integrate_task.IntegrateParams
    integrator = commands.add_parser("integrate", help="batch integration of an embedding (Harmony)",
                                     description="Harmony (harmonypy) on obsm[--use-rep] over the batches of "
                                                 "obs[--batch-key]; writes obsm['<use-rep>_harmony'] (e.g. "
                                                 "X_pca_harmony) with its parameters in uns. A file of raw counts "
                                                 "without X_pca is first filtered and embedded as `embed --method "
                                                 "pca` does.")
    integrator.add_argument("input", metavar="IN.h5ad", help="raw counts, or a file with the embedding (from `embed`)")
    integrator.add_argument("--batch-key", required=True, metavar="KEY", help="obs column of the batches, e.g. donor")
    integrator.add_argument("--method", choices=integrate_task.METHODS, default=integrate_params.default("method"))
    integrator.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    integrator.add_argument("--use-rep", default=integrate_params.default("use_rep"),
                            help="obsm key of the embedding to integrate")
    integrator.add_argument("--key-added", default=integrate_params.default("key_added"),
                            help="obsm key to write (default: <use-rep>_harmony)")
    integrator.add_argument("--theta", type=float, default=integrate_params.default("theta"),
                            help="Harmony's diversity penalty (higher mixes batches harder)")
    integrator.add_argument("--max-iter", type=int, default=integrate_params.default("max_iter"),
                            help="at most this many rounds of Harmony's clustering and correction")
    integrator.add_argument("--seed", type=int, default=integrate_params.default("seed"))
    integrator.add_argument("--n-comps", type=int, default=integrate_params.default("n_comps"),
                            help="principal components when the file has no X_pca")
    _add_preprocess_arguments(integrator, integrate_params)
    _add_scheduler_argument(integrator)
    integrator.set_defaults(run=_cmd_integrate)

    umap_params = umap_task.UMAPTaskParams
    layout = commands.add_parser("umap", help="UMAP of an embedding on FAISS neighbours",
                                 description="The neighbours of obsm[--use-rep] (stored in obsp and uns, as "
                                             "`neighbors` does), then the UMAP layout on them; writes "
                                             "obsm['X_umap'].")
    layout.add_argument("input", metavar="IN.h5ad")
    layout.add_argument("-o", "--output", metavar="OUT.h5ad", required=True)
    layout.add_argument("--use-rep", default=umap_params.default("use_rep"), help="obsm key of the embedding to lay out")
    layout.add_argument("--key-added", default=umap_params.default("key_added"), help="obsm key to write")
    layout.add_argument("--n-neighbors", type=int, default=umap_params.default("n_neighbors"),
                        help="neighbours per cell, the cell itself included")
    layout.add_argument("--min-dist", type=float, default=umap_params.default("min_dist"))
    layout.add_argument("--index", choices=neighbors.INDEX_KINDS, default=umap_params.default("index"),
                        help="FAISS index: exact below 50,000 cells, an inverted file above (auto)")
    layout.add_argument("--seed", type=int, default=umap_params.default("seed"))
    layout.add_argument("--neighbors-key", default=umap_params.default("neighbors_key"),
                        help="uns key (and obsp prefix) under which the neighbours are stored")
    _add_scheduler_argument(layout)
    layout.set_defaults(run=_cmd_umap)

    transfer_params = transfer_task.TransferParams
    mapper = commands.add_parser("transfer", help="label transfer from a reference dataset to query cells",
                                 description="Embed the query's raw counts into the reference's space (its PCA "
                                             "loadings or encoder, never refitted on the query) and give each query "
                                             "cell the similarity-weighted vote of its k nearest reference cells; "
                                             "writes obs['predicted_cell_type'] and "
                                             "obs['predicted_cell_type_confidence']. With a model fine-tuned on "
                                             "--label-key (`python -m sccore finetune`), those hold its classifier's "
                                             "label and probability, and the vote goes to "
                                             "obs['predicted_cell_type_knn'] and "
                                             "obs['predicted_cell_type_knn_confidence'].")
    mapper.add_argument("--reference", metavar="REF.h5ad", required=True,
                        help="labelled cells: raw counts, or a file from `python -m sccore embed` (its PCA is reused)")
    mapper.add_argument("--query", metavar="Q.h5ad", required=True, help="raw counts of the cells to label")
    mapper.add_argument("--label-key", required=True, help="the reference's obs column to transfer, e.g. cell_type")
    mapper.add_argument("--use-rep", default=transfer_params.default("use_rep"),
                        choices=transfer_task.REPRESENTATIONS, help="the embedding to vote in")
    mapper.add_argument("--model", metavar="DIR", help="encoder folder for --use-rep X_encoder (default: the one "
                                                       "that embedded the reference)")
    mapper.add_argument("-o", "--output", metavar="OUT.h5ad", required=True, help="the query with its new labels")
    mapper.add_argument("--key-added", default=transfer_params.default("key_added"),
                        help="obs column to write (and _confidence; _knn and _knn_confidence for the vote beside a "
                             "classifier)")
    mapper.add_argument("--k", type=int, default=transfer_params.default("k"), help="reference neighbours that vote")
    mapper.add_argument("--threshold", type=float, default=transfer_params.default("threshold"),
                        help="label 'unassigned' below this confidence (the winning label's share of the vote)")
    mapper.add_argument("--gene-id-key", metavar="KEY",
                        help="var column with Ensembl IDs, in both files, to match genes by instead of symbols")
    mapper.add_argument("--query-label-key", metavar="KEY",
                        help="the query's obs column with true labels, to print accuracy and macro F1 (default: "
                             "--label-key when the query has it)")
    mapper.add_argument("--n-comps", type=int, default=transfer_params.default("n_comps"),
                        help="principal components when the reference needs a PCA")
    mapper.add_argument("--device", default=transfer_params.default("device"),
                        help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    _add_preprocess_arguments(mapper, transfer_params)
    mapper.set_defaults(run=_cmd_transfer)

    metrics_params = metrics.MetricsTaskParams
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
    scorer.add_argument("--unintegrated-key", default=metrics_params.default("unintegrated_key"),
                        help="obsm key of the unintegrated embedding that pcr_comparison compares with")
    scorer.add_argument("--max-silhouette-cells", type=int, default=metrics_params.default("max_silhouette_cells"),
                        help="above this many cells, silhouettes are averaged over a label-stratified sample")
    scorer.add_argument("--index", choices=neighbors.INDEX_KINDS, default=metrics_params.default("index"),
                        help="FAISS index: exact below 50,000 cells, an inverted file above (auto)")
    scorer.add_argument("--seed", type=int, default=metrics_params.default("seed"),
                        help="seed of KMeans and the silhouette sample")
    _add_scheduler_argument(scorer)
    scorer.set_defaults(run=_cmd_metrics)

    markers_params = markers_task.MarkersParams
    marker = commands.add_parser("markers", help="marker genes of every group of an obs column",
                                 description="Normalise the counts (log1p of counts per 10,000) and rank the genes of "
                                             "each group of obs[--groupby] against the rest of the cells, as scanpy's "
                                             "rank_genes_groups; one CSV row per group and gene (group, gene, score, "
                                             "logfoldchange, pvalue, fdr, pct_in, pct_out).")
    marker.add_argument("input", metavar="IN.h5ad", help="a dataset of raw counts")
    marker.add_argument("--groupby", required=True, metavar="KEY", help="obs column of the groups, e.g. cell_type")
    marker.add_argument("-o", "--output", metavar="OUT.csv", required=True)
    _add_test_arguments(marker, markers_params)
    marker.set_defaults(run=_cmd_markers)

    de_params = de_task.DEParams
    tester = commands.add_parser("de", help="differential expression of two sets of cells",
                                 description="Normalise the counts (log1p of counts per 10,000) and test every gene in "
                                             "the cells of A against those of B; one CSV row per gene (group A), the "
                                             "genes up in A first.")
    tester.add_argument("input", metavar="IN.h5ad", help="a dataset of raw counts")
    tester.add_argument("--a", required=True, metavar="KEY=VALUE",
                        help="set A: the cells whose obs[KEY] is VALUE, e.g. condition=stimulated")
    tester.add_argument("--b", required=True, metavar="KEY=VALUE",
                        help="set B: the cells whose obs[KEY] is VALUE, e.g. condition=control")
    tester.add_argument("-o", "--output", metavar="OUT.csv", required=True)
    _add_test_arguments(tester, de_params)
    tester.set_defaults(run=_cmd_de)

    report_params = report.ReportParams
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
    reporter.add_argument("--device", default=report_params.default("device"),
                          help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    reporter.add_argument("--color-by", metavar="KEY", help="obs annotation to colour the layouts and score the "
                                                            "embeddings by (default: cell_type, batch... if present)")
    reporter.add_argument("--knockout", metavar="G1,G2", help="genes to knock out one at a time, by every method")
    reporter.add_argument("--where", action="append", metavar="KEY=VALUE", help="the cells: obs[KEY] == VALUE")
    reporter.add_argument("--screen", action="store_true",
                          help="screen the most often expressed genes, by every method")
    reporter.add_argument("--top", type=int, default=report_params.default("top"),
                          help="genes to screen: the N expressed in the most cells")
    reporter.add_argument("--goal", action="append", metavar="KEY=VALUE", help="a goal state, e.g. condition=control")
    reporter.add_argument("--max-cells", type=int, default=report_params.default("max_cells"),
                          help="knock out and screen a random subset of this many cells")
    reporter.add_argument("--seed", type=int, default=report_params.default("seed"))
    reporter.add_argument("--rows", type=int, default=report_params.default("rows"),
                          help="rows shown of each ranked table")
    _add_preprocess_arguments(reporter, report_params)
    reporter.set_defaults(run=_cmd_report)

    from .jobs import KINDS
    from .settings import LOCAL_USER

    submitter = commands.add_parser("submit",
                                    help="run training, fine-tuning, embedding, UMAP, a screen, metrics or an atlas "
                                         "as a Dask job",
                                    description="Submit a background job to a Dask cluster (--scheduler, else "
                                                "scheduler_address in the settings, else a local cluster) and print "
                                                "its id; the result goes to the cache folder, under a key made from "
                                                "the input's content and the parameters.")
    submitter.add_argument("kind", choices=KINDS)
    submitter.add_argument("input", metavar="IN.h5ad")
    submitter.add_argument("--param", action="append", metavar="KEY=VALUE",
                           help="a parameter of the kind's task (sccore.jobs.JOB_KINDS; its dataclass in "
                                "sccore.tasks), e.g. model=pca, top=100, epochs=2, "
                                'where=\'{"cell_type": "B"}\', embeddings=X_pca,X_encoder')
    submitter.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, e.g. tls://host:8786")
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

    certificates = commands.add_parser(
        "dask-certificates", help="a TLS certificate for a lab's Dask cluster (scheduler, workers and the app)",
        description="Write a new self-signed certificate and key (ca.pem, cert.pem, key.pem) into FOLDER (made "
                    "private to this account), and print the dask scheduler / dask worker flags and the environment "
                    "variables with which the app and the command line reach that cluster over TLS.")
    certificates.add_argument("folder", metavar="FOLDER", help="a new or empty folder")
    certificates.set_defaults(run=_cmd_dask_certificates)

    partition_params = embed_partitions.EmbedPartitionsParams
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
    partitioner.add_argument("--partition-cells", type=int, default=partition_params.default("partition_cells"),
                             metavar="N", help="cells per task")
    partitioner.add_argument("--workers", type=int, default=partition_params.default("workers"), metavar="N",
                             help="worker processes of the local cluster (without --scheduler)")
    partitioner.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, e.g. tls://host:8786, whose "
                                                                    "workers share this file system (default: "
                                                                    "scheduler_address in the settings, else a local "
                                                                    "cluster)")
    partitioner.add_argument("--torch-threads", type=int, default=partition_params.default("torch_threads"),
                             metavar="N", help="torch threads per task")
    partitioner.add_argument("--pooling", default=partition_params.default("pooling"), choices=embed_encoder.POOLINGS,
                             help="the model's cell embedding (default; its latent space when it has one), the "
                                  "mean of a layer's outputs, the mean over all layers, or the cls token")
    partitioner.add_argument("--layer", type=int, default=partition_params.default("layer"),
                             help="layer for --pooling mean (-1 = last)")
    partitioner.add_argument("--batch-size", type=int, default=partition_params.default("batch_size"))
    partitioner.add_argument("--library-size-key", metavar="KEY",
                             help="obs column with each cell's whole-transcriptome total counts (default: the sum of "
                                  "the file's counts)")
    partitioner.add_argument("--gene-id-key", metavar="KEY", help="var column with Ensembl IDs to match the model's "
                                                                  "genes")
    partitioner.add_argument("--device", default=partition_params.default("device"),
                             help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu, on each worker")
    partitioner.add_argument("--overwrite", action="store_true",
                             help="discard what OUT_DIR holds from a run with other inputs or options")
    partitioner.set_defaults(run=_cmd_embed_partitions)

    atlas_params = atlas_task.AtlasTaskParams
    atlas = commands.add_parser(
        "atlas", help="QC, PCA, FAISS index, neighbours, UMAP and a first frame of a large file, read in chunks, "
                      "resumable",
        description="Build the atlas of IN.h5ad (raw counts, X stored by cells) in OUT_DIR without loading the counts: "
                    "quality control, normalisation and highly variable genes as `embed` does, exact PCA, a FAISS "
                    "index with its recall measured, every cell's neighbours (stored as `neighbors` stores them), UMAP "
                    "on a subsample with the other cells placed, and first_frame.png. Run again after an "
                    "interruption: finished stages are kept.")
    atlas.add_argument("input", metavar="IN.h5ad")
    atlas.add_argument("-o", "--output", dest="out", metavar="OUT_DIR", required=True, help="the atlas folder")
    atlas.add_argument("--chunk-cells", type=int, default=atlas_params.default("chunk_cells"), metavar="N",
                       help="cells read at a time")
    atlas.add_argument("--min-genes", type=int, help="keep cells with at least this many detected genes (default 200; "
                                                     "an atlas is filtered chunk by chunk, so by fixed thresholds)")
    atlas.add_argument("--n-top-genes", type=int, help="highly variable genes for PCA (default 2000)")
    atlas.add_argument("--recall", type=float, default=atlas_params.default("recall"),
                       help="recall@15 the index must reach (default 0.95)")
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
    library_logger = logging.getLogger("sccore")
    if not any(isinstance(handler, _StderrWarnings) for handler in library_logger.handlers):
        library_logger.addHandler(_StderrWarnings(logging.WARNING))
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
