"""Metrics: scIB integration metrics of the current dataset's embeddings, one row per embedding.

Every number comes from ``sccore.metrics.benchmark_embeddings`` (the scib-metrics definitions on FAISS
neighbours); this page picks the label and batch columns and the embeddings, and shows the table,
a bar chart and a CSV.
"""

import streamlit as st

from dashboard import cached, session, state
from dashboard.session import MetricsRequest
from dashboard.widgets import plain, show_error
from sccore import InputError
from sccore.annotations import batch_candidates, guess_batch_column, guess_column, looks_like
from sccore.export import csv_bytes
from sccore.glossary import help_for
from sccore.metrics import AGGREGATES, BATCH_METRICS, BIO_METRICS
from sccore.plots import metrics_figure
from sccore.report import metrics_note

st.title("Integration metrics")
st.caption("How well each embedding keeps cell types apart (bio conservation) while mixing batches (batch "
           "correction), with scIB's metrics as scib-metrics computes them, on FAISS neighbours. Every score lies "
           "in 0-1, higher is better; Total = 0.6 x bio conservation + 0.4 x batch correction.")
analysis = state.open_or_stop()
adata = analysis.adata
columns = state.color_options(analysis)
candidate_batches = batch_candidates(adata)
embeddings = state.metric_embeddings(analysis)
if not columns or len(candidate_batches) < 2 or not embeddings:
    st.info("Integration metrics need two categorical annotations (cell-type labels and batches) and an embedding "
            f"with more than two dimensions; this dataset has {len(candidate_batches)} annotation(s) and "
            f"{len(embeddings)} such embedding(s). Choose another dataset on the Home page.")
    st.stop()


def drop_stale(key: str, options: list[str], explain: bool = True) -> None:
    """Forget a remembered choice that this dataset does not offer (e.g. after switching datasets)."""
    stale = st.session_state.get(key)
    if stale is not None and stale not in options:
        if explain:
            st.warning(f"This dataset has no annotation '{plain(stale)}'; choose another column.")
        del st.session_state[key]


drop_stale("mt_label", columns)
left, right = st.columns(2)
label_key = left.selectbox("Cell-type labels (label key)", columns, key="mt_label",
                           index=columns.index(guess_column(columns, "label") or columns[0]))
batch_options = [column for column in candidate_batches if column != label_key]
drop_stale("mt_batch", batch_options, explain=st.session_state.get("mt_batch") != label_key)
n_values = {column: adata.obs[column].nunique() for column in batch_options}
integrated = st.session_state.get("batch_key", "")  # the batches Harmony integrates (state.pipeline_params)
batch_key = right.selectbox("Batches (batch key)", batch_options, key="mt_batch",
                            index=batch_options.index(integrated if integrated in batch_options
                                                      else guess_batch_column(adata.obs, batch_options)),
                            help="The column whose values should mix: batch, sample, donor, run…")
n_batches = n_values[batch_key]
harmony_on = right.toggle("Correct batches with Harmony", value=bool(integrated), key="mt_harmony",
                          disabled=n_batches < 2,
                          help="Integrates these batches in the PCA with Harmony (harmonypy): X_pca_harmony, scored "
                               "here beside X_pca, with its UMAP (X_umap_pca_harmony) among Explore's layouts and "
                               "its neighbours on Search & transfer and Knockout.")
wanted = batch_key if harmony_on and n_batches >= 2 else ""
if wanted != integrated:  # the analysis at the top of every page reads it: compute it again with (or without) Harmony
    st.session_state["batch_key"] = wanted
    if wanted:
        st.session_state["mt_embeddings"] = [*st.session_state.get("mt_embeddings", embeddings), "X_pca_harmony"]
    st.rerun()
remembered = st.session_state.get("mt_embeddings", embeddings)
st.session_state["mt_embeddings"] = list(dict.fromkeys(key for key in remembered if key in embeddings))
chosen = st.multiselect("Embeddings", embeddings, key="mt_embeddings",
                        help="obsm keys with more than two dimensions; pcr_comparison compares each with X_pca.")
if integrated:
    st.caption(f"Harmony integrates the {n_batches} batches of '{plain(integrated)}' in X_pca: X_pca_harmony.")

if n_batches < 2:
    st.warning(f"'{plain(batch_key)}' has a single value in every cell, so there are no batches to mix: batch "
               "correction can be neither scored nor applied with Harmony. Choose a column that names batches (sample, "
               "donor, sequencing run…).")
elif not looks_like(batch_key, "batch"):
    demo = state.current_source()[0] == state.DEMO
    st.info(f"'{plain(batch_key)}' does not look like a batch column. With it, the batch-correction scores measure how "
            f"well its {n_batches} values are mixed, which is integration only if they are technical batches"
            + (" (the demo data has none: its columns are cell types, clusters and cell-cycle phases)." if demo
               else "."))

run = st.button("Compute metrics", type="primary", key="mt_run", disabled=n_batches < 2 or not chosen)
request = MetricsRequest(analysis.key, label_key, batch_key, tuple(chosen))
if run:
    st.session_state[session.METRICS] = request
if st.session_state.get(session.METRICS) != request:
    st.caption("Choose the columns and embeddings, then press **Compute metrics** (about 35 seconds per embedding "
               "of 100,000 cells on 2 cores; results are kept for the same choices).")
    st.stop()

try:
    table = cached.integration_metrics(analysis.key, request.task_params(state.current_source()[0]), analysis)
except InputError as error:
    show_error(error)
    st.stop()

for note in table.attrs.get("notes", []):
    st.info(note)
ordered = table.sort_values("total", ascending=False)
config = {name: st.column_config.NumberColumn(name, help=help_for(name), format="%.3f")
          for name in BIO_METRICS + BATCH_METRICS}
config.update({name: st.column_config.ProgressColumn(name, help=help_for(name), format="%.3f", min_value=0.0,
                                                     max_value=1.0) for name in AGGREGATES})
st.subheader(f"{plain(label_key)} as labels, {plain(batch_key)} as batches "
             f"({table.attrs.get('n_cells', adata.n_obs):,} cells)")
st.dataframe(ordered, column_config=config, width="stretch", key="mt_table")
note = metrics_note(ordered)
if note:
    st.info(note)
groups = {"Bio conservation": BIO_METRICS, "Batch correction": BATCH_METRICS, "Aggregate": AGGREGATES}
st.plotly_chart(metrics_figure(ordered, groups), width="stretch", key="mt_chart", config={"displaylogo": False})
st.caption("Each bar is one score of one embedding, in 0-1 (higher is better); hover over a column name in the table "
           "above for what it measures. " + help_for("total"))
st.download_button("Metrics table (CSV)", lambda: csv_bytes(ordered.reset_index()),
                   file_name=f"integration_metrics_{label_key}_{batch_key}.csv", mime="text/csv", key="mt_csv")
