"""Search & transfer: the cells most like a cell or a group, and cell labels transferred from reference cells.

Every number comes from ``sccore.transfer`` on FAISS neighbours of the chosen embedding: similar cells
(with their make-up by every annotation and their place on the UMAP), label transfer from some of this
dataset's cells to the rest, and label transfer with another dataset mapped into the reference's space
(either dataset can be the reference).
"""

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import state
from dashboard.explain import column_help
from sccore import InputError
from sccore.export import h5ad_bytes
from sccore.glossary import help_for
from sccore.plots import confusion_figure, layout_figure
from sccore.render import legend_table, render_categories
from sccore.report import transfer_note
from sccore.select import cells_in_selection
from sccore.transfer import (UNASSIGNED, cell_positions, compositions, confusion_table, label_order, per_type_scores,
                             score)
from sccore.workflow import layout_key

REP_LABEL = {"X_pca": "PCA", "X_encoder": "Encoder"}
DONOR_LIKE = ("donor_id", "donor", "individual", "patient", "sample", "batch")
MAX_QUERY_MARKERS = 2000
RANDOM_HALF, BY_VALUES = "A random half of the cells", "Cells with chosen values of an annotation"

st.title("Search & transfer")
st.caption("Find the cells most similar to a cell or a group, and label cells from reference cells by a "
           "similarity-weighted vote of their nearest neighbours (FAISS), in the PCA or the encoder embedding.")
analysis = state.open_or_stop(atlas_ok=True)  # an atlas: search and transfer within it, not mapping
adata = analysis.adata
reps = [rep for rep in REP_LABEL if rep in adata.obsm]
annotations = state.color_options(analysis)
layouts = analysis.layouts()


def layout_for(rep: str) -> str:
    """The UMAP of ``rep`` when there is one, else the first layout."""
    return layout_key(rep) if layout_key(rep) in layouts else next(iter(layouts))


def background(layout: str):
    """The layout drawn in the colours of the first annotation (grey without one), its view and legend."""
    view = state.default_view(analysis, layout)
    if annotations:
        image, legend = state.category_image(analysis.key, layout, annotations[0], view, analysis)
        return image, view, legend
    return state.plain_image(analysis.key, layout, view, analysis), view, None


@st.cache_data(show_spinner="Preparing the file…", max_entries=4)
def labelled_h5ad(cache_key: tuple, labels: pd.DataFrame, _build) -> bytes:
    """The query cells (``_build()``) with the transferred labels in ``obs``, as ``.h5ad`` bytes."""
    export = _build()
    for column in labels.columns:
        export.obs[column] = labels[column].to_numpy()
    return h5ad_bytes(export)


def show_transfer(true: pd.Series | None, predicted: np.ndarray, confidence: np.ndarray, cell_names: pd.Index,
                  order: list[str], key_added: str, slot: str, cache_key: tuple, build_export) -> None:
    """Scores (where true labels exist), confusion heatmap, per-type table and downloads of a transfer; the h5ad
    download is ``build_export()`` (the query cells) with the labels in ``obs[key_added]`` and its confidence."""
    n_unassigned = int(np.sum(predicted == UNASSIGNED))
    if true is not None:
        known = true.notna().to_numpy()
        truth = true.astype(str).to_numpy()[known]
        scores = score(truth, predicted[known])
        cells, accuracy, f1, unassigned = st.columns(4)
        cells.metric("Query cells", f"{len(predicted):,}", help=help_for("n_cells"))
        accuracy.metric("Accuracy", f"{scores['accuracy']:.3f}", help=help_for("accuracy"))
        f1.metric("Macro F1", f"{scores['macro_f1']:.3f}", help=help_for("macro_f1"))
        unassigned.metric("Unassigned", f"{n_unassigned:,}",
                          help=f"{help_for('n_unassigned')} Accuracy over the assigned cells: "
                               f"{scores['accuracy_assigned']:.3f}.")
        if scores["types_never_predicted"]:
            st.caption(f"Never predicted: {', '.join(scores['types_never_predicted'])} (absent from the reference, "
                       "or outvoted).")
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
    left.download_button("Labels (CSV)", table.to_csv().encode(), file_name=f"{key_added}.csv", mime="text/csv",
                         key=f"{slot}_csv")
    right.download_button("Query cells with labels (h5ad)", labelled_h5ad(cache_key, labels, build_export),
                          file_name=f"{key_added}.h5ad", mime="application/octet-stream", key=f"{slot}_h5ad")


