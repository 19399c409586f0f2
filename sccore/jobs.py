"""Background jobs on Dask distributed: training, encoder embedding, UMAP, knockout screens and metrics.

A job is a record, one JSON file per job under ``<cache_dir>/jobs/<user>/<job_id>.json`` (written
atomically), and a task on a Dask cluster: by default a local cluster of worker processes that the
caller starts (:func:`connect`), or the lab's scheduler (``scheduler_address``, e.g. a dask-jobqueue
``SLURMCluster``). The task runs :func:`run_job` in a worker: it reads its input from a path, writes
its result atomically into the cache under a key made from the input file's content and the
parameters, and reports progress by rewriting its record. So **the workers must share the file system
with the app** (the cache, data, model and upload folders): true on a laptop and on a lab server whose
compute nodes mount the same storage.

A rerun with the same input and parameters finds the finished result and returns at once; training
resumes from the checkpoint in its model folder. A killed job leaves no result (only a finished result
is ever renamed into place), so submitting it again restarts (or resumes) cleanly. Cancelling writes a
flag file beside the record; the running job sees it at its next progress report and stops without
writing a result.

A running job rewrites the ``heartbeat`` time in its record every :data:`HEARTBEAT_INTERVAL_S` seconds (a
thread of its own). :func:`status` marks a running job whose heartbeat is older than :data:`STALE_AFTER_S`
failed: its worker died, and no process that holds its Dask future was there to notice (the app restarted,
or a CLI submitted it and exited). The workers' clocks and the app's must agree to well within that.

Jobs whose ``device`` is ``cuda`` ask Dask for ``resources={"GPU": 1}``: start the GPU workers with
``--resources GPU=1`` (dask-jobqueue: ``worker_extra_args=["--resources", "GPU=1"]``) and only they run them.

The app keeps the Dask futures in memory (:data:`_futures`) only to notice a worker that died; everything
a page shows after a browser refresh (or the CLI's ``jobs``) is read from the records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from .cache import atomic_write, make_key
from .errors import InputError
from .settings import user_folder_name

KINDS = ("train", "embed", "umap", "screen", "metrics", "atlas")
STATUSES = ("queued", "running", "finished", "failed", "cancelled")
DONE = ("finished", "failed", "cancelled")
_QC_DEFAULTS = {"min_genes": 200, "max_pct_mito": 10.0, "min_cells": 3, "n_top_genes": 2000, "library_size_key": None}
REQUIRED = object()
# Every parameter of each kind with its default (REQUIRED: no default); ``input`` (a .h5ad path) is always required.
PARAMETERS = {
    "train": {"config": "small", "epochs": 10.0, "batch_size": 32, "grad_accum": 1, "learning_rate": 1e-3,
              "n_bins": 0, "cls": False, "seed": 0, "device": "auto", "library_size_key": None,
              "out": ""},  # out: a model folder to train into (resumed, as `train --out`); "": the cache
    "embed": {"model": REQUIRED, "pooling": "mean", "layer": -1, "batch_size": 64, "device": "auto",
              "library_size_key": None, "gene_id_key": None, "key_added": "X_encoder"},
    "umap": {"use_rep": "X_pca", "key_added": "X_umap", "n_neighbors": 15, "min_dist": 0.3, "index": "auto",
             "seed": 0},
    "screen": {"model": "pca", "where": {}, "goal": {}, "goal_start": "cells", "top": None, "max_cells": 0, "seed": 0,
               "estimate": "exact", "exact_top": 50, "device": "auto", "n_comps": 50, **_QC_DEFAULTS},
    "metrics": {"label_key": REQUIRED, "batch_key": REQUIRED, "embeddings": ["X_pca"], "unintegrated_key": "X_pca",
                "max_silhouette_cells": 10_000, "seed": 0, "index": "auto"},
    "atlas": {"chunk_cells": 50_000, "min_genes": None, "n_top_genes": None, "recall": 0.95,  # None: the file's
              "out": ""},  # defaults (sccore.pp.default_params); out: the atlas folder ("": the cache)
}
RESULT_NAMES = {"train": "model", "embed": "embedded.h5ad", "umap": "umap.h5ad", "screen": "screen.csv",
                "metrics": "metrics.csv", "atlas": "atlas"}
_PROGRESS_INTERVAL_S = 0.5
HEARTBEAT_INTERVAL_S = 10.0  # a running job rewrites its record's heartbeat this often (seconds)
STALE_AFTER_S = 60.0  # a running job whose heartbeat is older than this lost its worker
_LOST = ("Submit it again: training resumes from its last checkpoint, other jobs restart; no half result was "
         "kept.")
_futures: dict = {}  # job id -> the Dask future of a job this process submitted


class JobCancelled(Exception):
    """Raised inside a job when its cancel flag is found; the job stops without writing a result."""


@dataclass
class JobRecord:
    """What is known about one job; times are seconds since the epoch (``None`` until they happen)."""

    id: str
    user: str
    kind: str
    params: dict
    status: str = "queued"
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: float = 0.0
    message: str = ""
    result: str = ""
    cached: bool = False  # the result was found in the cache, not computed
    error: str = ""
    heartbeat: float | None = None  # the running job's last sign of life

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (or to now while running); ``None`` before it starts."""
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started

    @property
    def done(self) -> bool:
        """Whether the job has ended (finished, failed or cancelled)."""
        return self.status in DONE


