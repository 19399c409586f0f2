"""What this browser session computed: typed requests and their results, kept in ``st.session_state``.

Each page keeps its results under a slot (:data:`KNOCKOUTS`, :data:`SCREENS`, :data:`TRANSFERS`,
:data:`MAPPED_TRANSFERS`, :data:`METRICS`) as a dict from a frozen request record (what was asked: the
analysis, the parameters) to its outcome: the result, or a :class:`Failure` with the message that names the
fix. A page shows the outcome of the request its widgets make now; the Report page reads every kept result of
the current analysis through the same records (:func:`session_knockouts`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import pandas as pd
import streamlit as st

from sccore import InputError
from sccore.perturb import KnockoutResult
from sccore.settings import printable
from sccore.tasks.metrics import MetricsTaskParams
from sccore.transfer import MappedTransfer, TransferResult

KNOCKOUTS = "knockout_results"
SCREENS = "screen_results"
TRANSFERS = "tr_result"
MAPPED_TRANSFERS = "map_result"
METRICS = "mt_request"
THRESHOLD = "tr_threshold"  # the Search page's confidence threshold widget, which scores transfers in the report

Population = tuple[str, str] | None  # an obs column and one of its values; None for every cell
T = TypeVar("T")


@dataclass(frozen=True)
class Failure:
    """A computation refused with an :class:`sccore.InputError`: its message, which names the fix."""

    message: str


@dataclass(frozen=True)
class KnockoutRequest:
    """A knockout of one gene on the Knockout page."""

    analysis_key: str
    model_folder: str
    gene: str
    population: Population
    mode: str
    max_cells: int


@dataclass(frozen=True)
class KnockoutRecord:
    """A knockout's outcome: each method's result or the message of its error, and how many cells the population
    had and were chosen from it."""

    results: dict[str, KnockoutResult | str]
    n_population: int
    n_chosen: int


@dataclass(frozen=True)
class ScreenRequest:
    """A screen on the Knockout page (``goal``: an obs column and value, or None)."""

    analysis_key: str
    model_folder: str
    population: Population
    methods: tuple[str, ...]
    top: int
    max_cells: int
    goal: tuple[str, str] | None
    estimate: str


@dataclass(frozen=True)
class ScreenRecord:
    """A screen's tables by method, each failed method's message, whether it was cancelled (``partial``), each
    method's share of the cells screened, and how many cells the population had and were screened."""

    tables: dict[str, pd.DataFrame]
    errors: dict[str, str]
    partial: bool
    progress: dict[str, float]
    n_population: int
    n_cells: int


@dataclass(frozen=True)
class TransferRequest:
    """A label transfer within the dataset on the Search & transfer page (``reference``: the split's
    description)."""

    analysis_key: str
    use_rep: str
    label_key: str
    reference: str
    k: int


@dataclass(frozen=True)
class TransferRecord:
    """A transfer within the dataset: its result (no threshold) and the query cells' positions."""

    result: TransferResult
    query: np.ndarray


@dataclass(frozen=True)
class MappedTransferRequest:
    """A label transfer with another dataset (``source``) on the Search & transfer page."""

    analysis_key: str
    use_rep: str
    source: str
    this_is_reference: bool
    gene_id_key: str
    label_key: str
    k: int


@dataclass(frozen=True)
class MetricsRequest:
    """Integration metrics asked for on the Metrics page."""

    analysis_key: str
    label_key: str
    batch_key: str
    embeddings: tuple[str, ...]

    def task_params(self, source: str) -> MetricsTaskParams:
        """The ``metrics`` task's parameters of this request on ``source``'s analysis (the other fields: the task's
        defaults)."""
        return MetricsTaskParams(input=source, label_key=self.label_key, batch_key=self.batch_key,
                                 embeddings=self.embeddings)


def kept_results(slot: str) -> dict:
    """The requests kept in ``slot`` and their outcomes, oldest first (an empty dict the first time)."""
    return st.session_state.setdefault(slot, {})


def keep(slot: str, request, outcome, most: int | None = None) -> None:
    """Keep ``outcome`` for ``request`` in ``slot`` as its newest entry, and only the ``most`` newest (None: all)."""
    kept = kept_results(slot)
    kept.pop(request, None)
    kept[request] = outcome
    while most is not None and len(kept) > most:
        del kept[next(iter(kept))]


