"""Differential expression between two sets of cells, the Explore page's section: each set from the box or lasso
selection on the plot or from annotation values (B also from all the other cells), then the genes up and down in A,
a volcano plot, one click to colour the layouts by a gene, and a CSV (``sccore.markers.differential_expression``
through :func:`dashboard.cached.differential_expression`, cached by the two sets' content)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from sccore import InputError
from sccore.export import csv_bytes
from sccore.markers import COLUMNS, METHODS, group_order
from sccore.plots import volcano_figure
from sccore.tasks.de import DEParams
from sccore.workflow import Analysis

from dashboard import cached, clusters
from dashboard.explain import column_help
from dashboard.widgets import plain, show_error

ANNOTATION, SELECTION, OTHERS = "Annotation values", "Selection on the plot", "All other cells"
REQUEST = "de_request"  # session_state: the last comparison asked for (a Comparison)
TOP = 10  # genes listed up and down, offered for colouring
NAMED = 5  # of those, named on the volcano plot
FORMATS = {"score": "%.2f", "logfoldchange": "%.2f", "pvalue": "%.2e", "fdr": "%.2e", "pct_in": "%.2f",
           "pct_out": "%.2f"}


@dataclass
class Comparison:
    """A comparison asked for on the page: the cells (positions) of A and B, described, and the test."""

    analysis_key: str
    cells_a: np.ndarray
    cells_b: np.ndarray
    about_a: str
    about_b: str
    method: str


def _chosen_cells(analysis: Analysis, name: str, selected: np.ndarray, groupings: list[str],
                  sources: tuple[str, ...], others_of: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The positions of the cells the user chose for set ``name``, and how they were chosen."""
    source = st.radio(f"Set {name} from", sources, key=f"de_{name}_source", horizontal=True)
    if source == ANNOTATION:
        if not groupings:
            st.caption("This dataset has no annotation: choose the cells on the plot.")
            return np.array([], dtype=np.int64), "no cells"
        column = st.selectbox("Annotation", groupings, key=f"de_{name}_column")
        labels = clusters.labels_of(analysis, column)
        values = st.multiselect("Values", group_order(labels), key=f"de_{name}_values_{column}")
        cells = np.flatnonzero(labels.astype(str).isin(values).to_numpy())
        about = f"{column} = {', '.join(values)}" if values else f"no value of {column} chosen"
    elif source == SELECTION:
        if st.button(f"Use selection as {name}", key=f"de_{name}_use", disabled=len(selected) == 0,
                     help="Draw a box or lasso on a plot above first."):
            st.session_state[f"de_{name}_cells"] = (analysis.key, selected)
        kept_key, kept = st.session_state.get(f"de_{name}_cells", ("", None))
        cells = kept if kept is not None and kept_key == analysis.key else np.array([], dtype=np.int64)
        about = "cells selected on the plot"
    else:
        cells = np.setdiff1d(np.arange(analysis.adata.n_obs), others_of)
        about = "all the other cells"
    st.write(f"**{len(cells):,} cells** in {name}")
    return cells, about


def _colour_by_chosen_gene() -> None:
    """Colour the Explore page's layouts by the gene chosen in the result (a button's callback: it runs before the
    page reruns, with the widgets' new values)."""
    st.session_state["color_mode"] = "Gene"
    st.session_state["color_gene"] = st.session_state["de_gene"]


def show(analysis: Analysis, selected: np.ndarray, groupings: list[str]) -> None:
    """The section: choose A and B, compare them on a click, and show the last comparison's result."""
    st.subheader("Differential expression: A against B")
    left, right = st.columns(2)
    with left:
        cells_a, about_a = _chosen_cells(analysis, "A", selected, groupings, (ANNOTATION, SELECTION))
    with right:
        cells_b, about_b = _chosen_cells(analysis, "B", selected, groupings, (ANNOTATION, SELECTION, OTHERS),
                                         others_of=cells_a)
    row = st.columns([2, 1])
    method = row[0].radio("Test", METHODS, index=METHODS.index(DEParams.default("method")), horizontal=True,
                          key="de_method", help="Wilcoxon rank-sum or Welch's t-test of every gene, on "
                                                "log-normalised expression.")
    if row[1].button("Compare A with B", key="de_run", type="primary"):
        st.session_state[REQUEST] = Comparison(analysis.key, cells_a, cells_b, about_a, about_b, method)
    request = st.session_state.get(REQUEST)
    if not isinstance(request, Comparison) or request.analysis_key != analysis.key:
        st.caption("Choose the cells of A and B, then press Compare: the genes up and down in A appear here.")
        return
    try:
        table = cached.differential_expression(analysis, request.cells_a, request.cells_b, request.method)
    except InputError as error:
        show_error(error)
        return
    _show_result(request, table)


def _show_result(request: Comparison, table: pd.DataFrame) -> None:
    """The genes up and down in A, the volcano plot, the gene colouring and the CSV of one comparison."""
    st.markdown(f"**A**: {plain(request.about_a)} ({len(np.unique(request.cells_a)):,} cells) · "
                f"**B**: {plain(request.about_b)} ({len(np.unique(request.cells_b)):,} cells) · {request.method}")
    shown = ["gene", "logfoldchange", "pvalue", "fdr", "pct_in", "pct_out"]
    up = table.head(TOP)[shown].reset_index(drop=True)
    down = table.iloc[::-1].head(TOP)[shown].reset_index(drop=True)
    left, right = st.columns(2)
    left.markdown("Up in A")
    left.dataframe(up, hide_index=True, width="stretch", column_config=column_help(up, FORMATS))
    right.markdown("Down in A (up in B)")
    right.dataframe(down, hide_index=True, width="stretch", column_config=column_help(down, FORMATS))
    named = list(dict.fromkeys([*up["gene"], *down["gene"]]))
    st.plotly_chart(volcano_figure(table, [*up["gene"][:NAMED], *down["gene"][:NAMED]], title="A against B"),
                    key="de_volcano", width="stretch")
    row = st.columns([2, 2, 2])
    row[0].selectbox("Gene", named, key="de_gene", label_visibility="collapsed")
    row[1].button("Colour the plots by this gene", key="de_colour", on_click=_colour_by_chosen_gene,
                  help="The layouts at the top of the page show its expression.")
    row[2].download_button("All genes (CSV)", lambda: csv_bytes(table[COLUMNS]), file_name="de_a_vs_b.csv",
                           mime="text/csv", key="de_csv")
