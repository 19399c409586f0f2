"""Report: the current analysis as one self-contained HTML file, to keep or send; it opens offline in any browser."""

import streamlit as st

from dashboard import cached, session, state
from dashboard.widgets import show_error
from sccore import InputError
from sccore.report import SECTIONS
from sccore.settings import safe_file_name

st.title("Report")
st.caption("One HTML file with the dataset and its quality control, every parameter, the layouts, the knockouts and "
           "screens you ran, the encoder beside its PCA and linear baselines, integration metrics, label transfers "
           "and the software versions. Its figures are inside it and it loads nothing from the network, so it opens "
           "offline in any browser. `python -m sccore report` writes the same file from the command line.")
analysis = state.open_or_stop()
adata = analysis.adata
source, library_size_key = state.current_source()

knockouts = session.session_knockouts(analysis.key)
screens = session.session_screens(analysis.key)
asked = session.metrics_request(analysis.key)  # the Metrics page's last request
try:
    metrics = None if asked is None else (
        cached.integration_metrics(analysis.key, asked.task_params(source), analysis),
        f"{asked.label_key} as labels, {asked.batch_key} as batches.")
    transfer = session.session_transfer(analysis)
except InputError as error:
    show_error(error)
    metrics = transfer = None

n_layouts = sum(key.startswith("X_umap") for key in adata.obsm)
contents = {
    "dataset": f"{adata.n_obs:,} cells × {adata.n_vars:,} genes, what each filter removed, QC histograms",
    "parameters": "quality control, PCA, neighbours, UMAP" + (" and the encoder's identity"
                                                            if "X_encoder" in adata.obsm else ""),
    "layouts": f"{n_layouts} UMAP(s), coloured by the annotation below",
    "knockouts": (f"{knockouts['gene'].nunique()} gene(s) knocked out on the Knockout page" if knockouts is not None
                  else None),
    "screens": f"{len(screens)} screen(s) from the Knockout page" if screens else None,
    "baselines": "neighbour agreement of each embedding, knockouts and screens side by side, with an honest note",
    "metrics": f"scIB metrics ({metrics[1]})" if metrics is not None else None,
    "transfer": f"{len(transfer)} label transfer(s) from the Search & transfer page" if transfer is not None else None,
    "versions": "Python, sccore and its libraries",
}
WHERE = {"knockouts": "run one on the Knockout page", "screens": "run one on the Knockout page",
         "metrics": "compute them on the Metrics page", "transfer": "run one on the Search & transfer page"}

st.subheader("What the report holds")
chosen = []
for key, about in contents.items():
    label = f"**{SECTIONS[key]}**: {about}" if about else f"**{SECTIONS[key]}**: none yet ({WHERE[key]})"
    if st.checkbox(label, value=about is not None, disabled=about is None, key=f"rp_{key}") and about:
        chosen.append(key)
annotations = state.color_options(analysis)
color_by = st.selectbox("Colour the layouts and score the embeddings by", annotations, key="rp_color_by",
                        disabled="layouts" not in chosen and "baselines" not in chosen) if annotations else None

if not chosen:
    st.info("Choose at least one section.")
    st.stop()
try:
    document = cached.report_html(
        analysis.key, tuple(chosen), color_by, knockouts if "knockouts" in chosen or "baselines" in chosen else None,
        tuple(screens) if "screens" in chosen or "baselines" in chosen else (),
        metrics[0] if metrics is not None else None, metrics[1] if metrics is not None else "",
        transfer, analysis, cached.raw_qc_table(source, library_size_key, analysis.params.preprocess),
        list(screens.values()) if "screens" in chosen or "baselines" in chosen else [])
except InputError as error:
    show_error(error)
    st.stop()
name = safe_file_name(str(adata.uns.get("dataset", {}).get("name", "dataset")).removesuffix(".h5ad")).strip("_")
st.download_button("Download the report (HTML)", document, file_name=f"sccore_report_{name}.html", mime="text/html",
                   type="primary", key="rp_download", icon=":material/download:")
st.caption(f"{len(document) / 1024:,.0f} KB, {len(chosen)} section(s). Open it in any browser; print it to PDF from "
           "there if you need one.")
