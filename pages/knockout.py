"""Knockout: delete (or overexpress) a gene in silico and see the predicted embedding shift, beside two baselines.

Every number comes from ``sccore.perturb``: the encoder's prediction, and the PCA and linear
co-expression baselines on the same cells. A screen ranks every expressed gene, optionally by how
far its deletion moves cells toward a goal state.
"""

import pandas as pd
import streamlit as st

from dashboard import arrows, background, cached, screens, session, state, tour, widgets
from dashboard.explain import column_help
from dashboard.expression import show_expression_changes
from dashboard.session import KnockoutRecord, KnockoutRequest, ScreenRequest
from sccore.glossary import HELP
from sccore.perturb import suggest_gene
from sccore.plots import group_shift_figure
from sccore.render import legend_table
from sccore.report import METHOD_LABELS, knockout_note
from sccore.shifts import group_shifts

ALL = "(all cells)"
LABEL = METHOD_LABELS
EXPLAIN = {"encoder": "the transformer re-embeds each cell without the gene's token (Geneformer's in-silico "
                      "deletion), or with it moved to the front (overexpression)",
           "pca": "the gene's log-expression is set to zero and the cell re-projected on the PCA loadings",
           "linear": "the gene is set to zero and every other gene moves by its regression on it (a linear "
                     "co-expression model), then the cell is re-projected on the PCA loadings"}
CHART = {"width": "stretch", "config": {"displaylogo": False}}

st.title("In-silico knockout")
st.caption("Knock a gene out of the cells' inputs and ask how far each cell's embedding moves. The transformer "
           "encoder's prediction is always shown beside two simple baselines (PCA and a linear co-expression "
           "model), because published benchmarks often find such baselines predict perturbations as well.")
analysis = state.open_or_stop()
state.warm_up_in_background("layouts")  # the knockouts' UMAP placements: compiled while the user picks a gene
adata = analysis.adata
model_folder = analysis.params.encoder_model
methods = (["encoder"] if model_folder else []) + ["pca", "linear"]
if not model_folder:
    st.info("No encoder embeds this dataset, so only the PCA and linear baselines run. Choose or train a model "
            "on the Encoder page to add the encoder's prediction.")
annotations = state.color_options(analysis)
group_column = annotations[0] if annotations else None


def pick_population(slot: str, container) -> session.Population:
    """An ``obs`` column and one of its values, or None for every cell."""
    column = container.selectbox("Cells", [ALL] + annotations, key=f"{slot}_pop_column",
                                 help="All cells, or the cells with one value of an annotation.")
    if column == ALL:
        return None
    values = adata.obs[column].astype("category")
    counts = values.astype(str).value_counts()
    value = container.selectbox(f"{column} =", [str(v) for v in values.cat.categories], key=f"{slot}_pop_value",
                                format_func=lambda v: f"{v} ({counts.get(v, 0):,} cells)")
    return column, value


def describe(population: session.Population) -> str:
    """The population in words, e.g. ``cell_type = B``."""
    return "all cells" if population is None else f"{population[0]} = {population[1]}"


# --- One knockout --------------------------------------------------------------------------------------------------

st.header("Knock out one gene")
genes = list(adata.var_names)
left, middle, right = st.columns([2, 2, 2])
picked = left.selectbox("Gene (type to search)", genes, key="ko_gene",
                        index=adata.var_names.get_loc(cached.default_gene(analysis.key, adata)))
typed = left.text_input("…or type a gene name", key="ko_gene_text", placeholder="e.g. LYZ",
                        help="Overrides the list when filled in.").strip()
gene = typed or picked
population = pick_population("ko", middle)
mode = right.radio("Mode", ["delete", "overexpress"], horizontal=True, key="ko_mode", disabled=not model_folder,
                   help="Overexpression moves the gene to the front of the encoder's rank list; the PCA and linear "
                        "baselines model deletion only.") if model_folder else "delete"
max_cells = int(right.number_input("Max cells", 10, 100_000, 1000, step=100, key="ko_max_cells",
                                   help="A larger population is sampled at random (the same sample every time)."))
if gene not in adata.var_names:
    st.error(suggest_gene(gene, genes))
