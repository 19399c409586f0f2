"""The Knockout page's screens: the ``screen`` task (``sccore.tasks.screen``), in this session on the page's dataset
(its in-memory core, ``compute``; a click stops it, keeping a partial result), or as one background ``screen`` job per
method (its ``run``), found again in the job records; and the ranked tables shown.

A screen's settings are a :class:`dashboard.session.ScreenRequest`; each method's parameters are the task's
:class:`~sccore.tasks.screen.ScreenParams` (:func:`screen_params`, the same in this session and in a job); its result
a :class:`dashboard.session.ScreenRecord`, kept in the session and, once complete, for every session
(``dashboard.cached.remember_result``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import background, cached, session, state, widgets
from dashboard.explain import column_help
from dashboard.session import Failure, ScreenRecord, ScreenRequest
from sccore import InputError
from sccore.export import csv_bytes
from sccore.glossary import agreement_note
from sccore.perturb import choose_cells, goal_for, sample_cells
from sccore.report import CAVEAT, METHOD_LABELS, method_agreement
from sccore.tasks import screen as screen_task
from sccore.tasks.screen import ScreenParams
from sccore.workflow import Analysis

RUNNING = "screen_running"  # set while a screen runs in this session (widgets.run_stoppable)
CANCEL = "screen_cancel"  # set by the Cancel button
REP = {"encoder": "X_encoder", "pca": "X_pca", "linear": "X_pca"}
COLUMNS = ["gene", "n_cells", "mean_cosine", "mean_shift", "fdr", "goal_alignment", "goal_cosine_gain", "estimate"]
NUMBER_FORMATS = {"mean_cosine": "%.6f", "mean_shift": "%.3g", "mean_shift_norm": "%.3g", "fdr": "%.3g",
                  "p_value": "%.3g", "goal_alignment": "%.3f", "goal_cosine_gain": "%.3g"}


def population_cells(adata, population: session.Population, max_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Every cell of the population, and its sample of at most ``max_cells`` (``sccore.perturb.sample_cells``)."""
    everyone = choose_cells(adata, dict([population]) if population else None)
    return everyone, sample_cells(everyone, max_cells)


def screen_params(analysis: Analysis, request: ScreenRequest, method: str) -> ScreenParams:
    """The ``screen`` task's parameters of ``method`` for ``request`` on the current dataset, with the analysis's
    filters and PCA, its goal starting from the whole population: what this session computes, and what a background
    job gets (with the file it reads as its input, :func:`job_params`)."""
    return ScreenParams(where=dict([request.population]) if request.population else {},
                        goal=dict([request.goal]) if request.goal else {}, goal_start="population", top=request.top,
                        max_cells=request.max_cells, estimate=request.estimate if method == "encoder" else "exact",
                        **state.perturbation_fields(analysis, request.model_folder, method))


def screened_cells(analysis: Analysis, request: ScreenRequest) -> tuple[np.ndarray, np.ndarray]:
    """The screen's population and the cells it screens (``sccore.tasks.screen.screened_cells``)."""
    return screen_task.screened_cells(analysis.adata, screen_params(analysis, request, "pca"))


def check_cells(analysis: Analysis, request: ScreenRequest) -> None:
    """Refuse an empty population, or a goal equal to its start, before a screen runs or is queued."""
    everyone, _ = screened_cells(analysis, request)
    if request.goal:
        goal_for(analysis.adata, "pca", None, everyone, dict([request.goal]))


def job_params(analysis: Analysis, request: ScreenRequest, create: bool) -> list[dict] | None:
    """The ``screen`` jobs' parameters for ``request`` (:func:`screen_params` of each method, serialised), one per
    method; None when ``create`` is off and the demo has no file yet."""
    source = state.current_source()[0]
    params = [background.job_params("screen", source, screen_params(analysis, request, method), create)
              for method in request.methods]
    return None if None in params else params


def _keep(request: ScreenRequest, record: ScreenRecord, remember: bool) -> None:
    """Keep ``record`` in the session and, when ``remember``, for every session."""
    session.keep(session.SCREENS, request, record)
    if remember:
        cached.remember_result(request, record)


def from_jobs(analysis: Analysis, request: ScreenRequest) -> ScreenRecord | tuple[str, ...] | None:
    """The background screens of ``request`` from the job records (also after a browser refresh): a record once every
    method's job has ended, their job ids while some run, None when there are none."""
    params = job_params(analysis, request, create=False)
    records = background.find_jobs("screen", params) if params else [None]
    if None in records:
        return None
    if not all(record.done for record in records):
        return tuple(record.id for record in records)
    everyone, cells = screened_cells(analysis, request)
    tables, errors = background.csv_results(dict(zip(request.methods, records)))
    record = ScreenRecord(tables, errors, False, {m: 1.0 for m in request.methods}, len(everyone), len(cells))
    _keep(request, record, remember=not errors)
    return record


