"""Knockout: delete (or overexpress) a gene in silico and see the predicted embedding shift, beside two baselines.

Every number comes from ``sccore.perturb``: the encoder's prediction, and the PCA and linear
co-expression baselines on the same cells. A screen ranks every expressed gene, optionally by how
far its deletion moves cells toward a goal state.
"""

import html
import time

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit.runtime.scriptrunner import RerunException, StopException

from dashboard import state, tour
from dashboard.explain import column_help
from sccore import InputError
from sccore.perturb import choose_cells, goal_from_groups, screen, suggest_gene
from sccore.plots import layout_figure
from sccore.glossary import HELP, agreement_note
from sccore.render import fit_view, legend_table
from sccore.report import CAVEAT, knockout_note, method_agreement
from sccore.workflow import layout_key

ALL = "(all cells)"
REP = {"encoder": "X_encoder", "pca": "X_pca", "linear": "X_pca"}
LABEL = {"encoder": "Encoder", "pca": "PCA baseline", "linear": "Linear baseline"}
EXPLAIN = {"encoder": "the transformer re-embeds each cell without the gene's token (Geneformer's in-silico "
                      "deletion), or with it moved to the front (overexpression)",
           "pca": "the gene's log-expression is set to zero and the cell re-projected on the PCA loadings",
           "linear": "the gene is set to zero and every other gene moves by its regression on it (a linear "
                     "co-expression model), then the cell is re-projected on the PCA loadings"}
MAX_ARROWS = 300
SCREEN_COLUMNS = ["gene", "n_cells", "mean_cosine", "mean_shift", "fdr", "goal_alignment", "goal_cosine_gain",
                  "estimate"]
NUMBER_FORMATS = {"mean_cosine": "%.6f", "mean_shift": "%.3g", "mean_shift_norm": "%.3g", "fdr": "%.3g",
                  "p_value": "%.3g", "goal_alignment": "%.3f", "goal_cosine_gain": "%.3g"}

st.title("In-silico knockout")
st.caption("Knock a gene out of the cells' inputs and ask how far each cell's embedding moves. The transformer "
           "encoder's prediction is always shown beside two simple baselines (PCA and a linear co-expression "
           "model), because published benchmarks often find such baselines predict perturbations as well.")
analysis = state.open_or_stop()
adata = analysis.adata
model_folder = analysis.params.encoder_model
methods = (["encoder"] if model_folder else []) + ["pca", "linear"]
if not model_folder:
    st.info("No encoder embeds this dataset, so only the PCA and linear baselines run. Choose or train a model "
            "on the Encoder page to add the encoder's prediction.")
annotations = state.color_options(analysis)
group_column = annotations[0] if annotations else None


def pick_population(slot: str, container) -> tuple[str, str] | None:
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


def describe(population: tuple[str, str] | None) -> str:
    return "all cells" if population is None else f"{population[0]} = {population[1]}"