def outcome_of(slot: str, request):
    """What ``slot`` keeps for ``request``: a result, a :class:`Failure`, or None when it was never run."""
    return kept_results(slot).get(request)


def run_and_keep(slot: str, request, compute: Callable[[], T], most: int | None = None) -> T | Failure:
    """Run ``compute`` and keep its result for ``request`` in ``slot`` (:func:`keep`); an :class:`InputError` is kept
    as a :class:`Failure`. Returns what was kept."""
    try:
        outcome = compute()
    except InputError as error:
        outcome = Failure(str(error))
    keep(slot, request, outcome, most)
    return outcome


def _results_of(slot: str, analysis_key: str, kind: type) -> list[tuple]:
    """(request, result) of the successful results in ``slot`` for this analysis, oldest first."""
    return [(request, outcome) for request, outcome in kept_results(slot).items()
            if request.analysis_key == analysis_key and isinstance(outcome, kind)]


def session_knockouts(analysis_key: str) -> pd.DataFrame | None:
    """The knockouts this session ran on the Knockout page for this analysis: one row per gene and method (the
    methods that failed left out), or None."""
    from sccore.report import describe_cells

    rows = []
    for request, record in _results_of(KNOCKOUTS, analysis_key, KnockoutRecord):
        cells = describe_cells(dict([request.population]) if request.population else None, record.n_chosen,
                               record.n_population)
        rows += [{**result.summary(), "cells": cells, "mode": request.mode} for result in record.results.values()
                 if not isinstance(result, str)]
    return pd.DataFrame(rows) if rows else None


def session_screens(analysis_key: str) -> dict:
    """The screens this session ran on the Knockout page for this analysis, as ``sccore.report.ScreenReport`` by a
    key that changes when a screen is recomputed (its request, whether it is partial, its number of cells)."""
    from sccore.report import ScreenReport, describe_cells

    screens = {}
    for request, record in _results_of(SCREENS, analysis_key, ScreenRecord):
        if not record.tables:
            continue
        goal = request.goal
        cells = describe_cells(dict([request.population]) if request.population else None, record.n_cells,
                               record.n_population)
        screens[(request, record.partial, record.n_cells)] = ScreenReport(
            cells, record.tables, goal=f"{goal[0]} = {goal[1]}" if goal else "", partial=record.partial)
    return screens


def metrics_request(analysis_key: str) -> MetricsRequest | None:
    """The Metrics page's last request for this analysis, or None."""
    request = st.session_state.get(METRICS)
    return request if isinstance(request, MetricsRequest) and request.analysis_key == analysis_key else None


def session_transfer(analysis) -> pd.DataFrame | None:
    """The label transfers the Search & transfer page ran for this analysis (within the dataset, and with another
    dataset when the query has true labels), scored at the page's threshold: one row each, or None."""
    from sccore.transfer import score

    threshold = float(st.session_state.get(THRESHOLD, 0.5))
    rows = []
    for request, record in _results_of(TRANSFERS, analysis.key, TransferRecord):
        truth = analysis.adata.obs[request.label_key].iloc[record.query].to_numpy()
        rows.append({"labels": request.label_key, "embedding": request.use_rep, "reference": request.reference,
                     "query": "the other cells", "k": request.k, "threshold": threshold,
                     "mean_confidence": float(record.result.confidence.mean()),
                     **score(truth, record.result.assigned(threshold))})
    for request, mapped in _results_of(MAPPED_TRANSFERS, analysis.key, MappedTransfer):
        if request.label_key not in mapped.obs:
            continue
        other = printable(Path(request.source).name)
        rows.append({"labels": request.label_key, "embedding": request.use_rep,
                     "reference": "this dataset" if request.this_is_reference else other,
                     "query": other if request.this_is_reference else "this dataset", "k": request.k,
                     "threshold": threshold, "mean_confidence": float(mapped.result.confidence.mean()),
                     **score(mapped.obs[request.label_key].to_numpy(), mapped.result.assigned(threshold))})
    if not rows:
        return None
    return pd.DataFrame(rows).drop(columns=["types_never_predicted"])
