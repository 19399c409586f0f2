"""Widgets the pages share: a progress bar for a computation, "run, then show the result or the error", a run that
a click can stop, the legend strip above a row of plots, and a label transfer's scores and downloads."""

from __future__ import annotations

import html
import re
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import RerunException, StopException

from dashboard.explain import column_help
from sccore.export import csv_bytes
from sccore.glossary import help_for
from sccore.plots import confusion_figure
from sccore.transfer import UNASSIGNED, confusion_table, per_type_scores, score_labelled

Progress = Callable[[float, str], None]
T = TypeVar("T")


def _fraction(value: float) -> float:
    return min(max(value, 0.0), 1.0)


@contextmanager
def progress_bar(text: str) -> Iterator[Progress]:
    """A progress bar for the computation inside the ``with`` block: yields a ``(fraction, message)`` callback and
    removes the bar afterwards, also when the computation fails."""
    bar = st.progress(0.0, text=text)
    try:
        yield lambda fraction, message: bar.progress(_fraction(fraction), text=message)
    finally:
        bar.empty()


def shown_result(outcome, prompt: str):
    """The result in ``outcome`` (a kept outcome, ``dashboard.session``), for the page to show; None after showing
    ``prompt`` as a caption (never run with these settings) or the failure's message in an error box (the page stays
    up)."""
    from dashboard.session import Failure

    if outcome is None:
        st.caption(prompt)
        return None
    if isinstance(outcome, Failure):
        st.error(outcome.message)
        return None
    return outcome


def run_stoppable(compute: Callable[[Progress, Callable[[], bool]], T], keep: Callable[[T], None], running_key: str,
                  cancel_key: str, text: str) -> T:
    """Run ``compute(progress, should_stop)`` under a progress bar that a click stops; ``keep`` stores its result
    (complete or partial) in ``session_state``.

    ``should_stop()`` turns true when the cancel button set ``session_state[cancel_key]``, or when any click made
    Streamlit stop this run at its next element update (the progress bar) and start a new one at once
    (``runner.fastReruns``), or rerun it afterwards. Either way the computation ends after its current step,
    ``keep`` stores what was done and the click's request is raised again; while it finishes,
    ``session_state[running_key]`` is set, and the new run waits for it (:func:`wait_while_running`), then shows the
    kept result.
    """
    st.session_state[cancel_key] = False
    interrupted: dict = {}
    bar = st.progress(0.0, text=text)

    def should_stop() -> bool:
        return "request" in interrupted or bool(st.session_state.get(cancel_key))

    def progress(fraction: float, message: str) -> None:
        if "request" in interrupted:
            return  # a stopped run raises again at every element update
        try:
            bar.progress(_fraction(fraction), text=message)
        except (RerunException, StopException) as request:  # a click: finish the step, keep what was done
            interrupted["request"] = request

    st.session_state[running_key] = True
    try:
        result = compute(progress, should_stop)
        keep(result)
    finally:
        st.session_state.pop(running_key, None)
    if "request" in interrupted:
        raise interrupted["request"]
    bar.empty()
    return result


def wait_while_running(running_key: str, text: str, timeout_s: float = 120) -> None:
    """Wait (with a spinner) while a run that a click stopped (:func:`run_stoppable`) finishes its current step."""
    if st.session_state.get(running_key) is None:
        return
    with st.spinner(text):
        deadline = time.monotonic() + timeout_s
        while st.session_state.get(running_key) is not None and time.monotonic() < deadline:
            time.sleep(0.2)


MARKDOWN_SPECIALS = re.compile(r"([\\!\"#$%&'()*+,./:;<=>?@\[\]^_{|}~-])")  # ASCII punctuation but the backtick


def plain(text: str) -> str:
    """``text`` (a file's names and values, an error that quotes them) escaped for Streamlit's markdown, so it
    shows as written: no link, image, colour, icon, formula or emphasis a file's ``obs`` column or a job's error
    could smuggle in (code spans in backticks stay: nothing inside them is interpreted)."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def show_error(error: Exception | str) -> None:
    """An error box with ``error``'s message as plain text (:func:`plain`)."""
    st.error(plain(str(error)))