def run_screen(analysis: Analysis, request: ScreenRequest, progress, should_stop) -> ScreenRecord:
    """The screen task's ``compute`` by each method of ``request`` (:func:`screen_params`; the goal in the analysis's
    embedding of the method) until ``should_stop``; stopped early, the record is partial (each method's share of the
    cells screened is in its ``progress``)."""
    adata, methods = analysis.adata, request.methods
    everyone, cells = screened_cells(analysis, request)
    tables, errors, done = {}, {}, {method: 0.0 for method in methods}
    for position, method in enumerate(methods):
        if should_stop():
            break

        def report(fraction: float, message: str, position=position, method=method) -> None:
            done[method] = fraction
            progress((position + fraction) / len(methods), f"{METHOD_LABELS[method]}: {message}")

        try:
            model = (cached.loaded_model(request.model_folder, analysis.params.encoder_device) if method == "encoder"
                     else None)
            tables[method] = screen_task.compute(adata, screen_params(analysis, request, method), model,
                                                 analysis.params.preprocess.library_size_key,
                                                 adata.obsm[REP[method]], report, should_stop)
        except InputError as error:
            errors[method] = str(error)
    partial = should_stop() and any(done[m] < 1.0 for m in methods if m not in errors)
    return ScreenRecord(tables, errors, partial, done, len(everyone), len(cells))


def screen_outcome(analysis: Analysis, request: ScreenRequest, run: bool, in_background: bool):
    """What to show for ``request``: a finished screen (kept, or remembered from any session), a :class:`Failure`,
    the job ids of its background screens, or None. With ``run``, the screen is computed here (a click stops it) or
    queued as background jobs (``in_background``), unless a complete result is remembered."""
    finished = cached.recall_result(request)
    if run and finished is not None:
        session.keep(session.SCREENS, request, finished)
    elif run:
        try:
            check_cells(analysis, request)
            if in_background:
                background.submit_missing("screen", state.current_source()[0], job_params(analysis, request, True))
                session.kept_results(session.SCREENS).pop(request, None)  # shown from the jobs
            else:
                widgets.run_stoppable(lambda progress, should_stop: run_screen(analysis, request, progress,
                                                                               should_stop),
                                      lambda record: _keep(request, record, remember=not record.partial), RUNNING,
                                      CANCEL, "Starting the screen…")
        except InputError as error:
            session.keep(session.SCREENS, request, Failure(str(error)))
    kept = session.outcome_of(session.SCREENS, request)
    return kept or finished or from_jobs(analysis, request)


def show_screen(record: ScreenRecord, request: ScreenRequest, title: str) -> None:
    """A screen's ranked table per method (tabs), its CSV, and how far the methods' rankings agree."""
    tables = record.tables
    for method, message in record.errors.items():
        st.error(f"{METHOD_LABELS[method]}: {plain(message)}")
    sampled = (f", a random sample of {record.n_cells:,} of its {record.n_population:,} cells"
               if record.n_cells < record.n_population else f", {record.n_cells:,} cells")
    goal_text = f"; goal: {request.goal[0]} = {request.goal[1]}" if request.goal else ""
    st.subheader(widgets.plain(f"{title}{sampled}{goal_text}"))
    if record.partial:
        done_text = "; ".join(f"{METHOD_LABELS[m]} {100 * f:.0f} % of the cells" for m, f in record.progress.items()
                              if m not in record.errors)
        st.warning(f"**Partial result**: the screen was cancelled ({done_text}). Each gene's numbers cover only the "
                   "cells screened so far. Press **Run screen** to compute it fully.")
    if not tables:
        return
    score = "goal_alignment" if request.goal else "mean_shift"
    for tab, (method, table) in zip(st.tabs([f"{METHOD_LABELS[m]} ({len(t):,} genes)" for m, t in tables.items()]),
                                    tables.items()):
        shown = [c for c in COLUMNS if c in table.columns]
        tab.dataframe(table[shown], hide_index=True, width="stretch",
                      column_config=column_help(table[shown], NUMBER_FORMATS), key=f"sc_table_{method}")
    long = pd.concat(tables.values(), ignore_index=True)
    long.insert(0, "status", "partial" if record.partial else "complete")
    st.download_button("Screen results (CSV, every method)", lambda: csv_bytes(long),
                       file_name="knockout_screen_partial.csv" if record.partial else "knockout_screen.csv",
                       mime="text/csv", key="sc_csv")
    if len(tables) > 1:
        st.markdown(f"**Do the methods agree?** Spearman correlation of the genes' {score} between methods, and how "
                    "many of their best genes they share:")
        agreement = method_agreement(tables, score)
        st.dataframe(agreement, hide_index=True, column_config=column_help(agreement, {"spearman_rho": "%.2f"}),
                     key="sc_agreement")
        pair = agreement[agreement["methods"] == f"{METHOD_LABELS['encoder']} vs {METHOD_LABELS['linear']}"]
        note = (agreement_note(float(pair["spearman_rho"].iloc[0]), int(pair["shared_genes"].iloc[0]),
                               "the screened genes") if len(pair) else None)
        if note:
            st.markdown(note)
    st.info(CAVEAT)
