"""Explore: datashaded layouts coloured by an annotation or a gene (dashboard/viewer.py: zoom, pan, hover and
selection without a button; colour, zoom and hover rerun only the plots' fragment), the selected cells, differential
expression and exports."""

import numpy as np
import streamlit as st

from dashboard import cached, clusters, de, state, viewer
from dashboard.widgets import plain
from sccore.export import csv_bytes
from sccore.glossary import HELP, baseline_note
from sccore.render import png_bytes
from sccore.select import composition, selection_bounds
from sccore.workflow import layout_key

st.title("Explore the cells")
analysis = state.open_or_stop(atlas_ok=True)
adata = analysis.adata
layouts = analysis.layouts()
names = list(layouts)

top = st.columns(2)
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
shown = [first, second] if compare and second else [first]


def draw(layout: str, slot: str, mode: str, colour_by: str) -> None:
    """Show one layout in the viewer widget, with its view buttons and PNG download."""
    view = viewer.current_view(analysis, layout)
    if mode == "Annotation":
        image, legend = clusters.grouping_image(analysis, layout, colour_by, view)
        colouring = viewer.Colouring(legend=legend)
    else:
        image, span = cached.gene_image(analysis.key, layout, colour_by, view, analysis)
        colouring = viewer.Colouring(color_span=span, color_title=f"{colour_by} (log1p)")
    viewer.show(analysis, layout, image, view, colouring, key=f"plot_{slot}", groupings=annotations,
                title=f"{layout} · {colour_by}", legend_below=compare)
    selected_here = viewer.selected_cells(analysis, [layout])
    buttons = st.columns(3)
    buttons[0].button("Zoom to selection", key=f"zoom_{slot}", disabled=len(selected_here) < 2,
                      on_click=lambda: st.session_state.update(
                          {viewer.view_key(layout): view.zoomed(*selection_bounds(layouts[layout], selected_here))}),
                      help="Select cells with Box select or Lasso first; the region is re-rendered at full resolution "
                           "(the mouse wheel and Zoom box zoom too).")
    buttons[1].button("Reset view", key=f"reset_{slot}", disabled=viewer.view_key(layout) not in st.session_state,
                      on_click=lambda: st.session_state.pop(viewer.view_key(layout), None),
                      help="Show every cell again (or double-click the plot).")
    buttons[2].download_button("Image (PNG)", lambda: png_bytes(image), file_name=f"{layout}.png", mime="image/png",
                               key=f"png_{slot}", on_click="ignore")  # made when clicked, never a stale media file


@st.fragment
def plots() -> None:
    """The colour controls and the layouts: a new colour, zoom, pan or hover reruns only this part of the page."""
    modes = (["Annotation"] if annotations else []) + ["Gene"]
    controls = st.columns([2, 3])
    mode = controls[0].radio("Colour by", modes, horizontal=True, key="color_mode")
    if not annotations:
        controls[0].caption("This dataset has no categorical annotation, so cells are coloured by a gene.")
    if mode == "Annotation":
        colour_by = controls[1].selectbox("Annotation", annotations, key="color_column")
    else:
        genes = list(adata.var_names)
        default_gene = int(np.argmax(adata.var["highly_variable"].to_numpy())) if "highly_variable" in adata.var else 0
        colour_by = controls[1].selectbox("Gene (type to search)", genes, index=default_gene, key="color_gene")
    st.caption("Wheel: zoom · drag: pan · Zoom box, Box select and Lasso above each plot · double-click: whole "
               "layout · rest the pointer on a cell for its id and annotations.")
    for layout, slot, area in zip(shown, "ab", st.columns(len(shown))):
        with area:
            draw(layout, slot, mode, colour_by)
    if mode == "Gene":
        st.caption(f"Colour: {plain(colour_by)}'s log-normalised expression (log1p), light for none to dark for the "
                   "most; where cells overlap, the highest value shows.")
    else:
        st.caption(f"Colour: each cell's {plain(colour_by)}; a pixel holding several colours mixes them by count, and "
                   "denser places are more opaque.")
    shown_reps = {rep for rep in ("X_pca", "X_encoder") if layout_key(rep) in shown}
    if mode == "Annotation" and {"X_encoder", "X_pca"} <= shown_reps and colour_by in adata.obs:
        scores = cached.neighbour_agreement_scores(analysis.key, colour_by, analysis)
        st.info(baseline_note(f"neighbour agreement by {colour_by}", scores["X_encoder"],
                              {"PCA baseline": scores["X_pca"]}) + " " + HELP["knn_agreement"])


plots()
selected = viewer.selected_cells(analysis, shown)
st.subheader("Selected cells")
if len(selected) == 0:
    st.caption("Use Box select or Lasso on a plot to select cells; their composition appears here.")
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
