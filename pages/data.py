"""Data & QC: quality-control plots with both rules' cuts, what each rule would remove, and what the filters removed."""

from dataclasses import replace

import plotly.express as px
import streamlit as st

from dashboard import cached, state
from dashboard.explain import column_help
from sccore.glossary import HELP
from sccore.plots import qc_histograms
from sccore.pp import QC_RULES, compare_rules, is_gene_panel, qc_cuts, qc_warnings, steps_table

RULES = {"outliers": "Outliers (median absolute deviations; best practice)", "thresholds": "Fixed thresholds"}

st.title("Data & quality control")
analysis = state.open_or_stop(layouts=False)  # QC and PCA: no waiting for neighbours and UMAP
adata, params = analysis.adata, analysis.params.preprocess
source, key = state.current_source()
for warning in qc_warnings(adata):
    st.warning(warning)

st.caption(
    "Cells are kept when their counts, detected genes and mitochondrial share look like the file's other cells (the "
    "outlier rule) or pass fixed thresholds; genes when enough cells express them. Counts are then scaled to 10,000 "
    "per cell, log-transformed, and the most variable genes feed PCA."
)
qc = cached.raw_qc_table(source, key, params)
n_measured = state.load_dataset(source, key).n_vars
gene_panel = is_gene_panel(n_measured, params)

rule = st.radio("Quality-control rule", QC_RULES, index=QC_RULES.index(params.qc_rule), format_func=RULES.get,
                horizontal=True, key="qc_rule",
                help="Outliers: a cell more than the given number of median absolute deviations (MADs) from the "
                     "median of the file's cells in log counts or log detected genes, or above it in mitochondrial %, "
                     "is removed (sc-best-practices). Fixed thresholds: the same numbers for every file.")
left, middle, right = st.columns(3)
n_mads = left.number_input("MADs from the median (outliers)", 1.0, 50.0, float(params.n_mads), step=0.5,
                           key="n_mads")
min_genes = middle.number_input("Minimum detected genes (thresholds)", 0, 20000, params.min_genes, step=50,
                                key="min_genes")
max_pct_mito = right.number_input("Maximum mitochondrial % (thresholds)", 0.0, 100.0, float(params.max_pct_mito),
                                  step=1.0, key="max_pct_mito")
pending = replace(params, qc_rule=rule, n_mads=float(n_mads), min_genes=int(min_genes),
                  max_pct_mito=float(max_pct_mito))
cuts = {name: qc_cuts(qc, replace(pending, qc_rule=name), gene_panel) for name in QC_RULES}
legend = {f"outliers ({pending.n_mads:g} MADs)": cuts["outliers"], "thresholds": cuts["thresholds"]}
st.plotly_chart(qc_histograms(qc, legend), width="stretch")

st.write("**What each rule would remove** from the file's cells with these settings (a cell may fail several "
         "criteria; the total counts it once)")
comparison = compare_rules(qc, pending, gene_panel)
st.dataframe(comparison, hide_index=True, width="stretch",
             column_config={"share": st.column_config.NumberColumn("share", format="percent")})
for cut in cuts[rule].itertuples():
    if cut.skipped:
        st.caption(f"Not applied: {cut.criterion} ({cut.skipped}).")
if gene_panel:
    st.info(f"This file measures a panel or subset of {n_measured:,} genes and obs has no whole-transcriptome "
            "detected-genes column, so its cells are never judged by whole-transcriptome numbers such as '200 "
            "detected genes': the outlier rule compares them with each other.")
whole = [name for name, column in (("library size", params.library_size_key), ("detected genes", params.n_genes_key),
                                   ("mitochondrial %", params.pct_mito_key)) if column]
if whole:
    st.info(f"This file holds a subset of genes, so {', '.join(whole)} come from whole-transcriptome obs columns "
            f"({', '.join(c for c in (params.library_size_key, params.n_genes_key, params.pct_mito_key) if c)}).")

left, middle, right = st.columns(3)
min_cells = left.number_input("Minimum cells per gene", 0, 1000, params.min_cells, key="min_cells")
n_top_genes = middle.number_input("Highly variable genes", 50, 20000, params.n_top_genes, step=100, key="n_top_genes")
n_comps = right.number_input("Principal components", 2, 200, analysis.params.pca.n_comps, key="n_comps_input")
if st.button("Apply and recompute", type="primary", key="apply_qc"):
    st.session_state["preprocess_overrides"] = {"qc_rule": rule, "n_mads": float(n_mads), "min_genes": int(min_genes),
                                                "max_pct_mito": float(max_pct_mito), "min_cells": int(min_cells),
                                                "n_top_genes": int(n_top_genes)}
    st.session_state["n_comps"] = int(n_comps)
    st.rerun()

st.subheader("What the filters removed")
steps = steps_table(adata)
st.dataframe(steps, hide_index=True, width="stretch", column_config=column_help(steps))
st.write(f"**{adata.n_obs:,} cells x {adata.n_vars:,} genes** remain; "
         f"{int(adata.var['highly_variable'].sum()):,} highly variable genes feed PCA.")
ratio = adata.uns["X_pca"]["variance_ratio"]
st.plotly_chart(px.line(x=list(range(1, len(ratio) + 1)), y=ratio, markers=True,
                        labels={"x": "principal component", "y": "fraction of variance"},
                        title="Variance explained per principal component"), width="stretch")
st.caption(HELP["variance_ratio"] + " Where the curve flattens, later components add mostly noise.")
