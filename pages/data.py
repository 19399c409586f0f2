"""Data & QC: quality-control plots, adjustable filters, and what each step removed."""

import plotly.express as px
import streamlit as st

from dashboard import cached, state
from dashboard.explain import column_help
from sccore.glossary import HELP
from sccore.plots import qc_histograms
from sccore.pp import steps_table

st.title("Data & quality control")
analysis = state.open_or_stop()
params = analysis.params.preprocess
source, key = state.current_source()

st.caption(
    "Cells are kept when they have enough detected genes and few mitochondrial counts; genes when enough cells "
    "express them. Counts are then scaled to 10,000 per cell, log-transformed, and the most variable genes feed PCA."
)
qc = cached.raw_qc_table(source, key, params)
st.plotly_chart(qc_histograms(qc, params.min_genes, params.max_pct_mito), width="stretch")
whole = [name for name, column in (("library size", params.library_size_key), ("detected genes", params.n_genes_key),
                                   ("mitochondrial %", params.pct_mito_key)) if column]
if whole:
    st.info(f"This file holds a subset of genes, so {', '.join(whole)} come from whole-transcriptome obs columns "
            f"({', '.join(c for c in (params.library_size_key, params.n_genes_key, params.pct_mito_key) if c)}).")

with st.form("filters"):
    st.write("**Filters** (defaults: >= 200 genes per cell, <= 10 % mitochondrial, genes in >= 3 cells)")
    left, middle, right = st.columns(3)
    min_genes = left.number_input("Minimum detected genes per cell", 0, 20000, params.min_genes, step=50)
    max_pct_mito = middle.number_input("Maximum mitochondrial %", 0.0, 100.0, float(params.max_pct_mito), step=1.0)
    min_cells = right.number_input("Minimum cells per gene", 0, 1000, params.min_cells)
    left, middle, _ = st.columns(3)
    n_top_genes = left.number_input("Highly variable genes", 50, 20000, params.n_top_genes, step=100)
    n_comps = middle.number_input("Principal components", 2, 200, analysis.params.pca.n_comps)
    if st.form_submit_button("Apply and recompute", type="primary"):
        st.session_state["preprocess_overrides"] = {"min_genes": int(min_genes), "max_pct_mito": float(max_pct_mito),
                                                    "min_cells": int(min_cells), "n_top_genes": int(n_top_genes)}
        st.session_state["n_comps"] = int(n_comps)
        st.rerun()

st.subheader("What the filters removed")
steps = steps_table(analysis.adata)
st.dataframe(steps, hide_index=True, width="stretch", column_config=column_help(steps))
adata = analysis.adata
st.write(f"**{adata.n_obs:,} cells x {adata.n_vars:,} genes** remain; "
         f"{int(adata.var['highly_variable'].sum()):,} highly variable genes feed PCA.")
ratio = adata.uns["X_pca"]["variance_ratio"]
st.plotly_chart(px.line(x=list(range(1, len(ratio) + 1)), y=ratio, markers=True,
                        labels={"x": "principal component", "y": "fraction of variance"},
                        title="Variance explained per principal component"), width="stretch")
st.caption(HELP["variance_ratio"] + " Where the curve flattens, later components add mostly noise.")
