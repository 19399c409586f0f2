"""Search & transfer: the cells most like a cell or a group, and cell labels transferred from reference cells.

Every number comes from ``sccore.transfer`` on FAISS neighbours of the chosen embedding: similar cells (with their
make-up by every annotation and their place on the UMAP), label transfer from some of this dataset's cells to the
rest, and label transfer with another dataset mapped into the reference's space (either can be the reference).
"""

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import cached, session, state, viewer, widgets
from dashboard.classifier import show_if_fine_tuned
from dashboard.explain import column_help
from dashboard.session import MappedTransferRequest, TransferRecord, TransferRequest
from sccore import InputError
from sccore.annotations import guess_column, label_candidates
from sccore.export import csv_bytes
from sccore.perturb import choose_cells
from sccore.plots import add_cells, layout_figure
from sccore.transfer import (UNASSIGNED, cell_positions, compositions, default_reference_values, label_order,
                             neighbour_table, reference_split)
from sccore.workflow import layout_key

RANDOM_HALF, BY_VALUES = "A random half of the cells", "Cells with chosen values of an annotation"

st.title("Search & transfer")
st.caption("Find the cells most similar to a cell or a group, and label cells from reference cells by a similarity-"
           "weighted vote of their nearest neighbours (FAISS), in PCA, Harmony's or the encoder's embedding.")
analysis = state.open_or_stop(atlas_ok=True)  # an atlas: search and transfer within it, not mapping
adata = analysis.adata
rep_names = state.embedding_choices(analysis)
reps = list(rep_names)
annotations = state.color_options(analysis)
first_annotation = annotations[0] if annotations else None
layouts = analysis.layouts()


# --- Similar cells -------------------------------------------------------------------------------------------------

st.header("Similar cells")
top = st.columns([2, 3, 2, 2])
rep = top[0].selectbox("Embedding", reps, key="search_rep", format_func=lambda r: f"{rep_names[r]} ({r})")
how = top[1].radio("Query", ["One cell", "A group", "Selection on the plot"], horizontal=True, key="search_how",
                   help="A group or a selection is searched by its mean embedding.")
k = int(top[2].number_input("Neighbours (k)", 1, 1000, 15, key="search_k"))
metric = top[3].radio("Similarity", ["euclidean", "cosine"], horizontal=True, key="search_metric",
                      format_func=str.capitalize, help="Which distance ranks the neighbours; the table shows both.")
layout = state.layout_of(analysis, rep)
coords = layouts[layout]

query_cells = np.array([], dtype=np.int64)
if how == "One cell":
    cell_id = st.text_input("Cell id", value=str(adata.obs_names[0]), key="search_cell").strip()
    try:
        query_cells = cell_positions(adata.obs_names, [cell_id])
    except InputError as error:
        widgets.show_error(error)
elif how == "A group":
    if not annotations:
        st.info("This dataset has no categorical annotation to make groups from: pick one cell or a selection.")
    else:
        left, right = st.columns(2)
        group_column = left.selectbox("Annotation", annotations, key="search_group_column")
        group_value = right.selectbox(f"{group_column} =", label_order(adata.obs[group_column]),
                                      key="search_group_value")
        query_cells = choose_cells(adata, {group_column: group_value})
else:  # the selection drawn on this layout's viewer (here, or on the Explore page)
    plot_area = st.container()  # the viewer is drawn here once the neighbours are known
    query_cells = viewer.selected_cells(analysis, [layout])
    if len(query_cells) == 0:
        st.caption("Draw a box or lasso on the plot (Box select or Lasso above it) to choose the query cells; their "
                   "neighbours appear below.")
exclude = st.toggle("Leave the query cells out of the results", value=True, key="search_exclude")

neighbours = pd.DataFrame()
if len(query_cells):
    try:
        neighbours = cached.similar_cells_table(analysis.key, rep, tuple(query_cells.tolist()), k, metric, exclude,
                                               analysis)
    except InputError as error:
        widgets.show_error(error)
