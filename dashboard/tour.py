"""The guided tour on the built-in demo: a few steps, each a page already set up by the pages' own widget keys.

``STEPS`` holds the steps as data. The home page starts the tour (:func:`offer`); app.py shows the tour's panel
on every page (:func:`show_panel`), whose Back and Next set up a step and open its page, and whose *Leave tour*
only hides the panel: every widget value and result stays. A step that needs a computation leaves a one-shot
request that its page takes with :func:`wants_run`, so the result shows without pressing Run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from dashboard import state
from dashboard.viewer import selection_key, view_key

STEP = "tour_step"  # the current step's index while the tour runs
MOVED = "tour_moved"  # set by Back/Next: open the step's page on this run
RUN = "tour_run"  # the computation the current step's page runs once ("knockout" or "screen")
SEARCH_CELL = "AAAGCCTGGCTAAC-1"  # a CD14+ monocyte of the demo (its first cell)
# the zoom and the selection drawn on the demo's layouts: forgotten, so that a step shows every cell, nothing selected
WHOLE_LAYOUTS = tuple(key(layout) for layout in ("X_umap", "X_umap_encoder") for key in (view_key, selection_key))


@dataclass(frozen=True)
class Step:
    """One stop of the tour: its title, one or two plain sentences, the page it shows (the url path of
    ``pages/<page>.py``), the widget values it sets, the keys it forgets (so the page shows its default) and the
    computation its page runs at once."""

    title: str
    text: str
    page: str
    values: dict = field(default_factory=dict)
    forget: tuple[str, ...] = ()
    run: str = ""


STEPS = [
    Step("Cells coloured by type",
         "Each dot is one of the demo's 700 blood cells, placed so that cells with similar gene activity sit close "
         "together (a UMAP of PCA, the standard baseline), and coloured by the cell type the data's authors "
         "annotated. Draw a box or lasso on the plot to see what the cells you circle are.",
         "explore", {"layout_a": "X_umap", "compare": False, "color_mode": "Annotation", "color_column": "cell_type"},
         forget=WHOLE_LAYOUTS),
    Step("The encoder beside PCA",
         "On the right, the same cells placed by the transformer encoder's embedding instead of PCA's, in the same "
         "colours. The blue box under the plots says which one keeps the cell types together better on this demo, "
         "with each one's neighbour agreement.",
         "explore", {"layout_a": "X_umap", "compare": True, "layout_b": "X_umap_encoder", "color_mode": "Annotation",
                     "color_column": "cell_type"},
         forget=WHOLE_LAYOUTS),
    Step("Cells like this one",
         "One CD14+ monocyte (the cross on the plot) and the 15 cells most like it in the encoder's embedding (the "
         "circles and the table), most of them CD14+ monocytes too. Switch Embedding to PCA to see the baseline's "
         "neighbours of the same cell.",
         "search", {"search_rep": "X_encoder", "search_how": "One cell", "search_cell": SEARCH_CELL, "search_k": 15,
                    "search_metric": "euclidean", "search_exclude": True}, forget=WHOLE_LAYOUTS),
    Step("Knock out a gene",
         "FCGR3A (CD16) is the gene that best tells this demo's CD14+ monocytes from its dendritic cells (96 % of the "
         "monocytes express it, 22 % of the dendritic cells). Knocked out in the monocytes, each method's arrows "
         "show where it moves them, and the table's mean shift says which method moves them furthest.",
         "knockout", {"ko_gene": "FCGR3A", "ko_gene_text": "", "ko_pop_column": "cell_type",
                      "ko_pop_value": "CD14+ Monocyte", "ko_mode": "delete", "ko_max_cells": 1000, "ko_zoom": True},
         run="knockout"),
    Step("Screen toward a goal",
         "Under the knockout, a screen knocks out each of the 25 genes most often expressed in 30 of the monocytes, "
         "one at a time, and ranks them by how far they push the cells toward the dendritic cells (the demo has no "
         "treated and control cells to aim between). The PCA and linear baselines (their tabs) put FCGR3A first or "
         "second; the encoder's tab shows where it ranks it, and the table under *Do the methods agree?* says how "
         "far the rankings match.",
         "knockout", {"sc_pop_column": "cell_type", "sc_pop_value": "CD14+ Monocyte", "sc_top": 25,
                      "sc_max_cells": 30, "sc_estimate": "exact", "sc_background": False, "sc_goal": True,
                      "sc_goal_column": "cell_type", "sc_goal_value": "Dendritic"},
         forget=("sc_methods",), run="screen"),
]


def go(index: int) -> None:
    """Set up step ``index`` (on the demo) and open its page on this run (a widget callback)."""
    step = STEPS[index]
    if state.current_source()[0] != state.DEMO:
        state.choose_source(state.DEMO)
    st.session_state.pop(RUN, None)
    for key in step.forget:
        st.session_state.pop(key, None)
    st.session_state.update(step.values)
    if step.run:
        st.session_state[RUN] = step.run
    st.session_state[STEP] = index
    st.session_state[MOVED] = True


def start() -> None:
    """Open the demo with its default settings and go to the first step (a widget callback)."""
    state.choose_source(state.DEMO)
    go(0)


def leave() -> None:
    """Hide the tour's panel; every widget value and result stays (a widget callback)."""
    st.session_state.pop(STEP, None)
    st.session_state.pop(RUN, None)


def wants_run(computation: str) -> bool:
    """Whether the tour's current step asks its page to run ``computation`` now; the request is used up."""
    if st.session_state.get(RUN) == computation:
        del st.session_state[RUN]
        return True
    return False


def offer() -> None:
    """The home page's *Take the guided tour* button, saying when starting it replaces the open dataset."""
    session = st.session_state
    changed = (state.current_source()[0] != state.DEMO or session.get("preprocess_overrides") or session.get("n_comps")
               or session.get("encoder_model") not in (None, str(state.DEMO_MODEL)))
    st.button("Take the guided tour", key="tour_start", icon=":material/tour:", on_click=start,
              help=f"{len(STEPS)} short steps on the built-in demo, each page set up for you: cell types, the "
                   "encoder beside PCA, similar cells, a knockout and a screen. Leave it at any step.")
    if changed:
        st.caption("The tour runs on the built-in demo: starting it opens the demo with its default settings in "
                   "place of what is open now. You can open your dataset again here afterwards.")


def show_panel() -> None:
    """While the tour runs: open the step's page after Back or Next, then show the step's text, *step i of n* and
    the Back, Next and Leave tour buttons above the page."""
    index = st.session_state.get(STEP)
    if index is None:
        return
    step = STEPS[index]
    if st.session_state.pop(MOVED, False):
        st.switch_page(f"pages/{step.page}.py")
    last = index == len(STEPS) - 1
    with st.container(border=True, key="tour_panel"):
        st.markdown(f"**Guided tour · step {index + 1} of {len(STEPS)}: {step.title}**")
        st.markdown(step.text)
        if state.current_source()[0] != state.DEMO:
            st.caption("Another dataset is open now: Back and Next open the demo again.")
        with st.container(horizontal=True):
            st.button("Back", key="tour_back", icon=":material/arrow_back:", disabled=index == 0, on_click=go,
                      args=(index - 1,))
            if not last:
                st.button("Next", key="tour_next", icon=":material/arrow_forward:", type="primary", on_click=go,
                          args=(index + 1,))
            st.button("End the tour" if last else "Leave tour", key="tour_leave",
                      type="primary" if last else "secondary", on_click=leave,
                      help="Hides this panel; the page stays as it is.")
