"""What the pages share: settings, the chosen dataset, and cached heavy objects.

Pages stay thin: widgets here and there, and every computation is a call into ``sccore``.
Heavy objects (AnnData, analyses with FAISS indices) live in ``st.cache_resource``; images and
tables in ``st.cache_data``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from sccore import InputError
from sccore.cache import DiskCache, atomic_write
from sccore.io import categorical_columns, load_demo, open_dataset
from sccore.pp import PreprocessParams, default_params, qc_metrics
from sccore.render import View, category_colors, fit_view, legend_table, render_categories, render_values
from sccore.export import embedding_table, h5ad_bytes
from sccore.workflow import Analysis, PipelineParams, analyse

DEMO = "demo"
DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo_model"


@dataclass(frozen=True)
class Settings:
    """Folders the app reads and writes; set through environment variables."""

    data_dirs: tuple[Path, ...]
    cache_dir: Path
    upload_dir: Path
    model_dir: Path


def settings() -> Settings:
    """Folders from ``SCCORE_DATA_DIRS`` (``:``-separated), ``SCCORE_CACHE_DIR``, ``SCCORE_UPLOAD_DIR`` and
    ``SCCORE_MODEL_DIR`` (models trained here and checkpoints a lab already has)."""
    home_cache = Path.home() / ".cache" / "sccore"
    data_dirs = os.environ.get("SCCORE_DATA_DIRS", "data")
    return Settings(
        data_dirs=tuple(Path(part).expanduser() for part in data_dirs.split(os.pathsep) if part),
        cache_dir=Path(os.environ.get("SCCORE_CACHE_DIR", home_cache / "results")).expanduser(),
        upload_dir=Path(os.environ.get("SCCORE_UPLOAD_DIR", home_cache / "uploads")).expanduser(),
        model_dir=Path(os.environ.get("SCCORE_MODEL_DIR", "models")).expanduser(),
    )


def available_models() -> dict[str, str]:
    """Model folders (with a ``config.json``): the demo checkpoint, then those in the model folder."""
    models = {"Demo encoder (small, trained on the demo PBMCs)": str(DEMO_MODEL)} if DEMO_MODEL.is_dir() else {}
    folder = settings().model_dir
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if (path / "config.json").exists():
                models[path.name] = str(path)
    return models


def encoder_model_for(source: str) -> str:
    """The model that embeds the current dataset: the user's choice, else the demo model for the demo."""
    chosen = st.session_state.get("encoder_model")
    if chosen is not None:
        return chosen
    return str(DEMO_MODEL) if source == DEMO and DEMO_MODEL.is_dir() else ""


def available_files() -> dict[str, str]:
    """``.h5ad`` files in the configured data folders: label -> path."""
    files = {}
    for folder in settings().data_dirs:
        if folder.is_dir():
            for path in sorted(folder.glob("*.h5ad")):
                files[f"{folder.name}/{path.name}"] = str(path)
    return files


def save_upload(name: str, content: bytes) -> str:
    """Store an uploaded file under a name made from its content (atomically); return its path."""
    digest = hashlib.blake2b(content, digest_size=12).hexdigest()
    path = settings().upload_dir / f"{digest}-{Path(name).name}"
    if not path.exists():
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(content), suffix=".h5ad")
    return str(path)


def current_source() -> tuple[str, str | None]:
    """The chosen dataset (``"demo"`` or a path) and its library-size key; the demo until one is chosen."""
    return st.session_state.get("source", DEMO), st.session_state.get("library_size_key")


def choose_source(source: str, library_size_key: str | None = None) -> None:
    """Make ``source`` the dataset every page shows, with default parameters."""
    st.session_state["source"] = source
    st.session_state["library_size_key"] = library_size_key or None
    st.session_state.pop("preprocess_overrides", None)
    st.session_state.pop("n_comps", None)
    st.session_state.pop("encoder_model", None)