if len(neighbours):
    target = f"cell {cell_id}" if how == "One cell" else f"{len(query_cells):,} cells (their mean)"
    st.write(f"**{len(neighbours)} nearest cells** to {widgets.plain(target)} in {rep_names[rep]}, by {metric} "
             "similarity.")
    shown = neighbour_table(neighbours, adata.obs, annotations)
    st.dataframe(shown, hide_index=True, key="search_table", width="stretch",
                 column_config=column_help(shown, {"euclidean_distance": "%.4g", "cosine_similarity": "%.4f"}))
    st.download_button("Neighbours (CSV)", lambda: csv_bytes(shown), file_name="similar_cells.csv",
                       mime="text/csv", key="search_csv")
    if annotations:
        st.markdown("**The neighbours by annotation**")
        areas = st.columns(min(3, len(annotations)))
        for position, (column, table) in enumerate(compositions(adata.obs, neighbours["position"].to_numpy(),
                                                                 annotations).items()):
            areas[position % len(areas)].dataframe(table, hide_index=True, width="stretch", key=f"search_comp_{column}")

if how != "Selection on the plot":
    plot_area = st.container()
marks, notes = viewer.search_marks(coords, query_cells, neighbours)
with plot_area:
    viewer.show_annotated(analysis, layout, first_annotation, "search_plot", annotations, marks, notes,
                          f"{layout} · draw a box or lasso around the query cells" if not len(query_cells)
                          else f"{layout} · query (crosses) and neighbours (circles)")


# --- Label transfer within this dataset ----------------------------------------------------------------------------

st.header("Label transfer within this dataset")
st.caption("Reference cells keep their labels; every other cell gets the similarity-weighted vote of its k nearest "
           "reference cells (Gaussian weights on the distance, scaled by each cell's mean neighbour distance). "
           "Confidence = the winning label's share of the vote; below the threshold a cell is 'unassigned'. "
           "The embedding is this dataset's own (fitted without labels on every cell); `python -m sccore transfer` "
           "keeps the query out of the fit entirely.")
left, middle, right = st.columns([2, 3, 2])
label_key = left.selectbox("Labels to transfer", label_candidates(adata), key="tr_label")
tr_rep = left.selectbox("Embedding", reps, key="tr_rep", format_func=lambda r: f"{rep_names[r]} ({r})")
split_columns = [c for c in annotations if c != label_key]
by_donor = guess_column(split_columns, "batch")  # donors, samples or batches: split by them at first
split_by = middle.radio("Reference cells", [BY_VALUES, RANDOM_HALF] if split_columns else [RANDOM_HALF],
                        index=0 if by_donor else (1 if split_columns else 0), key="tr_split")
if split_by == BY_VALUES:
    split_column = middle.selectbox("Annotation", split_columns, key="tr_split_column",
                                    index=split_columns.index(by_donor) if by_donor else 0)
    values = label_order(adata.obs[split_column])
    chosen = middle.multiselect("Reference values (the other cells are the query)", values, key="tr_split_values",
                                default=default_reference_values(values))
    split = reference_split(adata.obs, split_column, chosen)
else:
    split = reference_split(adata.obs)
tr_k = int(right.number_input("Neighbours (k)", 1, 200, 15, key="tr_k"))
threshold = right.slider("Confidence threshold", 0.0, 1.0, 0.5, 0.05, key="tr_threshold",
                         help="Cells whose winning label has less than this share of the vote become 'unassigned'.")
key_added = right.text_input("obs column to write", "predicted_cell_type", key="tr_key_added").strip() or \
    "predicted_cell_type"
tr_request = TransferRequest(analysis.key, tr_rep, label_key, split.description, tr_k)
if st.button("Transfer labels", type="primary", key="tr_run"):
    session.run_and_keep(session.TRANSFERS, tr_request, lambda: TransferRecord(cached.transfer_within(
        analysis.key, tr_rep, label_key, split.reference, split.query, tr_k, analysis), split.query), most=1)
entry = widgets.shown_result(session.outcome_of(session.TRANSFERS, tr_request),
                             "Choose the labels and the reference cells, then press **Transfer labels**.")
if entry is not None:
    result, query = entry.result, entry.query
    for warning in result.warnings:
        st.warning(widgets.plain(warning))
    st.subheader(widgets.plain(f"{label_key} from {split.description}")
                 + f" ({len(adata.obs_names) - len(query):,} reference cells)")
    widgets.show_transfer(adata.obs[label_key].iloc[query], result.assigned(threshold), result.confidence,
                          adata.obs_names[query], label_order(adata.obs[label_key]), key_added, "tr", tr_request,
                          lambda: adata[query].copy())
    show_if_fine_tuned(analysis, tr_rep, label_key, np.asarray(adata.obsm[tr_rep])[query], adata.uns.get(tr_rep, {}),
                       result.assigned(threshold), result.confidence, adata.obs[label_key].iloc[query],
                       adata.obs_names[query], threshold, "tr")
    if len(reps) > 1 and adata.obs[label_key].iloc[query].notna().any():
        widgets.show_transfer_by_embedding(cached.transfer_scores(analysis, reps, label_key, split.reference, query,
                                                                  tr_k, threshold))


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
    widgets.show_error(error)
    source = other = None
