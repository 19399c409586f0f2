"""Background jobs on Dask distributed: training, fine-tuning, encoder embedding, batch integration, UMAP, knockout
screens, metrics, atlases, Leiden clusters, marker genes and differential expression.

Each job kind is a task of :mod:`sccore.tasks` (:data:`JOB_KINDS`: its parameters dataclass and its ``run``), so
a job computes exactly what the command line and the pages compute. A job's record holds its parameters as the
dataclass serialises them (``asdict()``), and its result's cache key is made from all of them.

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
flag file beside the record; the running task sees it (its ``should_stop``) between two units of work and stops
without writing a result.

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
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from .cache import atomic_write, file_lock, make_key
from .errors import Cancelled, InputError
from .settings import load_settings, user_folder_name
from .tasks import atlas as tasks_atlas
from .tasks import cluster as tasks_cluster
from .tasks import de as tasks_de
from .tasks import embed_encoder as tasks_embed
from .tasks import finetune as tasks_finetune
from .tasks import integrate as tasks_integrate
from .tasks import markers as tasks_markers
from .tasks import metrics as tasks_metrics
from .tasks import screen as tasks_screen
from .tasks import train as tasks_train
from .tasks import umap as tasks_umap
from .tasks.base import TaskParams

STATUSES = ("queued", "running", "finished", "failed", "cancelled")
DONE = ("finished", "failed", "cancelled")


@dataclass(frozen=True)
class JobKind:
    """A job kind: the task's parameters dataclass and ``run`` (:mod:`sccore.tasks`), and the name of its result
    in the cache."""

    params: type[TaskParams]
    run: Callable
    result_name: str


JOB_KINDS = {"train": JobKind(tasks_train.TrainParams, tasks_train.run, "model"),
             "finetune": JobKind(tasks_finetune.FinetuneParams, tasks_finetune.run, "model"),
             "embed": JobKind(tasks_embed.EmbedEncoderParams, tasks_embed.run, "embedded.h5ad"),
             "integrate": JobKind(tasks_integrate.IntegrateParams, tasks_integrate.run, "integrated.h5ad"),
             "umap": JobKind(tasks_umap.UMAPTaskParams, tasks_umap.run, "umap.h5ad"),
             "screen": JobKind(tasks_screen.ScreenParams, tasks_screen.run, "screen.csv"),
             "metrics": JobKind(tasks_metrics.MetricsTaskParams, tasks_metrics.run, "metrics.csv"),
             "atlas": JobKind(tasks_atlas.AtlasTaskParams, tasks_atlas.run, "atlas"),
             "cluster": JobKind(tasks_cluster.ClusterParams, tasks_cluster.run, "clusters.h5ad"),
             "markers": JobKind(tasks_markers.MarkersParams, tasks_markers.run, "markers.csv"),
             "de": JobKind(tasks_de.DEParams, tasks_de.run, "de.csv")}
KINDS = tuple(JOB_KINDS)
_PROGRESS_INTERVAL_S = 0.5
HEARTBEAT_INTERVAL_S = 10.0  # a running job rewrites its record's heartbeat this often (seconds)
STALE_AFTER_S = 60.0  # a running job whose heartbeat is older than this lost its worker
JOB_NICENESS = 19  # jobs run at the lowest CPU priority, below the app's pages (:func:`lower_priority`)
_LOST = ("Submit it again: training resumes from its last checkpoint, other jobs restart; no half result was "
         "kept.")
_START_LOCK = threading.Lock()  # one local cluster starts at a time (they read the environment)
_certificate_folders: dict[int, Path] = {}  # id of a local cluster -> the folder of its certificate
_futures: dict = {}  # job id -> the Dask future of a job this process submitted


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
        atomic_write(self.path(record.user, record.id), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
                     private=True)

    def read(self, user: str, job_id: str) -> JobRecord:
        """The record of ``user``'s job ``job_id``; :class:`InputError` when there is none."""
        try:
            data = json.loads(self.path(user, job_id).read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise InputError(f"{user} has no job '{job_id}'; `python -m sccore jobs` lists them.") from error
        known = {item.name for item in fields(JobRecord)}
        return JobRecord(**{key: value for key, value in data.items() if key in known})

    def update(self, user: str, job_id: str, when: Callable[[JobRecord], bool] | None = None,
               **changes) -> JobRecord:
        """Change some fields of a record and write it back, holding the record's lock so that no other process's
        update comes between the read and the write; with ``when``, only if ``when(record)`` holds for the record
        as read under the lock. Returns the record as it is then."""
        with file_lock(self.path(user, job_id).with_suffix(".lock")):
            record = self.read(user, job_id)
            if when is not None and not when(record):
                return record
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
    """A Dask client: to the scheduler at ``scheduler_address`` (``tls://`` only, with the certificate Dask's
    configuration names: :func:`sccore.dask_security.configured_security`), or (``""``) to a new local cluster of
    ``n_workers`` workers with one thread each and no dashboard. Close it with :func:`close`.

    The local cluster's scheduler and workers run as their own subprocesses (``python -m dask spec``), not
    as children forked or spawned from this one, so they never re-run the caller's main script (Streamlit's
    pages); they run this interpreter, so they import the ``sccore`` installed in its environment. They accept only
    TLS connections made with a certificate created for this cluster, in a folder only this account can read
    (:func:`sccore.dask_security.write_certificates`), so no other local account can submit work to them.
    """
    from distributed import Client
    from distributed.deploy.subprocess import SubprocessCluster

    from .dask_security import configured_security, security, tls_environment, write_certificates

    if scheduler_address:
        credentials = configured_security(scheduler_address)
        try:
            return Client(scheduler_address, timeout="10s", security=credentials)
        except (OSError, TimeoutError, ValueError) as error:
            raise InputError(f"No Dask scheduler answers at {scheduler_address} ({error}). Start the cluster, fix "
                             "scheduler_address in the settings (or --scheduler) and the certificate Dask's settings "
                             "name, or leave the address empty for a local cluster.") from error
    folder = write_certificates(tempfile.mkdtemp(prefix="sccore-dask-"))
    with _START_LOCK, _environment(tls_environment(folder)):
        cluster = SubprocessCluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=None,
                                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0",  # its health page
                                                      "protocol": "tls"},
                                    silence_logs=logging.ERROR, security=security(folder))
    _certificate_folders[id(cluster)] = folder
    return Client(cluster)