def accuracy_of(rep_key: str, query: np.ndarray) -> dict:
    """Accuracy and macro F1 of the within-dataset transfer above, redone in ``obsm[rep_key]``, at the threshold."""
    redone = state.transfer_within(analysis.key, rep_key, label_key, reference_cells, query, tr_k, analysis)
    truth = adata.obs[label_key].iloc[query]
    known = truth.notna().to_numpy()
    scores = score(truth.astype(str).to_numpy()[known], redone.assigned(threshold)[known])
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


# --- Similar cells -------------------------------------------------------------------------------------------------

st.header("Similar cells")
top = st.columns([2, 3, 2, 2])
rep = top[0].selectbox("Embedding", reps, key="search_rep", format_func=lambda r: f"{REP_LABEL[r]} ({r})")
how = top[1].radio("Query", ["One cell", "A group", "Selection on the plot"], horizontal=True, key="search_how",
                   help="A group or a selection is searched by its mean embedding.")
k = int(top[2].number_input("Neighbours (k)", 1, 1000, 15, key="search_k"))
metric = top[3].radio("Similarity", ["euclidean", "cosine"], horizontal=True, key="search_metric",
                      format_func=str.capitalize, help="Which distance ranks the neighbours; the table shows both.")
layout = layout_for(rep)
coords = layouts[layout]

query_cells = np.array([], dtype=np.int64)
if how == "One cell":
    cell_id = st.text_input("Cell id", value=str(adata.obs_names[0]), key="search_cell").strip()
    try:
        query_cells = cell_positions(adata.obs_names, [cell_id])
    except InputError as error:
        st.error(str(error))
elif how == "A group":
    if not annotations:
        st.info("This dataset has no categorical annotation to make groups from: pick one cell or a selection.")
    else:
        left, right = st.columns(2)
        group_column = left.selectbox("Annotation", annotations, key="search_group_column")
        group_values = adata.obs[group_column].astype(str)
        group_value = right.selectbox(f"{group_column} =", label_order(adata.obs[group_column]),
                                      key="search_group_value")
        query_cells = np.flatnonzero((group_values == group_value).to_numpy())
else:  # the plot to select on never changes with the selection (a changed figure would reset it)
    image, view, legend = background(layout)
    event = st.plotly_chart(layout_figure(image, view, legend=legend, coords=coords,
                                          title=f"{layout} · draw a box or lasso around the query cells"),
                            key="search_select", on_select="rerun", selection_mode=("box", "lasso"), width="stretch",
                            config={"displaylogo": False})
    query_cells = cells_in_selection(coords, (event or {}).get("selection", {}) if event else {})
    if len(query_cells) == 0:
        st.caption("Draw a box or lasso on the plot to choose the query cells; their neighbours appear below.")
exclude = st.toggle("Leave the query cells out of the results", value=True, key="search_exclude")

neighbours = pd.DataFrame()
if len(query_cells):
    try:
        neighbours = state.similar_cells_table(analysis.key, rep, tuple(query_cells.tolist()), k, metric, exclude,
                                               analysis)
    except InputError as error:
        st.error(str(error))