direction = middle.radio("Reference (labelled)", ["This dataset", "The other dataset"], key="map_direction",
                         help="This dataset: the other dataset's cells are labelled and placed on this UMAP. "
                              "The other dataset: this dataset's cells are labelled from it.")
this_is_reference = direction == "This dataset"
map_columns = (label_candidates(adata if this_is_reference else other) if this_is_reference or other is not None
               else [])
map_label = middle.selectbox("Labels to transfer", map_columns, key="map_label") if map_columns else None
map_names = state.embedding_choices(analysis, new_cells=True)  # Harmony corrects only the cells it was fitted on
map_rep = right.selectbox("Embedding", list(map_names), key="map_rep", format_func=lambda r: f"{map_names[r]} ({r})")
gene_id_key = right.text_input("Gene ID column (optional)", key="map_gene_id_key",
                               help="A var column with Ensembl IDs in both datasets, to match genes by instead of "
                                    "symbols.").strip()
map_request = MappedTransferRequest(analysis.key, map_rep, source, this_is_reference, gene_id_key, map_label, tr_k)
if st.button("Map and transfer", type="primary", key="map_run", disabled=source is None or map_label is None):
    session.run_and_keep(session.MAPPED_TRANSFERS, map_request, lambda: cached.mapped_transfer(
        analysis.key, map_rep, source, this_is_reference, gene_id_key, map_label, tr_k, analysis), most=1)
mapped = widgets.shown_result(session.outcome_of(session.MAPPED_TRANSFERS, map_request),
                              "Choose a dataset, which one is the reference and the labels, then press **Map and "
                              "transfer**.")
if mapped is not None:
    report, result, obs = mapped.report, mapped.result, mapped.obs
    name = "this dataset" if not this_is_reference else Path(source).name
    st.subheader(widgets.plain(f"{name}: {len(obs):,} cells labelled by {map_label}"))
    st.info(f"{report['genes_matched']:,} of the {report['genes_used']:,} genes the reference's {map_rep} uses were "
            f"found (matched by {report['matched_by']}); library sizes from {report['library_size']}.")
    for warning in result.warnings:
        st.warning(widgets.plain(warning))
    predicted = result.assigned(threshold)
    true = obs[map_label] if map_label in obs.columns else None

    def build() -> ad.AnnData:
        """The query cells for the h5ad download: the other dataset's (with their mapped embedding), or this one."""
        if this_is_reference:
            return ad.AnnData(other.X, obs=obs.copy(), var=other.var, obsm={map_rep: mapped.embedding})
        return adata.copy()

    widgets.show_transfer(true, predicted, result.confidence, obs.index, mapped.order, key_added, "map", map_request,
                          build)
    show_if_fine_tuned(analysis, map_rep, map_label, mapped.embedding, report, predicted, result.confidence, true,
                       obs.index, threshold, "map")
    if this_is_reference and map_rep in analysis.umap_models:  # the other dataset's cells placed on this UMAP
        placed = cached.placed_in_umap(analysis.key, map_rep, mapped.embedding, analysis, optimize=False)
        layout = layout_key(map_rep)
        image, view, legend = cached.annotated_layout(analysis, layout, first_annotation)
        figure = layout_figure(image, view, legend=legend, title=f"{layout} · the other dataset's cells (crosses)")
        add_cells(figure, placed, "mapped cells", {"symbol": "x", "size": 6, "color": "#111111", "opacity": 0.6},
                  list(predicted), "mapped")
        st.plotly_chart(figure, key="map_umap", width="stretch", config={"displaylogo": False})
    elif not this_is_reference:  # this dataset's UMAP coloured by the transferred labels
        layout = state.layout_of(analysis, map_rep)
        view = state.default_view(analysis, layout)
        names = mapped.order + ([UNASSIGNED] if UNASSIGNED in set(predicted) else [])
        image, legend = cached.labels_image(analysis, layout, pd.Series(pd.Categorical(predicted, names)), view)
        st.plotly_chart(layout_figure(image, view, legend=legend, title=f"{layout} · {key_added}"), key="map_umap",
                        width="stretch", config={"displaylogo": False})
