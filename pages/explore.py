"""Explore: datashaded layouts coloured by an annotation or a gene, zoom, selection and exports."""

import numpy as np
import streamlit as st

from dashboard import cached, clusters, de, state
from dashboard.widgets import plain
from sccore.export import csv_bytes
from sccore.glossary import HELP, baseline_note
from sccore.plots import layout_figure
from sccore.render import png_bytes
from sccore.select import cells_in_selection, composition, selection_bounds
from sccore.workflow import layout_key

st.title("Explore the cells")
analysis = state.open_or_stop(atlas_ok=True)
adata = analysis.adata
layouts = analysis.layouts()
names = list(layouts)

top = st.columns([2, 2, 3])
first = top[0].selectbox("Layout", names, key="layout_a",
                         help="X_umap: UMAP of the PCA embedding (FAISS neighbours); X_umap_encoder: UMAP of the "
                              "transformer encoder's embedding; PC1 vs PC2: the first two principal components.")
has_encoder = "X_umap_encoder" in layouts
compare = top[1].toggle("Compare two layouts side by side", key="compare", disabled=len(names) < 2, value=has_encoder,
                        help="With an encoder embedding, its UMAP is shown beside PCA's, coloured the same way.")
others = [n for n in names if n != first]
second = (top[1].selectbox("Second layout", others, key="layout_b",
                           index=others.index("X_umap_encoder") if "X_umap_encoder" in others else 0)
          if compare else None)

annotations = clusters.groupings(analysis)  # the annotation columns and the clustering chosen on Clusters & markers
if st.session_state.get("color_column") not in annotations:  # e.g. the clusters of another resolution
    st.session_state.pop("color_column", None)
modes = (["Annotation"] if annotations else []) + ["Gene"]
mode = top[2].radio("Colour by", modes, horizontal=True, key="color_mode")
if not annotations:
    top[2].caption("This dataset has no categorical annotation, so cells are coloured by a gene.")
if mode == "Annotation":
    column = top[2].selectbox("Annotation", annotations, key="color_column")
else:
    genes = list(adata.var_names)
    default_gene = int(np.argmax(adata.var["highly_variable"].to_numpy())) if "highly_variable" in adata.var else 0
    gene = top[2].selectbox("Gene (type to search)", genes, index=default_gene, key="color_gene")


def draw(layout: str, slot: str) -> np.ndarray:
    """Show one layout; return the cells the user selected on it."""
    coords = layouts[layout]
    view = st.session_state.get(f"view_{layout}") or state.default_view(analysis, layout)
    if mode == "Annotation":
        image, legend = clusters.grouping_image(analysis, layout, column, view)
        figure = layout_figure(image, view, legend=legend, coords=coords, title=f"{layout} · {column}",
                               height=680 if compare else 560, legend_below=compare)
    else:
        image, span = cached.gene_image(analysis.key, layout, gene, view, analysis)
        figure = layout_figure(image, view, color_span=span, color_title=f"{gene}<br>log1p", coords=coords,
                               title=f"{layout} · {gene}")
    event = st.plotly_chart(figure, key=f"plot_{slot}", on_select="rerun", selection_mode=("box", "lasso"),
                            width="stretch", config={"displaylogo": False})
    selected = cells_in_selection(coords, (event or {}).get("selection", {}) if event else {})
    buttons = st.columns(3)
    if buttons[0].button("Zoom to selection", key=f"zoom_{slot}", disabled=len(selected) < 2,
                         help="Draw a box or lasso on the plot first; the region is re-rendered at full resolution."):
        x_range, y_range = selection_bounds(coords, selected)
        st.session_state[f"view_{layout}"] = view.zoomed(x_range, y_range)
        st.rerun()
    if buttons[1].button("Reset view", key=f"reset_{slot}", disabled=f"view_{layout}" not in st.session_state):
        st.session_state.pop(f"view_{layout}", None)
        st.rerun()
    buttons[2].download_button("Image (PNG)", lambda: png_bytes(image), file_name=f"{layout}.png", mime="image/png",
                               key=f"png_{slot}")  # a callable: made when clicked, never a stale media file
    return selected


if compare and second:
    left, right = st.columns(2)
    with left:
        selected = draw(first, "a")
    with right:
        selected = np.union1d(selected, draw(second, "b"))
else:
    selected = draw(first, "a")
if mode == "Gene":
    st.caption(f"Colour: {plain(gene)}'s log-normalised expression (log1p), light for none to dark for the most; "
               "where cells overlap, the highest value shows.")
else:
    st.caption(f"Colour: each cell's {plain(column)}; a pixel holding several colours mixes them by count, and denser "
               "places are more opaque.")
shown_reps = {rep for rep in ("X_pca", "X_encoder") if layout_key(rep) in (first, second)}
if mode == "Annotation" and {"X_encoder", "X_pca"} <= shown_reps and column in adata.obs:
    scores = cached.neighbour_agreement_scores(analysis.key, column, analysis)
    st.info(baseline_note(f"neighbour agreement by {column}", scores["X_encoder"], {"PCA baseline": scores["X_pca"]})
            + " " + HELP["knn_agreement"])

st.subheader("Selected cells")
if len(selected) == 0:
    st.caption("Use the box or lasso tool on a plot to select cells; their composition appears here.")
else:
    st.write(f"**{len(selected):,} cells** selected ({100 * len(selected) / adata.n_obs:.1f} % of all cells).")
    areas = st.columns(min(3, len(annotations))) if annotations else []
    groups = clusters.groupings_table(analysis, annotations)
    for position, column_name in enumerate(annotations):
        areas[position % len(areas)].dataframe(composition(groups, selected, column_name), hide_index=True,
                                               width="stretch")
    table = adata.obs.iloc[selected].copy()
    st.download_button("Selected cells (CSV)", lambda: csv_bytes(table, index=True), file_name="selected_cells.csv",
                       mime="text/csv")

de.show(analysis, selected, annotations)

st.subheader("Export")
st.download_button("Embedding table (CSV): annotations, layouts and PCs",
                   lambda: cached.embedding_csv(analysis.key, analysis), file_name="embedding.csv", mime="text/csv")
st.download_button("Processed dataset (h5ad)", lambda: cached.processed_h5ad(analysis.key, analysis),
                   file_name="processed.h5ad", mime="application/octet-stream")