if len(neighbours):
    target = f"cell {cell_id}" if how == "One cell" else f"{len(query_cells):,} cells (their mean)"
    st.write(f"**{len(neighbours)} nearest cells** to {target} in {REP_LABEL[rep]}, by {metric} similarity.")
    shown = neighbours.copy()
    shown.insert(1, "cell", adata.obs_names[shown["position"]].astype(str))
    for column in annotations:
        shown[column] = adata.obs[column].astype(str).to_numpy()[shown["position"]]
    shown = shown.drop(columns="position")
    st.dataframe(shown, hide_index=True, key="search_table", width="stretch",
                 column_config=column_help(shown, {"euclidean_distance": "%.4g", "cosine_similarity": "%.4f"}))
    st.download_button("Neighbours (CSV)", shown.to_csv(index=False).encode(), file_name="similar_cells.csv",
                       mime="text/csv", key="search_csv")
    if annotations:
        st.markdown("**The neighbours by annotation**")
        areas = st.columns(min(3, len(annotations)))
        for position, (column, table) in enumerate(compositions(adata.obs, neighbours["position"].to_numpy(),
                                                                 annotations).items()):
            areas[position % len(areas)].dataframe(table, hide_index=True, width="stretch", key=f"search_comp_{column}")

image, view, legend = background(layout)
figure = layout_figure(image, view, legend=legend, title=f"{layout} · query (crosses) and neighbours (circles)")
if len(query_cells):
    shown_query = query_cells
    if len(shown_query) > MAX_QUERY_MARKERS:
        shown_query = np.sort(np.random.default_rng(0).choice(query_cells, MAX_QUERY_MARKERS, replace=False))
    figure.add_trace(go.Scattergl(x=coords[shown_query, 0], y=coords[shown_query, 1], mode="markers",
                                  name=f"query ({len(query_cells):,})", hoverinfo="skip",
                                  marker={"symbol": "x", "size": 8, "color": "#111111"}))
if len(neighbours):
    positions = neighbours["position"].to_numpy()
    figure.add_trace(go.Scattergl(
        x=coords[positions, 0], y=coords[positions, 1], mode="markers", name=f"neighbours ({len(positions)})",
        marker={"size": 11, "color": "rgba(0,0,0,0)", "line": {"color": "#D55E00", "width": 2}},
        text=[f"{adata.obs_names[p]}<br>rank {r}<br>cosine {c:.3f}" for p, r, c in
              zip(positions, neighbours["rank"], neighbours["cosine_similarity"])],
        hovertemplate="%{text}<extra>neighbour</extra>"))
if how != "Selection on the plot" or len(neighbours):
    st.plotly_chart(figure, key="search_plot", width="stretch", config={"displaylogo": False})


# --- Label transfer within this dataset ----------------------------------------------------------------------------

st.header("Label transfer within this dataset")
st.caption("Reference cells keep their labels; every other cell gets the similarity-weighted vote of its k nearest "
           "reference cells (Gaussian weights on the distance, scaled by each cell's mean neighbour distance). "
           "Confidence = the winning label's share of the vote; below the threshold a cell is 'unassigned'. "
           "The embedding is this dataset's own (fitted without labels on every cell); `python -m sccore transfer` "
           "keeps the query out of the fit entirely.")
label_columns = annotations + [c for c in map(str, adata.obs.columns) if c not in annotations]
left, middle, right = st.columns([2, 3, 2])
label_key = left.selectbox("Labels to transfer", label_columns, key="tr_label")
tr_rep = left.selectbox("Embedding", reps, key="tr_rep", format_func=lambda r: f"{REP_LABEL[r]} ({r})")
split_columns = [c for c in annotations if c != label_key]
donor_like = [c for c in split_columns if c in DONOR_LIKE]
split = middle.radio("Reference cells", [BY_VALUES, RANDOM_HALF] if split_columns else [RANDOM_HALF],
                     index=0 if donor_like else (1 if split_columns else 0), key="tr_split")