@st.cache_resource(show_spinner="Opening the dataset…", max_entries=8)
def load_dataset(source: str, library_size_key: str | None) -> "object":
    """The standardised AnnData (raw counts in ``X``) for a source."""
    if source == DEMO:
        return load_demo()
    return open_dataset(source, library_size_key=library_size_key)


def pipeline_params(adata, source: str) -> PipelineParams:
    """Pipeline parameters: the dataset's defaults with the user's changes (Data and Encoder pages)."""
    params = PipelineParams(preprocess=default_params(adata, **st.session_state.get("preprocess_overrides", {})),
                            encoder_model=encoder_model_for(source),
                            encoder_device=st.session_state.get("device", "auto"))
    return replace(params, pca=replace(params.pca, n_comps=st.session_state.get("n_comps", params.pca.n_comps)))


@st.cache_resource(show_spinner=False, max_entries=8)
def _analysis(source: str, library_size_key: str | None, params: PipelineParams) -> Analysis:
    adata = load_dataset(source, library_size_key)
    bar = st.progress(0.0, text="Preparing the dataset…")
    try:
        result = analyse(adata, params, DiskCache(settings().cache_dir),
                         progress=lambda fraction, message: bar.progress(min(max(fraction, 0.0), 1.0), text=message))
    finally:
        bar.empty()
    return result


def current_analysis() -> Analysis:
    """The processed current dataset with PCA, neighbours and UMAP (computed once, then cached)."""
    source, key = current_source()
    adata = load_dataset(source, key)
    return _analysis(source, key, pipeline_params(adata, source))


def open_or_stop() -> Analysis:
    """The current analysis, or an error box and a stopped page when the input is bad."""
    try:
        return current_analysis()
    except InputError as error:
        st.error(str(error))
        if st.session_state.get("preprocess_overrides") or st.session_state.get("n_comps"):
            if st.button("Reset the filters to their defaults"):
                st.session_state.pop("preprocess_overrides", None)
                st.session_state.pop("n_comps", None)
                st.rerun()
        if st.session_state.get("encoder_model"):
            if st.button("Continue without the encoder (PCA only)"):
                st.session_state["encoder_model"] = ""
                st.rerun()
        st.info("Or choose another dataset on the Home page; the demo always works.")
        st.stop()


@st.cache_data(show_spinner=False, max_entries=16)
def raw_qc_table(source: str, library_size_key: str | None, params: PreprocessParams) -> pd.DataFrame:
    """QC metrics of every cell before filtering, for the Data page's plots."""
    return qc_metrics(load_dataset(source, library_size_key), params)


def color_options(analysis: Analysis) -> list[str]:
    """Categorical ``obs`` columns worth colouring by, most useful first."""
    columns = categorical_columns(analysis.adata)
    preferred = ["cell_type", "batch", "condition", "donor_id", "perturbation"]
    return sorted(columns, key=lambda name: (preferred.index(name) if name in preferred else len(preferred), name))


@st.cache_data(show_spinner=False, max_entries=64)
def category_image(analysis_key: str, layout: str, column: str, view: View, _analysis: Analysis):
    """RGBA image of a layout coloured by an ``obs`` column, and its legend table."""
    coords = _analysis.layouts()[layout]
    values = _analysis.adata.obs[column].astype("category")
    codes = values.cat.codes.to_numpy()
    colors = category_colors(len(values.cat.categories))
    image = render_categories(coords, codes, colors, view)
    return image, legend_table(codes, list(values.cat.categories), colors)


@st.cache_data(show_spinner=False, max_entries=64)
def gene_image(analysis_key: str, layout: str, gene: str, view: View, _analysis: Analysis):
    """RGBA image of a layout coloured by a gene's log-normalised expression, and the colour scale's range."""
    return render_values(_analysis.layouts()[layout], _analysis.expression(gene), view)


def default_view(analysis: Analysis, layout: str, width: int = 800, height: int = 600) -> View:
    """A view of the whole layout."""
    return fit_view(analysis.layouts()[layout], width, height)


