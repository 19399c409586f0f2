"""The plot widget of the Explore and Search & transfer pages: a datashaded layout that zooms (wheel or zoom box), pans
(drag) and names the cell under the pointer without a button, selects cells by box or lasso, and marks groups of
cells (a search's query and neighbours) over the picture.

The browser side (``viewer.js`` and ``viewer.css``, an ``st.components.v2`` component, no build step) shows the
server's image of the current view and moves it at once while the user zooms or pans; when the gesture ends it sends
the new view, which :func:`show` stores (``session_state["view_<layout>"]``, checked by
``sccore.render.requested_view``) before the page renders that view at full resolution (``sccore.render``) in the
same run. Run it inside ``st.fragment`` so that only the plot reruns. A resting pointer asks for the nearest cell
(``sccore.select.CellFinder``, one KD-tree per layout in ``st.cache_resource``); its id and annotations come back as
the tooltip. Box and lasso selections are kept per layout as plotly-style selections
(``session_state["selection_<layout>"]``, read by :func:`selected_cells`, so one drawn on Explore is a search's query
too); a new one reruns the whole page, whose sections below the plot use it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from sccore import InputError
from sccore.plots import MAX_LEGEND_ENTRIES
from sccore.render import EXPRESSION_CMAP, View, png_bytes, requested_view
from sccore.select import CellFinder, cells_in_selection
from sccore.workflow import Analysis

from dashboard import cached, clusters, state

HERE = Path(__file__).resolve().parent
MAX_TOOLTIP_ANNOTATIONS = 8
COLORBAR_STOPS = 16
MARK_SHAPES = ("cross", "ring")
MAX_QUERY_MARKS = 2000  # query cells a search marks at most (a fixed sample of a larger query)

viewer_component = st.components.v2.component(  # the browser side; show() calls it
    "sccore_layout_viewer", html='<div class="scv-root"></div>', css=(HERE / "viewer.css").read_text(),
    js=(HERE / "viewer.js").read_text(), isolate_styles=False)


@dataclass(frozen=True)
class Colouring:
    """What a layout's image shows beside it: a legend (``sccore.render.legend_table``'s category, color, n_cells)
    or the value range of a colour bar titled ``color_title``."""

    legend: pd.DataFrame | None = None
    color_span: tuple[float, float] | None = None
    color_title: str = ""


def view_key(layout: str) -> str:
    """The session_state key of the view the user has zoomed or panned ``layout`` to (none: the whole layout)."""
    return f"view_{layout}"


def selection_key(layout: str) -> str:
    """The session_state key of the box or lasso selection drawn on ``layout``."""
    return f"selection_{layout}"


def current_view(analysis: Analysis, layout: str) -> View:
    """The view of ``layout`` to draw: where the user zoomed or panned to, or the whole layout."""
    return st.session_state.get(view_key(layout)) or state.default_view(analysis, layout)


def selected_cells(analysis: Analysis, layouts: list[str]) -> np.ndarray:
    """The cells inside the selection drawn on any of ``layouts`` (positions, sorted)."""
    chosen = [cells_in_selection(analysis.layouts()[layout], st.session_state.get(selection_key(layout)) or {})
              for layout in layouts]
    return np.unique(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


@st.cache_resource(show_spinner=False, max_entries=8)
def cell_finder(analysis_key: str, layout: str, _analysis: Analysis) -> CellFinder:
    """The KD-tree that finds the cell under the pointer on ``layout``, shared by every session."""
    return CellFinder(_analysis.layouts()[layout])


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=cached.EXACT_ARRAYS)
def png_data_url(image: np.ndarray) -> str:
    """An RGBA image as a PNG ``data:`` URL (transparent background, fast compression), cached by its content."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, background=None, compress_level=1)).decode()


def cell_marks(coords: np.ndarray, label: str, shape: str, color: str) -> dict:
    """A group of cells (rows of ``coords``, data units) to mark over a layout in :func:`show`: a cross or a ring
    (``shape``) of ``color`` on each, one legend entry ``label``."""
    if shape not in MARK_SHAPES:
        raise ValueError(f"a mark is one of {MARK_SHAPES}, not {shape!r}")
    coords = np.asarray(coords, dtype=float).reshape(-1, 2)
    return {"label": label, "shape": shape, "color": color, "x": coords[:, 0].tolist(), "y": coords[:, 1].tolist()}


def search_marks(coords: np.ndarray, query_cells: np.ndarray, neighbours: pd.DataFrame
                 ) -> tuple[tuple[dict, ...], dict[int, str]]:
    """What a similarity search marks on a layout (``coords``): its query cells as crosses (a fixed sample of
    ``MAX_QUERY_MARKS`` at most) and its neighbours (``sccore.transfer``'s table: ``position``, ``rank``,
    ``cosine_similarity``) as rings; and each neighbour's tooltip line (cell position -> rank and cosine)."""
    from sccore.perturb import sample_cells

    marks, notes = [], {}
    if len(query_cells):
        marks.append(cell_marks(coords[sample_cells(query_cells, MAX_QUERY_MARKS)], f"query ({len(query_cells):,})",
                                "cross", "#111111"))
    if len(neighbours):
        positions = neighbours["position"].to_numpy()
        marks.append(cell_marks(coords[positions], f"neighbours ({len(positions)})", "ring", "#D55E00"))
        notes = {int(p): f"neighbour rank {r}, cosine {c:.3f}" for p, r, c in
                 zip(positions, neighbours["rank"], neighbours["cosine_similarity"])}
    return tuple(marks), notes