reference_mask = np.zeros(adata.n_obs, dtype=bool)
split_text = "a random half of the cells"
if split == BY_VALUES:
    split_column = middle.selectbox("Annotation", split_columns, key="tr_split_column",
                                    index=split_columns.index(donor_like[0]) if donor_like else 0)
    values = label_order(adata.obs[split_column])
    chosen = middle.multiselect("Reference values (the other cells are the query)", values, key="tr_split_values",
                                default=values[: max(1, (3 * len(values)) // 4)])
    reference_mask = adata.obs[split_column].astype(str).isin(chosen).to_numpy()
    split_text = f"{split_column} in {', '.join(chosen)}" if chosen else "no cell"
else:
    reference_mask[np.random.default_rng(0).permutation(adata.n_obs)[: adata.n_obs // 2]] = True
tr_k = int(right.number_input("Neighbours (k)", 1, 200, 15, key="tr_k"))
threshold = right.slider("Confidence threshold", 0.0, 1.0, 0.5, 0.05, key="tr_threshold",
                         help="Cells whose winning label has less than this share of the vote become 'unassigned'.")
key_added = right.text_input("obs column to write", "predicted_cell_type", key="tr_key_added").strip() or \
    "predicted_cell_type"
reference_cells, rest = np.flatnonzero(reference_mask), np.flatnonzero(~reference_mask)
tr_key = (analysis.key, tr_rep, label_key, split_text, tr_k)
if st.button("Transfer labels", type="primary", key="tr_run"):
    try:
        if len(reference_cells) == 0 or len(rest) == 0:
            raise InputError("The reference and the query both need cells: choose some, but not all, values.")
        result = state.transfer_within(analysis.key, tr_rep, label_key, reference_cells, rest, tr_k, analysis)
        st.session_state["tr_result"] = {"key": tr_key, "result": result, "query": rest}
    except InputError as error:
        st.session_state["tr_result"] = {"key": tr_key, "error": str(error)}
entry = st.session_state.get("tr_result")
if entry is None or entry["key"] != tr_key:
    st.caption("Choose the labels and the reference cells, then press **Transfer labels**.")
elif "error" in entry:
    st.error(entry["error"])
else:
    result = entry["result"]
    for warning in result.warnings:
        st.warning(warning)
    st.subheader(f"{label_key} from {split_text} ({len(adata.obs_names) - len(entry['query']):,} reference cells)")
    query = entry["query"]
    show_transfer(adata.obs[label_key].iloc[query], result.assigned(threshold), result.confidence,
                  adata.obs_names[query], label_order(adata.obs[label_key]), key_added, "tr", tr_key,
                  lambda: adata[query].copy())
    if set(reps) == {"X_pca", "X_encoder"} and adata.obs[label_key].iloc[query].notna().any():
        by_embedding = pd.DataFrame([{"embedding": rep_key, **accuracy_of(rep_key, query)} for rep_key in reps])
        st.markdown("**The same transfer in each embedding** (same reference, query, k and threshold)")
        st.dataframe(by_embedding, hide_index=True, key="tr_by_embedding",
                     column_config=column_help(by_embedding, {"accuracy": "%.3f", "macro_f1": "%.3f"}))
        st.info(transfer_note(by_embedding))


# --- Another dataset -----------------------------------------------------------------------------------------------

st.header("Label transfer with another dataset")
if state.is_atlas(state.current_source()[0]):
    st.info("This dataset is an atlas: its counts stay on disk, so mapping another dataset onto it (or it onto "
            "another) is not available here. Use `python -m sccore transfer` with the file itself.")
    st.stop()
st.caption("The query's raw counts are embedded into the reference's space without refitting: PCA with the "
           "reference's genes, normalisation and loadings (genes the query lacks count as zero), or the same encoder. "
           "Each query cell then gets the reference's labels by the vote above (same k and threshold).")
files = state.available_files()
left, middle, right = st.columns([3, 2, 2])
origin = left.radio("Other dataset", (["A file from the data folder"] if files else []) + ["Upload a .h5ad file"],
                    horizontal=True, key="map_origin")
source = None
try:
    if origin.startswith("A file"):
        source = files[left.selectbox("File", list(files), key="map_file")]
    else:
        upload = left.file_uploader("An AnnData .h5ad file of raw counts", type=["h5ad"], key="map_upload")
        if upload is not None:
            source = state.save_upload(upload.name, upload.getvalue())
    other = state.load_dataset(source, None) if source else None
except InputError as error:
    st.error(str(error))
    source = other = None
direction = middle.radio("Reference (labelled)", ["This dataset", "The other dataset"], key="map_direction",
                         help="This dataset: the other dataset's cells are labelled and placed on this UMAP. "
                              "The other dataset: this dataset's cells are labelled from it.")
this_is_reference = direction == "This dataset"
reference_obs = adata.obs if this_is_reference else (other.obs if other is not None else pd.DataFrame())
map_columns = ([c for c in annotations if c in reference_obs.columns] +
               [c for c in map(str, reference_obs.columns) if c not in annotations])
map_label = middle.selectbox("Labels to transfer", map_columns, key="map_label") if map_columns else None
map_rep = right.selectbox("Embedding", reps, key="map_rep", format_func=lambda r: f"{REP_LABEL[r]} ({r})")
gene_id_key = right.text_input("Gene ID column (optional)", key="map_gene_id_key",
                               help="A var column with Ensembl IDs in both datasets, to match genes by instead of "
                                    "symbols.").strip()
map_key = (analysis.key, map_rep, source, this_is_reference, gene_id_key, map_label, tr_k)
if st.button("Map and transfer", type="primary", key="map_run", disabled=source is None or map_label is None):
    try:
        st.session_state["map_result"] = {"key": map_key, **state.mapped_transfer(
            analysis.key, map_rep, source, this_is_reference, gene_id_key, map_label, tr_k, analysis)}
    except InputError as error:
        st.session_state["map_result"] = {"key": map_key, "error": str(error)}
mapped = st.session_state.get("map_result")
if mapped is None or mapped["key"] != map_key:
    st.caption("Choose a dataset, which one is the reference and the labels, then press **Map and transfer**.")
elif "error" in mapped:
    st.error(mapped["error"])
else:
    report, result, obs = mapped["report"], mapped["result"], mapped["obs"]
    name = "this dataset" if not this_is_reference else Path(source).name
    st.subheader(f"{name}: {len(obs):,} cells labelled by {map_label}")
    st.info(f"{report['genes_matched']:,} of the {report['genes_used']:,} genes the reference's {map_rep} uses were "
            f"found (matched by {report['matched_by']}); library sizes from {report['library_size']}.")
    for warning in result.warnings:
        st.warning(warning)
    predicted = result.assigned(threshold)
    true = obs[map_label] if map_label in obs.columns else None
    def build() -> ad.AnnData:
        """The query cells for the h5ad download: the other dataset's (with their mapped embedding), or this one."""
        if this_is_reference:
            return ad.AnnData(other.X, obs=obs.copy(), var=other.var, obsm={map_rep: mapped["embedding"]})
        return adata.copy()

    show_transfer(true, predicted, result.confidence, obs.index, mapped["order"], key_added, "map", map_key, build)
    if this_is_reference and map_rep in analysis.umap_models:  # the other dataset's cells placed on this UMAP
        placed = state.placed_in_umap(analysis.key, map_rep, np.asarray(mapped["embedding"]), analysis, optimize=False)
        layout = layout_key(map_rep)
        image, view, legend = background(layout)
        figure = layout_figure(image, view, legend=legend, title=f"{layout} · the other dataset's cells (crosses)")
        figure.add_trace(go.Scattergl(x=placed[:, 0], y=placed[:, 1], mode="markers", name="mapped cells",
                                      text=predicted, hovertemplate="%{text}<extra>mapped</extra>",
                                      marker={"symbol": "x", "size": 6, "color": "#111111", "opacity": 0.6}))
        st.plotly_chart(figure, key="map_umap", width="stretch", config={"displaylogo": False})
    elif not this_is_reference:  # this dataset's UMAP coloured by the transferred labels
        layout = layout_for(map_rep)
        view = state.default_view(analysis, layout)
        names = mapped["order"] + ([UNASSIGNED] if UNASSIGNED in set(predicted) else [])
        codes = pd.Categorical(predicted, categories=names).codes
        colors = state.category_palette(pd.Series(pd.Categorical(predicted, categories=names)))
        image = render_categories(layouts[layout], codes, colors, view)
        st.plotly_chart(layout_figure(image, view, legend=legend_table(codes, names, colors),
                                      title=f"{layout} · {key_added}"), key="map_umap", width="stretch",
                        config={"displaylogo": False})