request = KnockoutRequest(analysis.key, model_folder, gene, population, mode, max_cells)
if (st.button("Run knockout", type="primary", key="ko_run", disabled=gene not in adata.var_names)
        or tour.wants_run("knockout")):
    def run_knockout() -> KnockoutRecord:
        everyone, cells = screens.population_cells(adata, population, max_cells)
        with st.spinner(f"Knocking out {gene} in {len(cells):,} cells…"):
            results = cached.knockout_by_method(analysis, gene, cells, [m for m in methods if mode == "delete"
                                                                        or m == "encoder"], mode)
        return KnockoutRecord(results, len(everyone), len(cells))

    session.run_and_keep(session.KNOCKOUTS, request, run_knockout, most=16)  # this session's 16 most recent
record = widgets.shown_result(session.outcome_of(session.KNOCKOUTS, request),
                              "Choose a gene and cells, then press **Run knockout**.")


if record is not None:
    done = {m: r for m, r in record.results.items() if not isinstance(r, str)}
    for method, message in record.results.items():
        if isinstance(message, str):
            st.error(f"{LABEL[method]}: {widgets.plain(message)}")
    if mode != "delete":
        st.info("The PCA and linear baselines model deletion only, so overexpression shows the encoder alone; "
                "switch to delete to compare it with the baselines.")
if record is not None and done:
    any_result = next(iter(done.values()))
    sampled = (f" (a random sample of {record.n_chosen:,} of the {record.n_population:,} cells)"
               if record.n_chosen < record.n_population else "")
    st.subheader(widgets.plain(f"{mode.capitalize()} {gene} in {describe(population)}") + sampled)
    summary = pd.DataFrame([{**result.summary(), "method": LABEL[method]} for method, result in done.items()])
    summary = summary[["method", "n_cells", "n_not_expressed", "mean_cosine", "mean_shift", "mean_shift_norm"]]
    st.dataframe(summary, hide_index=True, width="stretch", column_config=column_help(summary, screens.NUMBER_FORMATS),
                 key="ko_summary")
    st.caption("**Cosine** compares each cell's embedding before and after the knockout (1 = unchanged); "
               "**shift** = 1 − cosine, so larger means the knockout moves the cell more; **shift norm** is the "
               "length of the move in the embedding's own units. Sizes differ between embeddings: compare "
               "methods by their ranking of genes or cell types, not by the raw numbers.")
    if {"encoder", "linear"} <= set(done):
        st.info(knockout_note(session.session_knockouts(analysis.key)))
    n_silent = len(any_result.not_expressed)
    st.markdown(f"**{n_silent:,} of the {n_silent + len(any_result.cells):,} chosen cells do not express "
                f"{widgets.plain(gene)}** (no counts): they are reported here and left out of every number above, not "
                "counted as unaffected.")
    st.markdown("\n".join(f"- **{LABEL[method]}**: {EXPLAIN[method]}." for method in done))
    st.markdown("**Where the knocked-out cells move** (each method in the UMAP of its own embedding)")
    zoom = st.toggle("Zoom to the knocked-out cells", value=True, key="ko_zoom",
                     help="Off: the whole layout. Either way, plotly's zoom re-scales the plot.")
    baseline_names = {rep: name for rep, name in state.embedding_choices(analysis).items() if rep != "X_encoder"}
    baseline_rep = st.radio("The baselines' moves in the UMAP of", list(baseline_names), horizontal=True,
                            key="ko_baseline_rep", format_func=lambda rep: f"{baseline_names[rep]} ({rep})",
                            help="PCA + Harmony: each cell keeps its own Harmony correction, so the baselines' "
                                 "moves are PCA's, placed in Harmony's UMAP.") if len(baseline_names) > 1 else "X_pca"
    if group_column:
        values = adata.obs[group_column].astype("category")
        colors = state.category_palette(values)  # the colours cached.category_image uses
        widgets.legend_strip(group_column, legend_table(values.cat.codes.to_numpy(), list(values.cat.categories),
                                                        colors), "→ knocked out")
    arrows.show_arrows(analysis, done, zoom, baseline_rep, group_column, gene)
    if group_column and adata.obs[group_column].iloc[any_result.cells].nunique() > 1:
        st.markdown(f"**Which {widgets.plain(group_column)} moves most**")
        by_name = dict(zip(map(str, values.cat.categories), colors))
        st.plotly_chart(group_shift_figure({f"{LABEL[method]}: mean shift by {group_column}": group_shifts(
            result, adata.obs[group_column]) for method, result in done.items()}, by_name), key="ko_bars", **CHART)
        st.caption("Bars: the mean shift of each group's cells, with its standard error. " + HELP["shift"])
    elif group_column:
        st.caption(f"The chosen cells are all one {widgets.plain(group_column)}; choose {ALL} (or another "
                   f"annotation) to compare the shift between {widgets.plain(group_column)} values.")