def population_cells(population: tuple[str, str] | None, max_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Every cell of the population, and a fixed random sample of at most ``max_cells`` of them (sorted)."""
    cells = choose_cells(adata, dict([population]) if population else None)
    if len(cells) <= max_cells:
        return cells, cells
    return cells, np.sort(np.random.default_rng(0).choice(cells, int(max_cells), replace=False))


# --- One knockout --------------------------------------------------------------------------------------------------

st.header("Knock out one gene")


@st.cache_data(show_spinner=False, max_entries=8)
def default_gene(analysis_key: str, _adata) -> int:
    """The highly variable gene detected in the most cells: a gene worth knocking out to start with."""
    counts = _adata.layers["counts"] if "counts" in _adata.layers else _adata.X
    n_detected = np.asarray((counts > 0).sum(0)).ravel()
    if "highly_variable" in _adata.var and _adata.var["highly_variable"].any():
        n_detected = np.where(_adata.var["highly_variable"].to_numpy(), n_detected, -1)
    return int(np.argmax(n_detected))


genes = list(adata.var_names)
left, middle, right = st.columns([2, 2, 2])
picked = left.selectbox("Gene (type to search)", genes, index=default_gene(analysis.key, adata), key="ko_gene")
typed = left.text_input("…or type a gene name", key="ko_gene_text", placeholder="e.g. LYZ",
                        help="Overrides the list when filled in.").strip()
gene = typed or picked
population = pick_population("ko", middle)
mode = right.radio("Mode", ["delete", "overexpress"], horizontal=True, key="ko_mode", disabled=not model_folder,
                   help="Overexpression moves the gene to the front of the encoder's rank list; the PCA and linear "
                        "baselines model deletion only.") if model_folder else "delete"
max_cells = int(right.number_input("Max cells", 10, 100_000, 1000, step=100, key="ko_max_cells",
                                   help="A larger population is sampled at random (the same sample every time)."))
gene_known = gene in adata.var_names
if not gene_known:
    st.error(suggest_gene(gene, genes))
run = st.button("Run knockout", type="primary", key="ko_run", disabled=not gene_known) or tour.wants_run("knockout")

ko_key = (analysis.key, model_folder, gene, population, mode, max_cells)
ko_store = st.session_state.setdefault("knockout_results", {})
if run:
    run_methods = methods if mode == "delete" else [m for m in methods if m == "encoder"]
    try:
        everyone, cells = population_cells(population, max_cells)
    except InputError as error:
        ko_store[ko_key] = {"error": str(error)}
    else:
        results = {}
        with st.spinner(f"Knocking out {gene} in {len(cells):,} cells…"):
            for method in run_methods:
                try:
                    results[method] = state.knockout_result(analysis.key, model_folder, (gene,), cells, method, mode,
                                                            analysis)
                except InputError as error:
                    results[method] = str(error)
        messages = {value for value in results.values() if isinstance(value, str)}
        if len(messages) == 1 and all(isinstance(value, str) for value in results.values()):
            ko_store[ko_key] = {"error": messages.pop()}
        else:
            ko_store[ko_key] = {"results": results, "n_population": len(everyone), "n_chosen": len(cells)}
    for old in list(ko_store)[:-16]:  # keep this session's 16 most recent knockouts
        del ko_store[old]
entry = ko_store.get(ko_key)


def arrow_figure(method: str, result, zoom: bool) -> tuple[go.Figure | None, str]:
    """The layout of the method's embedding with arrows from a sample of cells to their perturbed positions."""
    rep = REP[method]
    layout = layout_key(rep)
    layouts = analysis.layouts()
    if rep not in analysis.umap_models or layout not in layouts:
        return None, f"No UMAP of {rep} to place the perturbed cells in."
    sample = np.sort(np.random.default_rng(0).choice(len(result.cells), min(MAX_ARROWS, len(result.cells)),
                                                     replace=False))
    # Place original and perturbed embeddings the same repeatable way (neighbour-weighted, no stochastic
    # refinement); the arrow is their difference, drawn from each cell's own UMAP position.
    placed = state.placed_in_umap(analysis.key, rep, np.vstack([result.original[sample], result.perturbed[sample]]),
                                  analysis, optimize=False)
    start = layouts[layout][result.cells[sample]]
    placed_original = placed[:len(sample)]
    end = start + placed[len(sample):] - placed_original
    view = (fit_view(np.vstack([start, end]), 600, 600, padding=0.12) if zoom
            else state.default_view(analysis, layout, 600, 600))
    if group_column:
        image, legend = state.category_image(analysis.key, layout, group_column, view, analysis)
        figure = layout_figure(image, view, title=f"{LABEL[method]} · {layout}", height=380)  # legend: one, above
    else:
        image, span = state.gene_image(analysis.key, layout, gene, view, analysis)
        figure = layout_figure(image, view, color_span=span, color_title=f"{gene}<br>log1p",
                               title=f"{LABEL[method]} · {layout}", height=380)
    figure.update_layout(annotations=[
        {"x": float(x1), "y": float(y1), "ax": float(x0), "ay": float(y0), "xref": "x", "yref": "y", "axref": "x",
         "ayref": "y", "showarrow": True, "arrowhead": 2, "arrowsize": 0.8, "arrowwidth": 0.8,
         "arrowcolor": "rgba(20,20,20,0.55)", "text": ""} for (x0, y0), (x1, y1) in zip(start, end)])
    cosines = result.cosine[sample]
    figure.add_trace(go.Scatter(
        x=end[:, 0], y=end[:, 1], mode="markers", name="perturbed", showlegend=False,
        marker={"size": 3, "color": "rgba(20,20,20,0.6)"},
        text=[f"{adata.obs_names[c]}<br>cosine {v:.6f}" for c, v in zip(result.cells[sample], cosines)],
        hovertemplate="%{text}<extra>perturbed</extra>"))
    figure.update_layout(dragmode="zoom", margin={"l": 10, "r": 10, "t": 40, "b": 10})
    moved = float(np.median(np.linalg.norm(end - start, axis=1)))
    note = (f"{len(sample):,} of {len(result.cells):,} cells. Each arrow starts at the cell's UMAP position and "
            f"moves by the difference between where `sccore.umap.transform` places its perturbed and its original "
            f"embedding (neighbour-weighted placement, repeatable). Median arrow {moved:.3f} UMAP units.")
    return figure, note


def legend_strip() -> None:
    """The background's colours (the first annotation), once for every plot below."""
    values = adata.obs[group_column].astype("category")
    legend = legend_table(values.cat.codes.to_numpy(), list(values.cat.categories),
                          state.category_palette(values))  # the colours state.category_image uses
    items = " ".join(f'<span style="white-space:nowrap;margin-right:14px"><span style="color:{row.color}">●</span> '
                     f"{html.escape(str(row.category))} ({row.n_cells:,})</span>" for row in legend.itertuples())
    st.markdown(f'<div style="font-size:0.85rem;line-height:1.7">{group_column}: {items} · '
                '<span style="white-space:nowrap">→ knocked out</span></div>', unsafe_allow_html=True)


def cell_type_bars(method: str, result) -> go.Figure:
    """Mean shift (1 - cosine) per group of the first annotation, with its standard error."""
    frame = pd.DataFrame({"group": adata.obs[group_column].iloc[result.cells].astype(str).to_numpy(),
                          "shift": 1 - result.cosine})
    table = frame.groupby("group")["shift"].agg(["mean", "sem", "count"]).sort_values("mean", ascending=False)
    categories = [str(v) for v in adata.obs[group_column].astype("category").cat.categories]
    colors = dict(zip(categories, state.category_palette(adata.obs[group_column])))  # the UMAP's colours
    figure = go.Figure(go.Bar(x=table.index, y=table["mean"], error_y={"type": "data", "array": table["sem"].fillna(0)},
                              customdata=table["count"], marker_color=[colors.get(g, "#888888") for g in table.index],
                              hovertemplate="%{x}<br>mean shift %{y:.3g}<br>%{customdata} cells<extra></extra>"))
    figure.update_layout(title=f"{LABEL[method]}: mean shift by {group_column}", height=340,
                         margin={"l": 10, "r": 10, "t": 40, "b": 10}, yaxis_title="mean shift (1 − cosine)",
                         yaxis_tickformat=".2g")
    return figure


if entry is None:
    st.caption("Choose a gene and cells, then press **Run knockout**.")
elif "error" in entry:
    st.error(entry["error"])
else:
    results = entry["results"]
    done = {m: r for m, r in results.items() if not isinstance(r, str)}
    for method, message in results.items():
        if isinstance(message, str):
            st.error(f"{LABEL[method]}: {message}")
    if mode != "delete":
        st.info("The PCA and linear baselines model deletion only, so overexpression shows the encoder alone; "
                "switch to delete to compare it with the baselines.")
    if done:
        any_result = next(iter(done.values()))
        sampled = (f" (a random sample of {entry['n_chosen']:,} of the {entry['n_population']:,} cells)"
                   if entry["n_chosen"] < entry["n_population"] else "")
        st.subheader(f"{mode.capitalize()} {gene} in {describe(population)}{sampled}")
        summary = pd.DataFrame([{**result.summary(), "method": LABEL[method]} for method, result in done.items()])
        summary = summary[["method", "n_cells", "n_not_expressed", "mean_cosine", "mean_shift", "mean_shift_norm"]]
        st.dataframe(summary, hide_index=True, width="stretch", column_config=column_help(summary, NUMBER_FORMATS),
                     key="ko_summary")
        st.caption("**Cosine** compares each cell's embedding before and after the knockout (1 = unchanged); "
                   "**shift** = 1 − cosine, so larger means the knockout moves the cell more; **shift norm** is the "
                   "length of the move in the embedding's own units. Sizes differ between embeddings: compare "
                   "methods by their ranking of genes or cell types, not by the raw numbers.")
        if {"encoder", "linear"} <= set(done):
            st.info(knockout_note(state.session_knockouts(analysis.key)))
        n_silent = len(any_result.not_expressed)
        n_chosen = n_silent + len(any_result.cells)
        st.markdown(f"**{n_silent:,} of the {n_chosen:,} chosen cells do not express {gene}** (no counts): they are "
                    "reported here and left out of every number above, not counted as unaffected.")
        st.markdown("\n".join(f"- **{LABEL[method]}**: {EXPLAIN[method]}." for method in done))
        st.markdown("**Where the knocked-out cells move** (each method in the UMAP of its own embedding)")
        zoom = st.toggle("Zoom to the knocked-out cells", value=True, key="ko_zoom",
                         help="Off: the whole layout. Either way, plotly's zoom re-scales the plot.")
        if group_column:
            legend_strip()
        areas = st.columns(len(done))
        for area, (method, result) in zip(areas, done.items()):
            with area:
                figure, note = arrow_figure(method, result, zoom)
                if figure is not None:
                    st.plotly_chart(figure, width="stretch", key=f"ko_umap_{method}", config={"displaylogo": False})
                st.caption(note)
        if group_column:
            n_groups = adata.obs[group_column].iloc[any_result.cells].nunique()
            if n_groups > 1:
                st.markdown(f"**Which {group_column} moves most**")
                for area, (method, result) in zip(st.columns(len(done)), done.items()):
                    area.plotly_chart(cell_type_bars(method, result), width="stretch", key=f"ko_bars_{method}",
                                      config={"displaylogo": False})
                st.caption("Bars: the mean shift of each group's cells, with its standard error. " + HELP["shift"])
            else:
                st.caption(f"The chosen cells are all one {group_column}; choose {ALL} (or another annotation) "
                           f"to compare the shift between {group_column} values.")


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
if use_goal:
    if not annotations:
        right.caption("This dataset has no categorical annotation to define a goal state.")
    else:
        goal_column = right.selectbox("Goal: cells with", annotations, key="sc_goal_column")
        goal_values = [str(v) for v in adata.obs[goal_column].astype("category").cat.categories]
        start_value = screen_population[1] if screen_population and screen_population[0] == goal_column else None
        default = next((i for i, v in enumerate(goal_values) if v != start_value), 0)
        goal_value = right.selectbox(f"{goal_column} =", goal_values, index=default, key="sc_goal_value")
        goal_spec = (goal_column, goal_value)

buttons = st.columns([1, 1, 6])
run_screen = (buttons[0].button("Run screen", type="primary", key="sc_run", disabled=not screen_methods)
              or tour.wants_run("screen"))
buttons[1].button("Cancel", key="sc_cancel", on_click=lambda: st.session_state.update(screen_cancel=True),
                  help="Stops a running screen; what was screened so far is kept and marked partial.")
background = buttons[2].toggle("Run in the background", key="sc_background",
                               help="Screen as a job on the Dask cluster (one per method; see the Jobs page): the page "
                                    "stays free, and the screen goes on when you leave or refresh it. The same "
                                    "settings show its result here when it has finished.")

sc_key = (analysis.key, model_folder, screen_population, tuple(screen_methods), top, screen_max, goal_spec, estimate)
sc_store = st.session_state.setdefault("screen_results", {})


def screen_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The screen's population, its sample of at most ``screen_max`` cells and the goal's cells (None without a
    goal); refuses an empty population or a goal equal to the start."""
    everyone, cells = population_cells(screen_population, screen_max)
    goal_cells = choose_cells(adata, dict([goal_spec])) if goal_spec else None
    if goal_spec:
        goal_from_groups(adata.obsm["X_pca"], everyone, goal_cells)  # refuse a goal equal to the start at once
    return everyone, cells, goal_cells


def screen_job_params(create: bool) -> list[dict] | None:
    """The parameters of the background jobs that screen these settings, one per method (``sccore.jobs`` kind
    ``screen``, with the analysis's filters and PCA); None when ``create`` is off and the demo has no file yet."""
    preprocess = analysis.params.preprocess
    common = {"where": dict([screen_population]) if screen_population else {},
              "goal": dict([goal_spec]) if goal_spec else {}, "goal_start": "population",  # as run_the_screen
              "top": top, "max_cells": screen_max, "device": analysis.params.encoder_device,
              "n_comps": analysis.params.pca.n_comps,
              "min_genes": preprocess.min_genes, "max_pct_mito": preprocess.max_pct_mito,
              "min_cells": preprocess.min_cells, "n_top_genes": preprocess.n_top_genes,
              "library_size_key": preprocess.library_size_key}
    source = state.current_source()[0]
    params = [state.job_params("screen", source, {**common, "model": model_folder if method == "encoder" else method,
                                                  "estimate": estimate if method == "encoder" else "exact"}, create)
              for method in screen_methods]
    return None if None in params else params


def submit_screen_jobs() -> None:
    """Queue a background screen for each chosen method, unless one with these settings is already under way."""
    screen_cells()  # an empty population or a goal equal to the start is refused before a job is queued
    params = screen_job_params(create=True)
    for one, record in zip(params, state.find_jobs("screen", params)):
        if record is None or record.done:  # a finished one again: its result comes from the cache at once
            state.submit_job("screen", state.current_source()[0], one)


def background_screen() -> dict | None:
    """The background screens of these settings, found in the job records (also after a browser refresh): their
    tables once every method's job has ended, ``{"running": job ids}`` while some run, None when there are none."""
    params = screen_job_params(create=False)
    records = state.find_jobs("screen", params) if params else [None]
    if None in records:
        return None
    if not all(record.done for record in records):
        return {"running": tuple(record.id for record in records)}
    everyone, cells = population_cells(screen_population, screen_max)
    tables, errors = {}, {}
    for method, record in zip(screen_methods, records):
        try:
            if record.status != "finished":
                raise InputError(record.error or f"The background job `{record.id}` was {record.status}.")
            tables[method] = pd.read_csv(record.result)
        except (InputError, OSError) as error:
            errors[method] = str(error)
    result = {"tables": tables, "errors": errors, "partial": False, "progress": {m: 1.0 for m in screen_methods},
              "n_population": len(everyone), "n_cells": len(cells)}
    sc_store[sc_key] = result
    if not errors:
        state.remember_result(("screen",) + sc_key, result)
    return result


def run_the_screen() -> dict:
    """Screen every chosen method; a click (Cancel or any widget) stops it and keeps what was done as partial.

    A click makes Streamlit stop this run at its next element update (the progress bar) and start a new run at once
    (``runner.fastReruns``), or rerun it afterwards. Either way the progress callback catches the request, the screen
    stops after the current cell, the partial tables go to ``session_state`` and the request is raised again; the new
    run waits for ``screen_running`` to clear, then shows them.
    """
    everyone, cells, goal_cells = screen_cells()
    st.session_state["screen_cancel"] = False
    interrupted: dict = {}
    progress_of = {method: 0.0 for method in screen_methods}
    bar = st.progress(0.0, text="Starting the screen…")

    def should_stop() -> bool:
        return "request" in interrupted or bool(st.session_state.get("screen_cancel"))

    tables, errors = {}, {}
    st.session_state["screen_running"] = sc_key
    try:
        for position, method in enumerate(screen_methods):
            if should_stop():
                break

            def report(fraction: float, message: str, position=position, method=method) -> None:
                progress_of[method] = fraction
                if "request" in interrupted:
                    return  # a stopped run raises again at every element update
                try:
                    bar.progress(min(max((position + fraction) / len(screen_methods), 0.0), 1.0),
                                 text=f"{LABEL[method]}: {message}")
                except (RerunException, StopException) as request:  # a click: keep the partial tables
                    interrupted["request"] = request

            try:
                model = (state.loaded_model(model_folder, analysis.params.encoder_device) if method == "encoder"
                         else None)
                goal = goal_from_groups(adata.obsm[REP[method]], everyone, goal_cells) if goal_spec else None
                tables[method] = screen(adata, cells, method, model=model, top=top, goal=goal,
                                        library_size_key=analysis.params.preprocess.library_size_key,
                                        estimate=estimate if method == "encoder" else "exact",
                                        progress=report, should_stop=should_stop)
            except InputError as error:
                errors[method] = str(error)
        partial = should_stop() and any(progress_of[m] < 1.0 for m in screen_methods if m not in errors)
        result = {"tables": tables, "errors": errors, "partial": partial, "progress": progress_of,
                  "n_population": len(everyone), "n_cells": len(cells)}
        sc_store[sc_key] = result
        if not partial:
            state.remember_result(("screen",) + sc_key, result)
    finally:
        st.session_state.pop("screen_running", None)
    if "request" in interrupted:
        raise interrupted["request"]
    bar.empty()
    return result


if st.session_state.get("screen_running") is not None:  # a click stopped a screen that is finishing its cell
    with st.spinner("Stopping the running screen…"):
        deadline = time.monotonic() + 120
        while st.session_state.get("screen_running") is not None and time.monotonic() < deadline:
            time.sleep(0.2)


if run_screen and background and state.recall_result(("screen",) + sc_key) is None:
    try:
        submit_screen_jobs()
        sc_store.pop(sc_key, None)  # shown from the jobs below
    except InputError as error:
        sc_store[sc_key] = {"error": str(error)}
    run_screen = False
screened = sc_store.get(sc_key)
if run_screen:
    finished = state.recall_result(("screen",) + sc_key)
    if finished is not None:
        sc_store[sc_key] = screened = finished
    else:
        try:
            screened = run_the_screen()
        except InputError as error:
            sc_store[sc_key] = screened = {"error": str(error)}
elif screened is None:
    screened = state.recall_result(("screen",) + sc_key)
if screened is None:
    screened = background_screen()


if screened is None:
    st.caption("Choose cells and methods, then press **Run screen**. Results are kept: the same settings reopen "
               "them without computing again.")
elif "running" in screened:
    state.follow_jobs(screened["running"], "The screen", "sc_job_cancel",
                      "The same settings show its result here when it has finished.")
elif "error" in screened:
    st.error(screened["error"])
else:
    tables = screened["tables"]
    for method, message in screened["errors"].items():
        st.error(f"{LABEL[method]}: {message}")
    sampled = (f", a random sample of {screened['n_cells']:,} of its {screened['n_population']:,} cells"
               if screened["n_cells"] < screened["n_population"] else f", {screened['n_cells']:,} cells")
    goal_text = f"; goal: {goal_spec[0]} = {goal_spec[1]}" if goal_spec else ""
    st.subheader(f"Screen of {describe(screen_population)}{sampled}{goal_text}")
    if screened["partial"]:
        done_text = "; ".join(f"{LABEL[m]} {100 * f:.0f} % of the cells" for m, f in screened["progress"].items()
                              if m not in screened["errors"])
        st.warning(f"**Partial result**: the screen was cancelled ({done_text}). Each gene's numbers cover only the "
                   "cells screened so far. Press **Run screen** to compute it fully.")
    if tables:
        score = "goal_alignment" if goal_spec else "mean_shift"
        tabs = st.tabs([f"{LABEL[m]} ({len(t):,} genes)" for m, t in tables.items()])
        for tab, (method, table) in zip(tabs, tables.items()):
            shown = [c for c in SCREEN_COLUMNS if c in table.columns]
            tab.dataframe(table[shown], hide_index=True, width="stretch",
                          column_config=column_help(table[shown], NUMBER_FORMATS), key=f"sc_table_{method}")
        long = pd.concat(tables.values(), ignore_index=True)
        long.insert(0, "status", "partial" if screened["partial"] else "complete")
        st.download_button("Screen results (CSV, every method)", long.to_csv(index=False).encode(),
                           file_name="knockout_screen_partial.csv" if screened["partial"] else "knockout_screen.csv",
                           mime="text/csv", key="sc_csv")
        if len(tables) > 1:
            st.markdown(f"**Do the methods agree?** Spearman correlation of the genes' {score} between methods, and "
                        "how many of their best genes they share:")
            agreement = method_agreement(tables, score)
            st.dataframe(agreement, hide_index=True, column_config=column_help(agreement, {"spearman_rho": "%.2f"}),
                         key="sc_agreement")
            pair = agreement[agreement["methods"] == f"{LABEL['encoder']} vs {LABEL['linear']}"]
            if len(pair):
                note = agreement_note(float(pair["spearman_rho"].iloc[0]), int(pair["shared_genes"].iloc[0]),
                                      "the screened genes")
                if note:
                    st.markdown(note)
        st.info(CAVEAT)
