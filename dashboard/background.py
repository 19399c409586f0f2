"""Background jobs on Dask for the pages: the server's Dask client, job parameters and submission on the current
dataset's file, the user's jobs found again in the job records, and a progress bar that follows them.

The Jobs page lists and submits jobs; the Knockout page's screens and the Encoder page's training run as jobs
when "Run in the background" is on.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import streamlit as st

from sccore import InputError, jobs
from sccore.cache import atomic_write
from sccore.tasks.base import TaskParams

from dashboard.access import current_user
from dashboard.state import DEMO, checked_source, job_store, load_dataset, settings


@st.cache_resource(show_spinner="Starting the Dask cluster…", validate=lambda held: held[0].status != "closed")
def _dask_client(scheduler_address: str) -> list:
    return [jobs.connect(scheduler_address)]  # in a list: st.cache_resource refuses an awaitable such as a Client


def dask_client(scheduler_address: str):
    """One Dask client for the server: to ``scheduler_address``, or to a local cluster the app starts (a client
    that was closed, e.g. by a lab's scheduler that restarted, is replaced)."""
    return _dask_client(scheduler_address)[0]


def job_input(source: str, create: bool = True) -> str | None:
    """The file a job reads for ``source``: the file itself, or for the demo a copy written once into the cache
    folder (``None`` when ``create`` is off and that copy is not there yet)."""
    if source != DEMO:
        return checked_source(source)
    path = settings().cache_dir / "demo" / "pbmc68k_reduced.h5ad"
    if create and not path.exists():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atomic_write(path, load_dataset(DEMO, None).copy().write_h5ad, suffix=".h5ad", private=True)
    return str(path) if path.exists() else None


def job_params(kind: str, source: str, params: TaskParams, create: bool = True) -> dict | None:
    """A ``kind`` job's parameters: ``params`` (the task's dataclass, as the page built it) reading ``source``'s file
    (:func:`job_input`), checked and serialised (``sccore.jobs.checked_params``); ``None`` when ``create`` is off and
    the demo has no file yet."""
    path = job_input(source, create)
    return None if path is None else jobs.checked_params(kind, replace(params, input=path))


def submit_job(kind: str, source: str, params: dict) -> str:
    """Queue a ``kind`` job with checked ``params`` (:func:`job_params`) for the current user on the settings'
    cluster, its result in ``source``'s cache folder; returns its id."""
    current = settings()
    return jobs.submit(dask_client(current.scheduler_address), job_store(), current_user(), kind, params,
                       results_dir=current.results_dir(None if source == DEMO else source))


def find_jobs(kind: str, params_list: list[dict]) -> list:
    """For each of ``params_list`` (checked parameters), the current user's newest ``kind`` job with exactly these
    parameters, or ``None``: read from the job records, so a page finds its jobs again after a browser refresh."""
    return jobs.find_jobs(job_store(), current_user(), kind, params_list)


def source_jobs(kind: str, source: str) -> list:
    """The current user's ``kind`` jobs on ``source``'s file, newest first (none while the demo has no file)."""
    path = job_input(source, create=False)
    if path is None:
        return []
    path = str(Path(path).resolve())
    return [record for record in jobs.list_jobs(job_store(), current_user())
            if record.kind == kind and record.params.get("input") == path]


@st.fragment(run_every=1.0)
def follow_jobs(job_ids: tuple[str, ...], what: str, cancel_key: str, hint: str) -> None:
    """A progress bar of the current user's jobs ``job_ids``, redrawn every second while the page stays open, and a
    button that cancels them; the whole page reruns (to show their result) once they have all ended."""
    store, user = job_store(), current_user()
    records = [jobs.status(store, user, job_id) for job_id in job_ids]
    if all(record.done for record in records):
        st.rerun()
    fraction = sum(record.progress for record in records) / len(records)
    messages = "; ".join(record.message or record.status for record in records if not record.done)
    st.progress(min(max(fraction, 0.0), 1.0), text=f"{what} runs in the background: {messages}")
    st.caption(f"Job {', '.join(f'`{job_id}`' for job_id in job_ids)}: it goes on when you leave this page or close "
               f"the browser, and the **Jobs** page (in the sidebar) lists it. {hint}")
    if st.button("Cancel", key=cancel_key, icon=":material/cancel:"):
        for record in records:
            jobs.cancel(store, user, record.id)
        st.rerun()


def submit_missing(kind: str, source: str, params_list: list[dict]) -> None:
    """Queue a ``kind`` job for each of ``params_list`` unless one with exactly these parameters is under way (a
    finished one is queued again: its result comes from the cache at once)."""
    for params, record in zip(params_list, find_jobs(kind, params_list)):
        if record is None or record.done:
            submit_job(kind, source, params)


def csv_results(records: dict[str, jobs.JobRecord]) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The CSV tables finished jobs wrote, by name, and for each job that failed, was cancelled or whose table cannot
    be read, the reason."""
    tables, errors = {}, {}
    for name, record in records.items():
        try:
            if record.status != "finished":
                raise InputError(record.error or f"The background job `{record.id}` was {record.status}.")
            tables[name] = pd.read_csv(record.result)
        except (InputError, OSError) as error:
            errors[name] = str(error)
    return tables, errors
