"""Home: choose a dataset (demo, data folder or upload) and see its summary."""

import streamlit as st

from dashboard import state, tour
from dashboard.widgets import show_error
from sccore import InputError
from sccore.glossary import help_for
from sccore.io import categorical_columns

st.title("Single-cell embeddings explorer")
st.caption("Open a dataset of raw counts, then explore it on the **Data & QC** and **Explore** pages.")

files, atlases = state.available_files(), state.available_atlases()
choices = (["Demo: 700 PBMCs (built in)"] + (["A file from the data folder"] if files else [])
           + (["An atlas (large data)"] if atlases else []) + ["Upload a .h5ad file"])
choice = st.radio("Dataset", choices, horizontal=True, key="home_choice")
library_size_key = st.text_input(
    "Library-size column (optional)", key="home_library_size_key",
    help="An obs column with each cell's whole-transcriptome total counts, for files that hold only some genes.")


def open_chosen(locate, upload: bool = False) -> None:
    """Open the dataset at the path ``locate()`` returns and make it current; on bad input say why, keep the
    dataset that was open, and remove a refused ``upload`` from the server's disk."""
    source = None
    try:
        source = locate()
        state.load_dataset(source, library_size_key or None)
    except InputError as error:
        if upload and source is not None:
            state.discard_upload(source)
        show_error(error)
        st.info("The dataset that was open is still open (below): choose another file, or the demo.")
    else:
        state.choose_source(source, library_size_key)


if choice.startswith("Demo"):
    if st.button("Open the demo", type="primary"):
        state.choose_source(state.DEMO)
elif choice.startswith("A file"):
    label = st.selectbox("File", list(files))
    if st.button("Open file", type="primary"):
        open_chosen(lambda: files[label])
elif choice.startswith("An atlas"):
    label = st.selectbox("Atlas", list(atlases), help="Folders built by `python -m sccore atlas BIG.h5ad -o FOLDER` "
                                                      "in the data folder: millions of cells, counts kept on disk.")
    if st.button("Open atlas", type="primary"):
        open_chosen(lambda: atlases[label])
else:
    upload = st.file_uploader("An AnnData .h5ad file of raw counts", type=["h5ad"],
                              max_upload_size=state.settings().max_upload_mb)
    if upload is not None and st.button("Open upload", type="primary"):
        open_chosen(lambda: state.save_upload(upload.name, upload.getvalue()), upload=True)

tour.offer()
source, key = state.current_source()
try:
    adata = state.load_dataset(source, key)
except InputError as error:
    show_error(error)
    st.info("Open the demo or choose another file above.")
    st.stop()

info = adata.uns.get("dataset", {})
st.subheader(info.get("name", "Dataset"))
st.write(info.get("description", ""))
cells, genes, columns = st.columns(3)
built = adata.uns.get("atlas")
if built:
    st.info(f"An atlas: {adata.n_obs:,} cells after quality control, of {built['n_input_cells']:,} in the file. Its "
            "counts stay on disk, so explore it on the **Explore** page (colour by any annotation or gene); the other "
            "pages need a dataset in memory.")
cells.metric("Cells", f"{adata.n_obs:,}", help="Cells is the number of cells in the file, before quality control."
             if not built else "Cells kept by the atlas's quality control.")
genes.metric("Genes", f"{adata.n_vars:,}", help=help_for("n_genes"))
columns.metric("Cell annotations", len(adata.obs.columns),
               help=help_for("annotations"))
for note in adata.uns.get("input", {}).get("notes", []):
    st.info(note)
categorical = categorical_columns(adata)
if categorical:
    st.write("**Categorical annotations** (colour cells by these on the Explore page)")
    st.dataframe(
        [{"column": name, "values": adata.obs[name].nunique(),
          "examples": ", ".join(map(str, adata.obs[name].astype(str).value_counts().index[:4]))}
         for name in categorical],
        hide_index=True, width="stretch")