def legend_strip(column: str, legend: pd.DataFrame, note: str = "") -> None:
    """One line of coloured dots with each category's name and count (``sccore.render.legend_table``'s table), for
    a row of plots drawn in these colours; ``note`` ends the line."""
    items = " ".join(f'<span style="white-space:nowrap;margin-right:14px"><span style="color:{row.color}">●</span> '
                     f"{html.escape(str(row.category))} ({row.n_cells:,})</span>" for row in legend.itertuples())
    ending = f' · <span style="white-space:nowrap">{html.escape(note)}</span>' if note else ""
    st.markdown(f'<div style="font-size:0.85rem;line-height:1.7">{html.escape(column)}: {items}{ending}</div>',
                unsafe_allow_html=True)


def show_transfer(true: pd.Series | None, predicted: np.ndarray, confidence: np.ndarray, cell_names: pd.Index,
                  order: list[str], key_added: str, slot: str, cache_key, build_export) -> None:
    """A label transfer (``predicted`` labels of the query cells ``cell_names``, thresholded, and their confidence):
    scores where true labels exist, confusion heatmap and per-type table, and downloads. The h5ad download is
    ``build_export()`` (the query cells) with the labels in ``obs[key_added]`` and its confidence, cached under
    ``cache_key`` (the transfer's request); ``slot`` prefixes the widget keys."""
    from dashboard import cached

    n_unassigned = int(np.sum(predicted == UNASSIGNED))
    if true is not None:
        known = true.notna().to_numpy()
        truth = true.astype(str).to_numpy()[known]
        scores = score_labelled(true, predicted)
        cells, accuracy, f1, unassigned = st.columns(4)
        cells.metric("Query cells", f"{len(predicted):,}", help=help_for("n_cells"))
        accuracy.metric("Accuracy", f"{scores['accuracy']:.3f}", help=help_for("accuracy"))
        f1.metric("Macro F1", f"{scores['macro_f1']:.3f}", help=help_for("macro_f1"))
        unassigned.metric("Unassigned", f"{n_unassigned:,}",
                          help=f"{help_for('n_unassigned')} Accuracy over the assigned cells: "
                               f"{scores['accuracy_assigned']:.3f}.")
        if scores["types_never_predicted"]:
            st.caption(f"Never predicted: {plain(', '.join(scores['types_never_predicted']))} (absent from the "
                       "reference, or outvoted).")
        table = confusion_table(truth, predicted[known], order)
        st.plotly_chart(confusion_figure(table, "Confusion matrix (colour: share of each true type)"), width="stretch",
                        key=f"{slot}_confusion", config={"displaylogo": False})
        per_type = per_type_scores(truth, predicted[known], order)
        st.dataframe(per_type, hide_index=True, key=f"{slot}_per_type",
                     column_config=column_help(per_type, {"recall": "%.3f", "precision": "%.3f", "f1": "%.3f"}))
    else:
        st.metric("Query cells", f"{len(predicted):,}", help=help_for("n_cells"))
        counts = pd.Series(predicted).value_counts()
        counts = pd.DataFrame({"predicted": counts.index, "n_cells": counts.to_numpy()})
        st.dataframe(counts, hide_index=True, key=f"{slot}_counts", column_config=column_help(counts))
    st.caption(f"{help_for('confidence')} Mean confidence: {float(np.mean(confidence)):.3f}.")
    labels = pd.DataFrame({key_added: pd.Categorical(predicted), f"{key_added}_confidence": confidence},
                          index=pd.Index(cell_names, name="cell"))
    table = labels if true is None else pd.concat([true.rename(f"true_{true.name}"), labels], axis=1)
    left, right = st.columns(2)
    left.download_button("Labels (CSV)", lambda: csv_bytes(table, index=True),
                         file_name=f"{key_added}.csv", mime="text/csv",
                         key=f"{slot}_csv")
    right.download_button("Query cells with labels (h5ad)", cached.labelled_h5ad(cache_key, labels, build_export),
                          file_name=f"{key_added}.h5ad", mime="application/octet-stream", key=f"{slot}_h5ad")


def show_transfer_by_embedding(scores: pd.DataFrame) -> None:
    """The same label transfer's scores in each embedding (``cached.transfer_scores``), and the honest note on them."""
    from sccore.report import transfer_note

    st.markdown("**The same transfer in each embedding** (same reference, query, k and threshold)")
    st.dataframe(scores, hide_index=True, key="tr_by_embedding",
                 column_config=column_help(scores, {"accuracy": "%.3f", "macro_f1": "%.3f"}))
    note = transfer_note(scores)  # the encoder beside PCA; none without the encoder
    if note:
        st.info(note)