def hover_lines(analysis: Analysis, groupings: tuple[str, ...], cell: int, notes: dict | None = None) -> list[str]:
    """The tooltip of one cell: its id, then its value in each of ``groupings`` (``clusters.groupings``' names), then
    the cell's line in ``notes`` (cell position -> text), if any."""
    lines = [str(analysis.adata.obs_names[cell])]
    for name in groupings[:MAX_TOOLTIP_ANNOTATIONS]:
        lines.append(f"{name}: {clusters.labels_of(analysis, name).iloc[cell]}")
    if notes and cell in notes:
        lines.append(notes[cell])
    return lines


def _event(key: str, name: str):
    value = st.session_state.get(key)
    return value.get(name) if isinstance(value, dict) else None


def _on_view(key: str, layout: str, analysis: Analysis) -> None:
    asked = _event(key, "view")
    if not isinstance(asked, dict):
        return
    st.session_state[f"{key}_seq"] = int(asked.get("seq") or 0)
    if asked.get("reset"):
        st.session_state.pop(view_key(layout), None)
        return
    try:
        st.session_state[view_key(layout)] = requested_view(asked.get("x"), asked.get("y"),
                                                            state.default_view(analysis, layout))
    except InputError:
        pass  # a malformed message: keep the view as it is


def _on_selection(key: str, layout: str) -> None:
    selection = _event(key, "selection")
    if isinstance(selection, dict) and (selection.get("box") or selection.get("lasso")):
        st.session_state[selection_key(layout)] = {part: selection.get(part) or [] for part in ("box", "lasso")}
    else:
        st.session_state.pop(selection_key(layout), None)


def hover_answer(asked, coords: np.ndarray, finder: CellFinder, describe) -> dict:
    """The browser's answer to a hover question ``asked`` (``x``, ``y``, radius ``r`` in data units, ``seq``): the
    nearest cell's coordinates and ``describe(cell)``'s lines, or only ``seq`` when no cell is that near (or the
    question is malformed)."""
    answer = {"seq": asked.get("seq") if isinstance(asked, dict) else None}
    try:
        x, y, radius = (float(asked.get(name)) for name in ("x", "y", "r"))
    except (AttributeError, TypeError, ValueError):
        return answer
    cell = finder.nearest(x, y, radius)
    if cell is not None:
        answer |= {"x": float(coords[cell, 0]), "y": float(coords[cell, 1]), "lines": describe(cell)}
    return answer


def _on_hover(key: str, layout: str, analysis: Analysis, groupings: tuple[str, ...], notes: dict | None) -> None:
    st.session_state[f"{key}_hover"] = hover_answer(_event(key, "hover"), analysis.layouts()[layout],
                                                    cell_finder(analysis.key, layout, analysis),
                                                    partial(hover_lines, analysis, groupings, notes=notes))


def _colour_key(colouring: Colouring) -> dict:
    if colouring.legend is not None:
        return {"legend": [{"color": row.color, "label": f"{row.category} ({row.n_cells:,})"}
                           for row in colouring.legend.head(MAX_LEGEND_ENTRIES).itertuples()]}
    if colouring.color_span is not None:
        stops = np.linspace(0, len(EXPRESSION_CMAP) - 1, COLORBAR_STOPS).round().astype(int)
        low, high = colouring.color_span
        return {"colorbar": {"colors": [EXPRESSION_CMAP[i] for i in stops], "low": f"{low:.3g}",
                             "high": f"{high:.3g}", "title": colouring.color_title}}
    return {}


def show(analysis: Analysis, layout: str, image: np.ndarray, view: View, colouring: Colouring, key: str,
         groupings: list[str], title: str = "", legend_below: bool = False, marks: tuple[dict, ...] = (),
         hover_notes: dict | None = None) -> None:
    """Draw ``image`` (``layout`` at ``view``) with its legend or colour bar in the viewer widget ``key``, and the
    groups of cells ``marks`` (:func:`cell_marks`) over it; a hovered cell's tooltip gives its id, its value in each
    of ``groupings`` (``clusters.groupings``' names: found once per page run, as an atlas's annotations take a while)
    and its line in ``hover_notes`` (cell position -> text).

    Call :func:`current_view` for ``view`` first: the gesture that started this run has already been stored there by
    the widget's callbacks. A new box or lasso selection reruns the whole page.
    """
    callbacks = {"on_view_change": partial(_on_view, key, layout, analysis),
                 "on_selection_change": partial(_on_selection, key, layout),
                 "on_hover_change": partial(_on_hover, key, layout, analysis, tuple(groupings), hover_notes)}
    data = {"image": png_data_url(image), "view": [*view.x_range, *view.y_range], "size": [view.width, view.height],
            "seq": st.session_state.get(f"{key}_seq", 0), "title": title, "legend_below": legend_below,
            "selection": st.session_state.get(selection_key(layout)), "hover": st.session_state.get(f"{key}_hover"),
            "marks": list(marks), **_colour_key(colouring)}
    result = viewer_component(key=key, data=data, width="stretch", **callbacks)
    if result.selection is not None:
        st.rerun()  # the page's sections below the plot use the selection
    cell_finder(analysis.key, layout, analysis)  # built after the picture has gone out, ready for the first hover


@st.fragment
def show_annotated(analysis: Analysis, layout: str, column: str | None, key: str, groupings: list[str],
                   marks: tuple[dict, ...], hover_notes: dict[int, str], title: str) -> None:
    """:func:`show` of ``layout`` at its current view, coloured by ``obs[column]`` (grey without one), with ``marks``
    and ``hover_notes``; a fragment, so that a zoom, pan or hover reruns only this plot."""
    view = current_view(analysis, layout)
    image, view, legend = cached.annotated_layout(analysis, layout, column, view)
    show(analysis, layout, image, view, Colouring(legend=legend), key=key, groupings=groupings, title=title,
         marks=marks, hover_notes=hover_notes)