def certificate_folder(client) -> Path | None:
    """The folder of the certificate of the local cluster :func:`connect` started for ``client`` (None for a lab's
    cluster): with :func:`sccore.dask_security.tls_config` of it, another client in this account may connect."""
    return _certificate_folders.get(id(client.cluster)) if client.cluster is not None else None


@contextmanager
def _environment(variables: dict[str, str]):
    """Set environment ``variables`` (read by the subprocesses started meanwhile), then restore the old values."""
    old = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def close(client) -> None:
    """Close ``client`` and the local cluster :func:`connect` started for it, with its certificate (a lab's cluster
    stays up)."""
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()
        folder = _certificate_folders.pop(id(cluster), None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def file_digest(path: str | os.PathLike) -> str:
    """A hash of a file's bytes, for cache keys."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _kind(kind: str) -> JobKind:
    """The job kind ``kind``; :class:`InputError` naming the kinds for an unknown one."""
    if kind not in JOB_KINDS:
        raise InputError(f"Unknown job kind '{kind}': use one of {', '.join(KINDS)}.")
    return JOB_KINDS[kind]


def job_key(kind: str, params: dict) -> str:
    """The cache key of a job's result: its kind, the input file's content, the model folder's files (when
    it names one) and every other parameter, as the kind's dataclass serialises them."""
    from .models.store import model_fingerprint

    model = params.get("model")
    model_part = (model_fingerprint(model) if kind in ("embed", "screen", "finetune") and model not in ("pca", "linear")
                  else "")
    output_field = _kind(kind).params.output_field
    others = {key: value for key, value in params.items() if key not in ("input", output_field)}
    return make_key("job", kind, file_digest(params["input"]), model_part, others)