class JobStore:
    """Job records as JSON files under ``cache_dir/jobs/<user>/``, each written atomically, with a
    ``<job_id>.cancel`` flag file beside a record whose job should stop."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        self.root = self.cache_dir / "jobs"

    def path(self, user: str, job_id: str) -> Path:
        """The record file of ``user``'s job ``job_id``."""
        return self.root / user_folder_name(user) / f"{job_id}.json"

    def write(self, record: JobRecord) -> None:
        """Write ``record`` (atomically: a reader never sees half a record)."""
        text = json.dumps(asdict(record), indent=1, default=str)
        atomic_write(self.path(record.user, record.id), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def read(self, user: str, job_id: str) -> JobRecord:
        """The record of ``user``'s job ``job_id``; :class:`InputError` when there is none."""
        try:
            data = json.loads(self.path(user, job_id).read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise InputError(f"{user} has no job '{job_id}'; `python -m sccore jobs` lists them.") from error
        known = {item.name for item in fields(JobRecord)}
        return JobRecord(**{key: value for key, value in data.items() if key in known})

    def update(self, user: str, job_id: str, **changes) -> JobRecord:
        """Change some fields of a record and write it back; returns the new record."""
        record = self.read(user, job_id)
        for key, value in changes.items():
            setattr(record, key, value)
        self.write(record)
        return record

    def list_jobs(self, user: str) -> list[JobRecord]:
        """``user``'s jobs, newest first (only theirs: each user's records live in a folder of their own)."""
        folder = self.root / user_folder_name(user)
        records = []
        for path in folder.glob("*.json") if folder.is_dir() else []:
            try:
                records.append(self.read(user, path.stem))
            except (ValueError, TypeError):  # a damaged record is left out, not fatal to the listing
                continue
        return sorted(records, key=lambda record: record.submitted, reverse=True)

    def request_cancel(self, user: str, job_id: str) -> None:
        """Raise the cancel flag of a job."""
        self.path(user, job_id).with_suffix(".cancel").touch()

    def cancel_requested(self, user: str, job_id: str) -> bool:
        """Whether the job's cancel flag is raised."""
        return self.path(user, job_id).with_suffix(".cancel").exists()


def connect(scheduler_address: str = "", n_workers: int = 1):
    """A Dask client: to the scheduler at ``scheduler_address``, or (``""``) to a new local cluster of
    ``n_workers`` workers with one thread each and no dashboard. Close it with :func:`close`.

    The local cluster's scheduler and workers run as their own subprocesses (``python -m dask spec``), not
    as children forked or spawned from this one, so they never re-run the caller's main script (Streamlit's
    pages); ``PYTHONPATH`` gains the folder holding ``sccore`` so that they import this code.
    """
    from distributed import Client
    from distributed.deploy.subprocess import SubprocessCluster

    if scheduler_address:
        try:
            return Client(scheduler_address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as error:
            raise InputError(f"No Dask scheduler answers at {scheduler_address} ({error}). Start the cluster, fix "
                             "scheduler_address in the settings (or --scheduler), or leave it empty for a local "
                             "cluster.") from error
    root = str(Path(__file__).resolve().parents[1])
    paths = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    cluster = SubprocessCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=None,
                                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},  # its health page: a free port
                                silence_logs=logging.ERROR)
    return Client(cluster)


def close(client) -> None:
    """Close ``client`` and the local cluster :func:`connect` started for it (a lab's cluster stays up)."""
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


def file_digest(path: str | os.PathLike) -> str:
    """A hash of a file's bytes, for cache keys."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def job_key(kind: str, params: dict) -> str:
    """The cache key of a job's result: its kind, the input file's content, the model folder's files (when
    it names one) and every other parameter."""
    from .models.store import model_fingerprint

    model = params.get("model")
    model_part = model_fingerprint(model) if kind in ("embed", "screen") and model not in ("pca", "linear") else ""
    others = {key: value for key, value in params.items() if key != "input"}
    return make_key("job", kind, file_digest(params["input"]), model_part, others)


def result_path(kind: str, params: dict, results_dir: str | os.PathLike) -> Path:
    """Where the result of a job with these parameters is written: ``results_dir/<key>/<name>``, or the model
    folder a training job (the atlas folder an atlas job) names in ``out``."""
    if kind in ("train", "atlas") and params.get("out"):
        return Path(params["out"])
    return Path(results_dir) / job_key(kind, params) / RESULT_NAMES[kind]


def checked_params(kind: str, params: dict) -> dict:
    """``params`` completed with the defaults of ``kind``; :class:`InputError` for an unknown kind or parameter,
    a missing required one, or an input file that does not exist."""
    if kind not in KINDS:
        raise InputError(f"Unknown job kind '{kind}': use one of {', '.join(KINDS)}.")
    defaults = PARAMETERS[kind]
    unknown = sorted(set(params) - set(defaults) - {"input"})
    if unknown:
        raise InputError(f"A {kind} job takes no parameter {', '.join(unknown)}; it takes input, "
                         f"{', '.join(defaults)}.")
    merged = {key: params.get(key, default) for key, default in defaults.items()}
    missing = [key for key, value in merged.items() if defaults[key] is REQUIRED and value in (REQUIRED, "", None)]
    if missing:
        raise InputError(f"A {kind} job needs {', '.join(missing)}.")
    if not params.get("input") or not Path(params["input"]).is_file():
        raise InputError(f"A {kind} job needs an existing .h5ad file as input, not '{params.get('input', '')}'.")
    if isinstance(merged.get("model"), str) and Path(merged["model"]).is_dir():
        merged["model"] = str(Path(merged["model"]).resolve())  # workers may start in another folder
    if merged.get("out"):
        merged["out"] = str(Path(merged["out"]).expanduser().resolve())
    return {"input": str(Path(params["input"]).resolve()), **merged}


def submit(client, store: JobStore, user: str, kind: str, params: dict,
           results_dir: str | os.PathLike | None = None) -> str:
    """Queue a ``kind`` job for ``user`` on ``client``'s cluster and return its id.

    The result goes under ``results_dir`` (default: the store's cache folder). A job on ``device="cuda"``
    runs only on workers offering the ``GPU`` resource.
    """
    from distributed import fire_and_forget

    params = checked_params(kind, params)
    resources = {"GPU": 1} if str(params.get("device", "")).startswith("cuda") else None
    if resources and getattr(client, "cluster", None) is not None and not _offers_gpu(client):
        raise InputError("This job asks for a GPU (device cuda) but the local cluster has no GPU worker. Use "
                         "device auto, or set scheduler_address to a cluster whose GPU workers run with "
                         "--resources GPU=1.")
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    store.write(JobRecord(id=job_id, user=user, kind=kind, params=params, message="waiting for a worker"))
    future = client.submit(run_job, str(store.cache_dir), str(results_dir or store.cache_dir), user, job_id,
                           key=f"sccore-{kind}-{job_id}", pure=False, resources=resources)
    fire_and_forget(future)  # the job runs on even if this process lets go of the future (a CLI that exits)
    _futures[job_id] = future
    return job_id


def _offers_gpu(client) -> bool:
    """Whether a worker of ``client``'s cluster offers the ``GPU`` resource."""
    workers = client.scheduler_info().get("workers", {})
    return any(worker.get("resources", {}).get("GPU", 0) >= 1 for worker in workers.values())


def status(store: JobStore, user: str, job_id: str) -> JobRecord:
    """The job's record; a job whose Dask task failed outside the job (a worker that died), or a running job whose
    heartbeat is older than :data:`STALE_AFTER_S`, is marked failed."""
    record = store.read(user, job_id)
    reason = "" if record.done else _lost(record, _futures.get(job_id))
    if reason:
        record = store.update(user, job_id, status="failed", finished=time.time(),
                              error=f"The worker running this job stopped ({reason}). {_LOST}")
    if record.done:
        _futures.pop(job_id, None)
    return record


def _lost(record: JobRecord, future) -> str:
    """Why the worker of a job that has not ended is known to be gone, or ``""`` while it may be alive."""
    if future is not None and future.status in ("error", "cancelled", "lost"):
        return str(future.exception()) if future.status == "error" else future.status
    last = record.heartbeat or record.started
    if record.status == "running" and last is not None and time.time() - last > STALE_AFTER_S:
        return f"no heartbeat for {time.time() - last:.0f} s"
    return ""


def cancel(store: JobStore, user: str, job_id: str) -> JobRecord:
    """Ask the job to stop: a queued job is cancelled at once, a running one at its next progress report."""
    record = store.read(user, job_id)
    if record.done:
        return record
    store.request_cancel(user, job_id)
    if record.status == "queued":
        record = store.update(user, job_id, status="cancelled", finished=time.time(), message="cancelled")
    return record


def list_jobs(store: JobStore, user: str) -> list[JobRecord]:
    """``user``'s jobs, newest first, with the ones whose worker died marked failed."""
    return [status(store, user, record.id) if not record.done else record for record in store.list_jobs(user)]


def find_jobs(store: JobStore, user: str, kind: str, params_list: list[dict]) -> list[JobRecord | None]:
    """For each of ``params_list`` (as :func:`checked_params` returns them), ``user``'s newest ``kind`` job with
    exactly these parameters, whatever its status, or ``None``: how a page finds its jobs again after a refresh."""
    def normal(params: dict) -> str:
        return json.dumps(params, sort_keys=True, default=str)

    newest: dict[str, JobRecord] = {}
    for record in list_jobs(store, user):
        if record.kind == kind:
            newest.setdefault(normal(record.params), record)
    return [newest.get(normal(params)) for params in params_list]


def wait(store: JobStore, user: str, job_id: str, progress: Callable[[float, str], None] = lambda f, m: None,
         poll_s: float = 0.2, timeout_s: float | None = None) -> JobRecord:
    """Wait for the job to end, calling ``progress(fraction, message)`` as its record changes; returns the
    final record (or the current one after ``timeout_s``)."""
    start = time.monotonic()
    while True:
        record = status(store, user, job_id)
        progress(record.progress, record.message)
        if record.done or (timeout_s is not None and time.monotonic() - start > timeout_s):
            return record
        time.sleep(poll_s)


class _Reporter:
    """The progress callback of a running job: raises :class:`JobCancelled` when the cancel flag is up, and
    writes the fraction and message into the record at most every ``_PROGRESS_INTERVAL_S`` seconds (holding
    ``lock``, which the heartbeat's writes hold too)."""

    def __init__(self, store: JobStore, user: str, job_id: str, lock: threading.Lock):
        self.store, self.user, self.job_id, self.lock = store, user, job_id, lock
        self.last = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        if self.store.cancel_requested(self.user, self.job_id):
            raise JobCancelled
        now = time.monotonic()
        if now - self.last >= _PROGRESS_INTERVAL_S:
            self.last = now
            with self.lock:
                self.store.update(self.user, self.job_id, progress=float(min(1.0, max(0.0, fraction))),
                                  message=str(message)[:200], heartbeat=time.time())


@contextmanager
def _heartbeat(store: JobStore, user: str, job_id: str, lock: threading.Lock):
    """While the block runs, a thread rewrites the record's ``heartbeat`` every :data:`HEARTBEAT_INTERVAL_S`
    seconds (holding ``lock``); it has stopped when the block ends."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                with lock:
                    store.update(user, job_id, heartbeat=time.time())
            except (OSError, ValueError):  # a record deleted or damaged meanwhile: the job itself goes on
                continue

    thread = threading.Thread(target=beat, name=f"sccore-heartbeat-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_job(cache_dir: str, results_dir: str, user: str, job_id: str) -> str:
    """Run a job inside a Dask worker and return its result path (``""`` when it did not finish); its record
    says how it went. The result is written atomically, so a job killed midway leaves none."""
    store = JobStore(cache_dir)
    if store.cancel_requested(user, job_id):
        store.update(user, job_id, status="cancelled", finished=time.time(), message="cancelled")
        return ""
    record = store.update(user, job_id, status="running", started=time.time(), heartbeat=time.time(), finished=None,
                          progress=0.0, message="starting", error="")
    lock = threading.Lock()
    try:
        target = result_path(record.kind, record.params, results_dir)
        cached = _is_finished(record.kind, record.params, target)
        if not cached:
            _remove_stale_temporaries(target if record.kind in ("train", "atlas") else target.parent)
            with _heartbeat(store, user, job_id, lock):
                _RUNNERS[record.kind](record.params, target, _Reporter(store, user, job_id, lock))
        store.update(user, job_id, status="finished", finished=time.time(), progress=1.0, result=str(target),
                     cached=cached, message="found in the cache" if cached else "done")
        return str(target)
    except JobCancelled:
        store.update(user, job_id, status="cancelled", finished=time.time(), message="cancelled")
    except Exception as error:  # noqa: BLE001 - every failure is reported in the record
        store.update(user, job_id, status="failed", finished=time.time(), error=f"{type(error).__name__}: {error}"
                     if not isinstance(error, InputError) else str(error))
    return ""


def _is_finished(kind: str, params: dict, target: Path) -> bool:
    """Whether the result at ``target`` is complete: a file, or a model folder in the cache whose training reached
    its end (a folder named in ``out`` is always resumed, as `train --out` does, so that more epochs continue it)."""
    if kind == "atlas":  # a folder named in out is always handed to build_atlas, which checks what it holds
        return not params.get("out") and (target / "atlas.h5ad").is_file()
    if kind != "train":
        return target.is_file()
    if params.get("out"):
        return False
    try:
        state = json.loads((target / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return state.get("steps", 0) >= state.get("total_steps", 1)


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed job left in ``folder`` and below (``atomic_write``'s ``.<name>.*.tmp*``):
    the result's folder, or a training job's model folder or an atlas."""
    for path in folder.rglob(".*.tmp*") if folder.is_dir() else []:
        path.unlink(missing_ok=True)


def _open_counts(params: dict):
    """The job's input as raw counts (validated like every file the app opens)."""
    from .io import open_dataset

    return open_dataset(params["input"], library_size_key=params.get("library_size_key"))


def _write_h5ad(adata, target: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomic_write(target, adata.write_h5ad, suffix=".h5ad")


def _run_train(params: dict, target: Path, report) -> None:
    """Masked-gene pretraining into the model folder ``target`` (resumed from its checkpoint when it has one)."""
    from .models import TrainConfig, preset, train

    config = TrainConfig(epochs=params["epochs"], batch_size=params["batch_size"], grad_accum=params["grad_accum"],
                         learning_rate=params["learning_rate"], seed=params["seed"], device=params["device"])
    model_config = preset(params["config"], vocab_size=3, n_bins=params["n_bins"], add_cls=params["cls"])
    train(_open_counts(params), target, model_config, config, library_size_key=params["library_size_key"],
          resume=True, progress=report)


def _run_embed(params: dict, target: Path, report) -> None:
    """The encoder's embedding of the input's cells, written as the input with ``obsm[key_added]``."""
    from .encode import encoder

    adata = _open_counts(params)
    encoder(adata, params["model"], key_added=params["key_added"], pooling=params["pooling"], layer=params["layer"],
            batch_size=params["batch_size"], device=params["device"], library_size_key=params["library_size_key"],
            gene_id_key=params["gene_id_key"], progress=report)
    _write_h5ad(adata, target)


def _run_umap(params: dict, target: Path, report) -> None:
    """UMAP of ``obsm[use_rep]`` on FAISS neighbours, written as the input with ``obsm[key_added]``."""
    from dataclasses import replace

    from .io import read_h5ad
    from .neighbors import IndexParams, knn
    from .umap import UMAPParams, umap

    adata = read_h5ad(params["input"])
    if params["use_rep"] not in adata.obsm:
        raise InputError(f"The input has no obsm['{params['use_rep']}']; embed it first (`python -m sccore embed`).")
    index_params = IndexParams(kind=params["index"])
    report(0.1, "nearest neighbours (FAISS)")
    neighbors = knn(adata.obsm[params["use_rep"]], params["n_neighbors"] + 1, index_params)
    report(0.4, "UMAP")
    umap_params = replace(UMAPParams(), n_neighbors=params["n_neighbors"], min_dist=params["min_dist"],
                          random_state=params["seed"])
    umap(adata, params["use_rep"], neighbors, umap_params, index_params, key_added=params["key_added"])
    report(0.95, "writing")
    _write_h5ad(adata, target)


def _run_screen(params: dict, target: Path, report) -> None:
    """A knockout screen (``python -m sccore screen``) of the ``where`` cells (at most ``max_cells`` of them), scored
    against the ``goal`` cells when it names some (the start: the screened cells, or every ``where`` cell with
    ``goal_start="population"``), written as a CSV."""
    import numpy as np

    from .device import resolve_device
    from .embed import PCAParams, pca
    from .models import load_model
    from .perturb import choose_cells, goal_for, screen
    from .pp import default_params, preprocess

    raw = _open_counts(params)
    qc = {key: params[key] for key in _QC_DEFAULTS if key != "library_size_key"}
    preprocess_params = default_params(raw, **qc, **({"library_size_key": params["library_size_key"]}
                                                     if params["library_size_key"] else {}))
    report(0.0, "quality control, normalisation and PCA")
    adata = preprocess(raw, preprocess_params)
    pca(adata, PCAParams(n_comps=params["n_comps"]))
    method = params["model"] if params["model"] in ("pca", "linear") else "encoder"
    model = load_model(params["model"], resolve_device(params["device"])) if method == "encoder" else None
    population = cells = choose_cells(adata, params["where"])
    if params["max_cells"] and len(cells) > params["max_cells"]:
        cells = np.sort(np.random.default_rng(params["seed"]).choice(cells, params["max_cells"], replace=False))
    if params["goal_start"] not in ("cells", "population"):
        raise InputError(f"goal_start is cells (the screened cells, as `python -m sccore screen --goal`) or population "
                         f"(every cell of where, as the Knockout page), not '{params['goal_start']}'.")
    start = cells if params["goal_start"] == "cells" else population
    goal = goal_for(adata, method, model, start, params["goal"], preprocess_params.library_size_key)
    table = screen(adata, cells, method, model=model, top=params["top"], goal=goal, seed=params["seed"],
                   library_size_key=preprocess_params.library_size_key, estimate=params["estimate"],
                   exact_top=params["exact_top"], progress=report)
    atomic_write(target, lambda tmp: table.to_csv(tmp, index=False), suffix=".csv")


def _run_metrics(params: dict, target: Path, report) -> None:
    """scIB metrics of the input's embeddings (``python -m sccore metrics``), written as a CSV."""
    from .io import read_h5ad
    from .metrics import MetricsParams, benchmark_embeddings
    from .neighbors import IndexParams

    adata = read_h5ad(params["input"])
    metrics_params = MetricsParams(max_silhouette_cells=params["max_silhouette_cells"], seed=params["seed"],
                                   index=IndexParams(kind=params["index"]))
    table = benchmark_embeddings(adata, params["label_key"], params["batch_key"], list(params["embeddings"]),
                                 params["unintegrated_key"], metrics_params, progress=report)
    atomic_write(target, lambda tmp: table.reset_index().to_csv(tmp, index=False), suffix=".csv")


def _run_atlas(params: dict, target: Path, report) -> None:
    """The atlas of a file too large for memory (``python -m sccore atlas``) in the folder ``target``; a job
    killed midway resumes after the atlas's last finished stage."""
    from .atlas import atlas_params, build_atlas

    build_atlas(params["input"], target, atlas_params(params["input"], params["chunk_cells"], params["recall"],
                                                      min_genes=params["min_genes"],
                                                      n_top_genes=params["n_top_genes"]), progress=report)


_RUNNERS = {"train": _run_train, "embed": _run_embed, "umap": _run_umap, "screen": _run_screen,
            "metrics": _run_metrics, "atlas": _run_atlas}