if record is not None and done:
    show_expression_changes(analysis, gene, mode, done, LABEL)


# --- Screen --------------------------------------------------------------------------------------------------------

st.header("Screen: which knockouts move cells most, or toward a goal state")
st.caption("Deletes each of the most often expressed genes in turn, one cell at a time, and tests each gene's shifts "
           "against deleting random expressed genes in the same cells (one-sided rank-sum test, Benjamini-Hochberg "
           "FDR). With a goal state, genes are ranked by how well their mean shift points from the population toward "
           "the goal (goal_alignment, a cosine) and by the mean gain in cosine similarity to the goal's mean "
           "(goal_cosine_gain).")
left, middle, right = st.columns([2, 3, 2])
screen_population = pick_population("sc", left)
screen_methods = middle.multiselect("Methods", methods, default=methods, key="sc_methods",
                                    format_func=lambda m: LABEL[m])
top = int(middle.number_input("Top genes", 1, 5000, 50, key="sc_top",
                              help="The most often expressed genes in the cells (encoder: those in its vocabulary)."))
screen_max = int(middle.number_input("Max cells", 2, 100_000, 100, key="sc_max_cells",
                                     help="A larger population is sampled at random. The encoder embeds each cell "
                                          "once per screened gene, so its time grows with cells × genes."))
estimate = middle.radio("Encoder estimate", ["exact", "first-order"], horizontal=True, key="sc_estimate",
                        disabled="encoder" not in screen_methods,
                        format_func=lambda e: {"exact": "exact deletion",
                                               "first-order": "first-order, then the best 50 exactly"}[e],
                        help="First-order: one backward pass per direction of a small basis estimates every gene's "
                             "deletion at once, then the 50 best-ranked genes are deleted exactly. Faster with "
                             "long inputs; the table's 'estimate' column says which rows are exact.")
use_goal = right.toggle("Score against a goal state", key="sc_goal",
                        help="Start: the population above (all of its cells). Goal: the cells with another value of "
                             "an annotation, e.g. another cell type or the control condition.")
goal_spec = None
if use_goal and not annotations:
    right.caption("This dataset has no categorical annotation to define a goal state.")
elif use_goal:
    goal_column = right.selectbox("Goal: cells with", annotations, key="sc_goal_column")
    goal_values = [str(v) for v in adata.obs[goal_column].astype("category").cat.categories]
    start_value = screen_population[1] if screen_population and screen_population[0] == goal_column else None
    default = next((i for i, v in enumerate(goal_values) if v != start_value), 0)
    goal_spec = (goal_column, right.selectbox(f"{goal_column} =", goal_values, index=default, key="sc_goal_value"))

buttons = st.columns([1, 1, 6])
run_screen = (buttons[0].button("Run screen", type="primary", key="sc_run", disabled=not screen_methods)
              or tour.wants_run("screen"))
buttons[1].button("Cancel", key="sc_cancel", on_click=lambda: st.session_state.update({screens.CANCEL: True}),
                  help="Stops a running screen; what was screened so far is kept and marked partial.")
in_background = buttons[2].toggle("Run in the background", key="sc_background",
                                  help="Screen as a job on the Dask cluster (one per method; see the Jobs page): the "
                                       "page stays free, and the screen goes on when you leave or refresh it. The same "
                                       "settings show its result here when it has finished.")
screen_request = ScreenRequest(analysis.key, model_folder, screen_population, tuple(screen_methods), top, screen_max,
                               goal_spec, estimate)
widgets.wait_while_running(screens.RUNNING, "Stopping the running screen…")  # a click stopped a screen
screened = screens.screen_outcome(analysis, screen_request, run_screen, in_background)
if isinstance(screened, tuple):  # job ids: the screen runs in the background
    background.follow_jobs(screened, "The screen", "sc_job_cancel",
                           "The same settings show its result here when it has finished.")
elif widgets.shown_result(screened, "Choose cells and methods, then press **Run screen**. Results are kept: the "
                                    "same settings reopen them without computing again.") is not None:
    screens.show_screen(screened, screen_request, f"Screen of {describe(screen_population)}")