def result_path(kind: str, params: dict, results_dir: str | os.PathLike) -> Path:
    """Where the result of a job with these parameters is written: the path its output parameter names (a training's
    or an atlas's ``out``), else ``results_dir/<key>/<name>``."""
    spec = _kind(kind)
    if params.get(spec.params.output_field):
        return Path(params[spec.params.output_field])
    return Path(results_dir) / job_key(kind, params) / spec.result_name


def default_parameters(kind: str) -> dict:
    """Every parameter of a ``kind`` job but its input, with its default (``""`` where it has none): what the Jobs
    page offers to edit."""
    from dataclasses import MISSING

    return {item.name: ("" if item.default is MISSING and item.default_factory is MISSING
                        else _kind(kind).params.default(item.name))
            for item in fields(_kind(kind).params) if item.name != "input"}


def checked_params(kind: str, params: dict | TaskParams) -> dict:
    """``params`` (a dict, or the kind's dataclass) completed with the kind's defaults and serialised as its dataclass
    serialises them, with the paths made absolute (workers may start in another folder); :class:`InputError` for an
    unknown kind or parameter, a missing required one, a value out of bounds, or an input file that does not exist."""
    spec = _kind(kind)
    params = params.asdict() if isinstance(params, TaskParams) else dict(params)
    if not params.get("input") or not Path(params["input"]).is_file():
        raise InputError(f"A {kind} job needs an existing .h5ad file as input, not '{params.get('input', '')}'.")
    params["input"] = str(Path(params["input"]).resolve())
    if isinstance(params.get("model"), str) and Path(params["model"]).is_dir():
        params["model"] = str(Path(params["model"]).resolve())
    output_field = spec.params.output_field
    if params.get(output_field):
        params[output_field] = str(Path(params[output_field]).expanduser().resolve())
    return spec.params.from_dict(params).asdict()


def submit(client, store: JobStore, user: str, kind: str, params: dict | TaskParams,
           results_dir: str | os.PathLike | None = None, max_active: int | None = None) -> str:
    """Queue a ``kind`` job for ``user`` on ``client``'s cluster and return its id.

    The result goes under ``results_dir`` (default: the store's cache folder). A job on ``device="cuda"``
    runs only on workers offering the ``GPU`` resource. A user with ``max_active`` jobs queued or running (default:
    the settings' ``max_jobs_per_user``) is refused until one ends.
    """
    from distributed import fire_and_forget

    params = checked_params(kind, params)
    check_quota(store, user, max_active)
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


def check_quota(store: JobStore, user: str, max_active: int | None = None) -> None:
    """:class:`InputError` naming the fix when ``user`` has ``max_active`` jobs queued or running already (default:
    the settings' ``max_jobs_per_user``)."""
    limit = load_settings().max_jobs_per_user if max_active is None else max_active
    active = [record for record in store.list_jobs(user) if not record.done]
    if len(active) >= limit:
        raise InputError(f"{user} already has {len(active)} job(s) queued or running, this server's limit per user "
                         f"({limit}). Wait for one to finish or cancel one (Jobs page, or `python -m sccore jobs "
                         "--cancel JOB_ID`), then submit again.")


def _offers_gpu(client) -> bool:
    """Whether a worker of ``client``'s cluster offers the ``GPU`` resource."""
    workers = client.scheduler_info().get("workers", {})
    return any(worker.get("resources", {}).get("GPU", 0) >= 1 for worker in workers.values())


