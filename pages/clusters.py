"""Clusters & markers: Leiden clusters of an embedding's kNN graph with their agreement with known labels, and the
marker genes of any grouping of the cells (dot plot, heat map, table and CSV)."""

import pandas as pd
import streamlit as st

from dashboard import clusters, state
from dashboard.explain import column_help
from dashboard.widgets import plain, show_error
from sccore import InputError
from sccore.cluster import cluster_agreement
from sccore.export import csv_bytes
from sccore.glossary import HELP
from sccore.markers import COLUMNS, METHODS, group_order, top_genes
from sccore.plots import dot_plot, layout_figure, marker_heatmap
from sccore.settings import safe_file_name
from sccore.tasks.cluster import ClusterParams
from sccore.tasks.markers import MarkersParams

HEATMAP_CELLS = 1500  # cells drawn in the heat map, shared out between the groups
NONE = "(none)"

st.title("Clusters & marker genes")
analysis = state.open_or_stop(atlas_ok=True)

st.subheader("Leiden clusters")
top = st.columns([2, 2, 2])
rep = top[0].selectbox("Embedding", clusters.graph_embeddings(analysis), key="cl_rep",
                       help="Leiden clusters the kNN graph of this embedding: the neighbours its UMAP was laid out "
                            "from.")
resolution = top[1].number_input("Resolution", min_value=0.01, max_value=20.0, step=0.1, format="%.2f",
                                 value=float(ClusterParams.default("resolution")), key="cl_resolution",
                                 help=HELP["resolution"])
annotations = state.color_options(analysis)
label_key = top[2].selectbox("Compare with the labels", [NONE, *annotations], index=1 if annotations else 0,
                             key="cl_labels", help="ARI and NMI of the clusters against this annotation.")
clustering = clusters.Clustering.of(analysis, rep, resolution, ClusterParams.default("seed"))
try:
    labels = clustering.labels(analysis)
except InputError as error:
    show_error(error)
    st.stop()
clusters.remember(clustering)

sizes = labels.value_counts(sort=False).rename_axis("cluster").reset_index(name="n_cells")
sizes["cluster"] = sizes["cluster"].astype(str)
sizes["percent"] = (100 * sizes["n_cells"] / len(labels)).round(1)
scores = st.columns(3)
scores[0].metric("Clusters", f"{len(sizes):,}", help=HELP["n_clusters"])
if label_key != NONE:
    agreement = cluster_agreement(labels, analysis.adata.obs[label_key])
    scores[1].metric(f"ARI vs {label_key}", f"{agreement['ARI']:.3f}", help=HELP["ari"])
    scores[2].metric(f"NMI vs {label_key}", f"{agreement['NMI']:.3f}", help=HELP["nmi"])
    counts = pd.crosstab(labels.to_numpy(), analysis.adata.obs[label_key].to_numpy())  # clusters x known labels
    sizes[f"main {label_key}"] = sizes["cluster"].map(counts.idxmax(axis=1))
    sizes["main %"] = sizes["cluster"].map(100 * counts.max(axis=1) / counts.sum(axis=1)).round(1)

left, right = st.columns([3, 2])
with left:
    layout = state.layout_of(analysis, rep)
    view = state.default_view(analysis, layout)
    image, legend = clusters.grouping_image(analysis, layout, clustering.name, view)
    st.plotly_chart(layout_figure(image, view, legend=legend, title=f"{layout} · {clustering.name}"),
                    key="cl_umap", width="stretch", config={"displaylogo": False})
with right:
    st.dataframe(sizes, hide_index=True, width="stretch", column_config=column_help(sizes))
    if label_key != NONE:
        st.caption(f"main {plain(label_key)}: the most common {plain(label_key)} of the cluster's cells; main %: its "
                   "share.")
    st.download_button("Clusters (CSV)", lambda: csv_bytes(labels.rename("leiden").to_frame(), index=True),
                       file_name="clusters.csv", mime="text/csv", key="cl_csv")
st.caption(f"The Explore page offers these clusters as a colour, and for differential expression, under "
           f"**{clustering.name}**; `python -m sccore cluster IN.h5ad --use-rep {rep} --resolution {resolution:g} -o "
           "OUT.h5ad` writes them to a file.")

st.subheader("Marker genes")
options = clusters.groupings(analysis)
if st.session_state.get("mk_grouping") not in options:  # e.g. the clusters of another resolution
    st.session_state.pop("mk_grouping", None)
top = st.columns([2, 2, 2])
grouping = top[0].selectbox("Groups", options, index=options.index(clustering.name), key="mk_grouping",
                            help="Each group's cells are tested against all the other cells.")
method = top[1].radio("Test", METHODS, index=METHODS.index(MarkersParams.default("method")), horizontal=True,
                      key="mk_method", help="Wilcoxon rank-sum (as scanpy's default) or Welch's t-test, on "
                                            "log-normalised expression.")
n_top = top[2].slider("Top genes per group", 1, 10, 3, key="mk_top")
try:
    table = clusters.marker_genes(analysis, grouping, method)
except InputError as error:
    show_error(error)
    st.stop()

order = group_order(clusters.labels_of(analysis, grouping))
table = table.assign(group=pd.Categorical(table["group"], categories=order)).sort_values("group", kind="stable")
best = top_genes(table, n_top)
genes = tuple(dict.fromkeys(gene for group in order for gene in best[group]))  # each gene once, first group's place
(means, fractions), (values, cell_groups) = clusters.marker_views(
    analysis, grouping, genes, max(5, HEATMAP_CELLS // len(order)))
dots, heat, rows = st.tabs(["Dot plot", "Heat map", "Table"])
with dots:
    st.plotly_chart(dot_plot(means, fractions, title=f"Top {n_top} markers of each group of {grouping}"),
                    key="mk_dotplot", width="stretch")
    st.caption("Dot size: the share of the group's cells that express the gene; colour: the group's mean "
               "log-normalised expression, scaled per gene from its lowest group (0) to its highest (1).")
with heat:
    st.plotly_chart(marker_heatmap(values, cell_groups, list(genes), title=f"Cells of each group of {grouping}"),
                    key="mk_heatmap", width="stretch")
    st.caption(f"Up to {max(5, HEATMAP_CELLS // len(order))} cells drawn from each group; each gene's log-normalised "
               "expression scaled from its lowest cell (0) to its highest (1).")
with rows:
    shown = table[table.groupby("group", observed=True).cumcount() < n_top].reset_index(drop=True)
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config=column_help(shown, {"score": "%.2f", "logfoldchange": "%.2f", "pvalue": "%.2e",
                                                   "fdr": "%.2e", "pct_in": "%.2f", "pct_out": "%.2f"}))
st.download_button("All genes of every group (CSV)", lambda: csv_bytes(table[COLUMNS]),
                   file_name=safe_file_name(f"markers_{grouping}.csv"), mime="text/csv", key="mk_csv")