@st.cache_data(show_spinner="Preparing the table…", max_entries=8)
def embedding_csv(analysis_key: str, _analysis: Analysis) -> bytes:
    """Cell annotations, every 2-D layout and the principal components, as CSV."""
    return embedding_table(_analysis.adata, _analysis.layouts()).to_csv().encode()


@st.cache_data(show_spinner="Preparing the file…", max_entries=4)
def processed_h5ad(analysis_key: str, _analysis: Analysis) -> bytes:
    """The processed AnnData (counts, log-normalised values, embeddings, QC report) as ``.h5ad`` bytes."""
    return h5ad_bytes(_analysis.adata)


# --- Knockout page: the loaded encoder, knockouts, UMAP placements and finished screens ---------------------------


@st.cache_resource(show_spinner="Loading the encoder…", max_entries=2)
def _loaded_model(folder: str, device: str, stamp: int):
    from sccore.device import resolve_device
    from sccore.models.store import load_model

    return load_model(folder, resolve_device(device))


def loaded_model(folder: str, device: str = "auto"):
    """The model in ``folder`` loaded once on ``device`` (``auto`` picks CUDA, MPS or the CPU); reloaded when a
    file in the folder changes (a model retrained under the same name)."""
    files = [path for path in Path(folder).iterdir() if path.is_file()] if Path(folder).is_dir() else []
    return _loaded_model(folder, device, max((path.stat().st_mtime_ns for path in files), default=0))


@st.cache_data(show_spinner=False, max_entries=48)
def knockout_result(analysis_key: str, model_folder: str, genes: tuple[str, ...], cells: np.ndarray, method: str,
                    mode: str, _analysis: Analysis):
    """``sccore.perturb.knockout`` of ``genes`` in ``cells`` by ``method`` (the encoder is ``model_folder``)."""
    from sccore.perturb import knockout

    model = loaded_model(model_folder, _analysis.params.encoder_device) if method == "encoder" else None
    return knockout(_analysis.adata, list(genes), cells, method, model=model, mode=mode,
                    library_size_key=_analysis.params.preprocess.library_size_key)


@st.cache_resource(show_spinner=False, max_entries=8)
def umap_train_index(analysis_key: str, rep: str, _analysis: Analysis):
    """A FAISS index over the embedding of the cells ``rep``'s UMAP was fitted on, for ``sccore.umap.transform``."""
    from sccore.neighbors import build_index

    model = _analysis.umap_models[rep]
    if len(model.train_cells) == _analysis.adata.n_obs and rep in _analysis.indexes:
        return _analysis.indexes[rep]
    return build_index(np.asarray(_analysis.adata.obsm[rep])[model.train_cells])


@st.cache_data(show_spinner=False, max_entries=64)
def placed_in_umap(analysis_key: str, rep: str, embedding: np.ndarray, _analysis: Analysis,
                   optimize: bool = True) -> np.ndarray:
    """UMAP positions of new (e.g. perturbed) embeddings in the layout of ``rep``, by ``sccore.umap.transform``."""
    from sccore.umap import transform

    return transform(_analysis.umap_models[rep], embedding, umap_train_index(analysis_key, rep, _analysis),
                     optimize=optimize)


@st.cache_resource(show_spinner=False)
def _finished_results() -> tuple:
    import threading

    return threading.Lock(), {}


def remember_result(key: tuple, value, max_entries: int = 32) -> None:
    """Keep a finished computation (e.g. a screen) for every session, the ``max_entries`` most recent."""
    lock, store = _finished_results()
    with lock:
        store.pop(key, None)
        store[key] = value
        while len(store) > max_entries:
            store.pop(next(iter(store)))


def recall_result(key: tuple):
    """A computation kept by :func:`remember_result`, or None."""
    lock, store = _finished_results()
    with lock:
        return store.get(key)