def status(store: JobStore, user: str, job_id: str) -> JobRecord:
    """The job's record; a job whose Dask task failed outside the job (a worker that died), or a running job whose
    heartbeat is older than :data:`STALE_AFTER_S`, is marked failed."""
    record = store.read(user, job_id)
    future = _futures.get(job_id)
    reason = "" if record.done else _lost(record, future)
    if reason:  # checked again under the record's lock: a job that finished meanwhile stays finished
        record = store.update(user, job_id, when=lambda current: not current.done and bool(_lost(current, future)),
                              status="failed", finished=time.time(),
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
    """The progress callback of a running job: writes the fraction and message into the record at most every
    ``_PROGRESS_INTERVAL_S`` seconds (holding ``lock``, which the heartbeat's writes hold too)."""

    def __init__(self, store: JobStore, user: str, job_id: str, lock: threading.Lock):
        self.store, self.user, self.job_id, self.lock = store, user, job_id, lock
        self.last = 0.0

    def __call__(self, fraction: float, message: str) -> None:
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


def lower_priority(niceness: int = JOB_NICENESS) -> None:
    """Run this process (a job's worker) at least at ``niceness``: on a machine it shares with the app, the pages'
    work then takes the processors first, and a long job slows nobody's clicks (it only takes longer itself)."""
    current = os.nice(0)
    if current < niceness:
        os.nice(niceness - current)


def run_job(cache_dir: str, results_dir: str, user: str, job_id: str) -> str:
    """Run a job inside a Dask worker and return its result path (``""`` when it did not finish); its record
    says how it went. The kind's task (:data:`JOB_KINDS`) writes the result atomically, so a job killed midway
    leaves none."""
    lower_priority()
    store = JobStore(cache_dir)
    if store.cancel_requested(user, job_id):
        store.update(user, job_id, status="cancelled", finished=time.time(), message="cancelled")
        return ""
    record = store.update(user, job_id, status="running", started=time.time(), heartbeat=time.time(), finished=None,
                          progress=0.0, message="starting", error="")
    lock = threading.Lock()

    def should_stop() -> bool:
        return store.cancel_requested(user, job_id)

    reporter = _Reporter(store, user, job_id, lock)
    try:
        spec = JOB_KINDS[record.kind]
        params = spec.params.from_dict(record.params)
        target = result_path(record.kind, record.params, results_dir)
        with _heartbeat(store, user, job_id, lock), file_lock(
                store.cache_dir / "locks" / f"{make_key(str(target))}.lock", should_stop,
                lambda: reporter(0.0, "waiting for the same job (same input and parameters) to finish")):
            cached = _is_finished(record.kind, record.params, target)  # the same job may have just finished it
            if not cached:
                _remove_stale_temporaries(record.kind, target)  # safe: no other job writes this result now
                spec.run(replace(params, **{spec.params.output_field: str(target)}), reporter, should_stop)
        store.update(user, job_id, status="finished", finished=time.time(), progress=1.0, result=str(target),
                     cached=cached, message="found in the cache" if cached else "done")
        return str(target)
    except Cancelled:
        store.update(user, job_id, status="cancelled", finished=time.time(), message="cancelled")
    except Exception as error:  # noqa: BLE001 - every failure is reported in the record
        store.update(user, job_id, status="failed", finished=time.time(), error=f"{type(error).__name__}: {error}"
                     if not isinstance(error, InputError) else str(error))
    return ""


def _is_finished(kind: str, params: dict, target: Path) -> bool:
    """Whether the result at ``target`` in the cache is complete: a file, an atlas, or a model folder whose training
    reached its end. A result whose path the parameters name (a training's ``out``, resumed as `train --out` does,
    an atlas's ``out``, which :func:`sccore.atlas.build_atlas` checks, or another kind's ``output``) is always
    handed to the task."""
    if params.get(JOB_KINDS[kind].params.output_field):
        return False
    if kind == "atlas":
        return (target / "atlas.h5ad").is_file()
    if kind == "finetune":  # the task renames the finished model folder into place
        return (target / "config.json").is_file()
    if kind != "train":
        return target.is_file()
    try:
        state = json.loads((target / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return state.get("steps", 0) >= state.get("total_steps", 1)


def _remove_stale_temporaries(kind: str, target: Path) -> None:
    """Delete the temporary files a killed job left (``atomic_write``'s ``.<name>.*.tmp*``): beside a result file (or
    folder: a fine-tuned model is built in one), or anywhere in a training job's model folder or an atlas."""
    if kind in ("train", "atlas"):
        stale = target.rglob(".*.tmp*") if target.is_dir() else []
    else:
        stale = target.parent.glob(f".{target.name}.*.tmp*") if target.parent.is_dir() else []
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
