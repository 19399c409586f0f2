"""What the pages share: the settings, the dataset the user chose and its analysis, and the folders they may use.

Pages stay thin: widgets, and calls into ``sccore`` through the dashboard's small layer: this module (the
dataset and its analysis), :mod:`dashboard.cached` (cached computations), :mod:`dashboard.session` (what this
session computed, as typed records), :mod:`dashboard.widgets` (shared widgets) and :mod:`dashboard.background`
(jobs on Dask).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from sccore import InputError, jobs
from sccore.annotations import annotation_columns
from sccore.atlas import open_atlas
from sccore.cache import DiskCache, atomic_write
from sccore.io import load_demo, open_dataset
from sccore.pp import default_params
from sccore.render import View, category_colors, fit_view, safe_category_colors
from sccore.settings import Settings, load_settings, printable, resolve_inside, safe_file_name
from sccore.tasks.base import quality_control_fields
from sccore.workflow import (Analysis, PipelineParams, analyse, layout_key, prepare, warm_up_layouts,
                             warm_up_pictures)

from dashboard import presentation
from dashboard.access import current_user
from dashboard.widgets import progress_bar, show_error

DEMO = "demo"
DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo_model"


@st.cache_resource(show_spinner=False)
def warm_up_in_background(kind: str) -> threading.Thread:
    """Start a warm-up of this server process in a thread, once per ``kind``: ``pictures``
    (``sccore.workflow.warm_up_pictures``; when the first page is served, while the first user picks a dataset) or
    ``layouts`` (``sccore.workflow.warm_up_layouts``, tens of seconds of numba compilation; when the first dataset
    without cached results is prepared: never in the way of a reopened dataset's first picture)."""
    thread = threading.Thread(target={"pictures": warm_up_pictures, "layouts": warm_up_layouts}[kind],
                              name=f"sccore-warm-up-{kind}", daemon=True)
    thread.start()
    return thread


def settings() -> Settings:
    """The settings (``sccore.settings``): the settings file with ``SCCORE_*`` environment variables over it."""
    return load_settings()


def model_folders() -> list[Path]:
    """The folders models may be loaded from: the demo checkpoint, the shared model folder and the user's own."""
    current = settings()
    return [DEMO_MODEL, current.model_dir, current.user_model_dir(current_user())]


def available_models() -> dict[str, str]:
    """Model folders (with a ``config.json``): the demo checkpoint, then those in the model folder (and, with login
    on, the user's own models)."""
    models = {"Demo encoder (small, trained on the demo PBMCs)": str(DEMO_MODEL)} if DEMO_MODEL.is_dir() else {}
    for folder in dict.fromkeys(model_folders()[1:]):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if (path / "config.json").exists():
                    models.setdefault(printable(path.name), str(path))
    return models


def checked_model(folder: str) -> str:
    """``folder`` when it lies inside the model folders (:func:`model_folders`); else :class:`InputError`."""
    resolve_inside(folder, model_folders(), "Choose a model on the Encoder page; an administrator can add model "
                                            "folders to model_dir in the settings file.")
    return folder


def new_model_folder(name: str) -> Path:
    """Where a model trained in the app under ``name`` goes (the user's model folder); refuses names that are not
    plain folder names."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise InputError(f"'{printable(name)}' is not a model name: use letters, digits, '.', '_' and '-' (no '/' "
                         "or spaces), starting with a letter or digit.")
    return settings().user_model_dir(current_user()) / name


def confined_output(kind: str, params: dict) -> dict:
    """A job's parameters with its output where this user may write: a training's or fine-tuning's ``out`` names a
    model in the user's model folder (:func:`new_model_folder`); any other kind's output must be left empty (its
    result goes to the user's part of the cache), so no job can write into another user's or the server's folders."""
    field = jobs.JOB_KINDS[kind].params.output_field if kind in jobs.JOB_KINDS else "output"
    if not params.get(field):
        return params
    if kind in ("train", "finetune"):
        return {**params, field: str(new_model_folder(str(params[field])))}
    raise InputError(f"Leave {field} empty: a {kind} job's result goes to the cache, and this page (and, for an "
                     "atlas, the Home page) offers it when it is done.")


def encoder_model_for(source: str) -> str:
    """The model that embeds the current dataset: the user's choice, else the demo model for the demo."""
    chosen = st.session_state.get("encoder_model")
    if chosen is not None:
        return checked_model(chosen) if chosen else chosen
    return str(DEMO_MODEL) if source == DEMO and DEMO_MODEL.is_dir() else ""


def available_files() -> dict[str, str]:
    """``.h5ad`` files in the configured data folders: label -> path."""
    current_user()
    files = {}
    for folder in settings().data_dirs:
        if folder.is_dir():
            for path in sorted(folder.glob("*.h5ad")):
                files[printable(f"{folder.name}/{path.name}")] = str(path)
    return files


def available_atlases() -> dict[str, str]:
    """Atlases the user may open: folders built by ``python -m sccore atlas`` in the configured data folders, and
    the user's own finished ``atlas`` jobs; label -> path."""
    user = current_user()
    atlases = {}
    for folder in settings().data_dirs:
        if folder.is_dir():
            for manifest in sorted(folder.glob("*/manifest.json")):
                if (manifest.parent / "atlas.h5ad").is_file():
                    atlases[printable(f"{folder.name}/{manifest.parent.name}")] = str(manifest.parent)
    for record in jobs.list_jobs(job_store(), user):
        if record.kind == "atlas" and record.status == "finished" and Path(record.result, "atlas.h5ad").is_file():
            atlases.setdefault(printable(f"job {record.id}: {Path(record.params['input']).name}"), record.result)
    return atlases


def is_atlas(source: str) -> bool:
    """Whether ``source`` is an atlas folder rather than the demo or an ``.h5ad`` file."""
    return source != DEMO and Path(source).is_dir()


def save_upload(name: str, content: bytes) -> str:
    """Store an upload in the user's upload folder, under a name made from its content (atomically); return its
    path. Refuses files over the upload limit."""
    current = settings()
    current.check_upload_size(printable(name), len(content))
    digest = hashlib.blake2b(content, digest_size=12).hexdigest()
    path = current.user_upload_dir(current_user()) / f"{digest}-{safe_file_name(name)}"
    if not path.exists():
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(content), suffix=".h5ad", private=True)
    return str(path)


def discard_upload(path: str) -> None:
    """Remove a refused upload (a file in the user's upload folder) from the disk."""
    folder = settings().user_upload_dir(current_user()).resolve()
    if Path(path).resolve().parent == folder:
        Path(path).unlink(missing_ok=True)


def checked_source(source: str) -> str:
    """``source`` when it is the demo, a file inside the data folders or the user's upload folder, or one of
    :func:`available_atlases` (the user's own atlas jobs' folders included); else :class:`InputError` (``..``,
    absolute paths and symlinks that lead elsewhere are refused, and so are file names that are not valid UTF-8,
    which Streamlit's caches cannot hash)."""
    if source != DEMO and not (is_atlas(source) and source in available_atlases().values()):
        if printable(source) != source:
            raise InputError(f"The file name '{printable(Path(source).name)}' is not valid UTF-8 text. Rename the file "
                             "(letters, digits, '-' and '_' are safe) and open it again.")
        current = settings()
        resolve_inside(source, [*current.data_dirs, current.user_upload_dir(current_user())],
                       "Choose a file from the data folder or upload it; an administrator can add folders to "
                       "data_dirs in the settings file.")
    return source


def current_source() -> tuple[str, str | None]:
    """The chosen dataset (``"demo"`` or a path) and its library-size key; the demo until one is chosen."""
    current_user()
    return st.session_state.get("source", DEMO), st.session_state.get("library_size_key")


def choose_source(source: str, library_size_key: str | None = None) -> None:
    """Make ``source`` the dataset every page shows, with default parameters."""
    st.session_state["source"] = source
    st.session_state["library_size_key"] = library_size_key or None
    st.session_state.pop("preprocess_overrides", None)
    st.session_state.pop("n_comps", None)
    st.session_state.pop("encoder_model", None)
    st.session_state.pop("batch_key", None)


def load_dataset(source: str, library_size_key: str | None) -> "object":
    """The standardised AnnData (raw counts in ``X``) for a source the user may open (:func:`checked_source`)."""
    return _open_source(checked_source(source), library_size_key)


@st.cache_resource(show_spinner="Opening the dataset…", max_entries=8)
def _open_source(source: str, library_size_key: str | None) -> "object":
    if source == DEMO:
        return load_demo()
    if is_atlas(source):
        return _open_atlas(source).adata  # annotations and layouts; the counts stay on disk
    return open_dataset(source, library_size_key=library_size_key)


@st.cache_resource(show_spinner="Opening the atlas…", max_entries=2)
def _open_atlas(source: str):
    return open_atlas(source)


def pipeline_params(adata, source: str) -> PipelineParams:
    """Pipeline parameters: the dataset's defaults with the user's changes (Data, Encoder and Metrics pages: the
    Metrics page's Harmony toggle sets ``batch_key``)."""
    params = PipelineParams(preprocess=default_params(adata, **st.session_state.get("preprocess_overrides", {})),
                            encoder_model=encoder_model_for(source),
                            encoder_device=st.session_state.get("device", "auto"),
                            batch_key=st.session_state.get("batch_key", ""))
    return replace(params, pca=replace(params.pca, n_comps=st.session_state.get("n_comps", params.pca.n_comps)))


def _disk_cache(source: str) -> DiskCache:
    current = settings()
    return DiskCache(current.results_dir(None if source == DEMO else source), max_bytes=current.cache_max_bytes)


@st.cache_resource(show_spinner=False, max_entries=8)
def _prepared(source: str, library_size_key: str | None, params: PipelineParams) -> Analysis:
    adata = _open_source(source, library_size_key)
    cache = _disk_cache(source)
    with progress_bar("Quality control and PCA…") as progress:
        prepared = prepare(adata, params, cache, progress=progress)
    if cache.computed:  # new data or filters: its layouts are not cached either
        warm_up_in_background("layouts")
    return prepared


@st.cache_resource(show_spinner=False, max_entries=8)
def _analysis(source: str, library_size_key: str | None, params: PipelineParams) -> Analysis:
    adata = _open_source(source, library_size_key)
    prepared = _prepared(source, library_size_key, PipelineParams(preprocess=params.preprocess, pca=params.pca))
    with progress_bar("Preparing the dataset…") as progress:
        return analyse(adata, params, _disk_cache(source), progress=progress, prepared=prepared)


def current_analysis(layouts: bool = True) -> Analysis:
    """The processed current dataset with PCA, neighbours and UMAP (computed once, then cached); an atlas as it
    was built. ``layouts=False``: quality control and PCA only (``sccore.workflow.prepare``; all the Data & QC page
    needs), without waiting for neighbours and UMAP."""
    source, key = current_source()
    adata = load_dataset(source, key)
    if is_atlas(source):
        return _open_atlas(source).analysis()
    params = pipeline_params(adata, source)
    if not layouts:
        return _prepared(source, key, PipelineParams(preprocess=params.preprocess, pca=params.pca))
    return _analysis(source, key, params)


def open_or_stop(atlas_ok: bool = False, layouts: bool = True) -> Analysis:
    """The current analysis (:func:`current_analysis`, without neighbours and UMAP when not ``layouts``), or an error
    box and a stopped page when the input is bad; a page that needs the counts in memory (``atlas_ok=False``) stops
    with a note when the dataset is an atlas."""
    source = current_source()[0]
    if is_atlas(source) and not atlas_ok:
        st.info(f"**{printable(Path(source).name)}** is an atlas: its counts stay on disk, so this page, which needs "
                "them in memory, is not available for it. Explore it on the **Explore** page, or open the file (or a "
                "subset of its cells) on the Home page to use this one.")
        st.stop()
    try:
        return current_analysis(layouts)
    except InputError as error:
        show_error(error)
        if st.session_state.get("preprocess_overrides") or st.session_state.get("n_comps"):
            if st.button("Reset the filters to their defaults"):
                st.session_state.pop("preprocess_overrides", None)
                st.session_state.pop("n_comps", None)
                st.rerun()
        if st.session_state.get("encoder_model"):
            if st.button("Continue without the encoder (PCA only)"):
                st.session_state["encoder_model"] = ""
                st.rerun()
        if st.session_state.get("batch_key"):
            if st.button("Continue without batch correction"):
                st.session_state["batch_key"] = ""
                st.rerun()
        st.info("Or choose another dataset on the Home page; the demo always works.")
        st.stop()


def perturbation_fields(analysis: Analysis, model_folder: str, method: str) -> dict:
    """The fields that the perturbation tasks' parameters (``sccore.tasks.perturbation.PerturbationParams``) take from
    the current dataset for ``method``: its file, the model (the encoder ``model_folder``, or the baseline's name),
    and the analysis's device, filters and PCA."""
    pipeline, preprocess = analysis.params, analysis.params.preprocess
    return {"input": current_source()[0], "model": model_folder if method == "encoder" else method,
            "device": pipeline.encoder_device, "n_comps": pipeline.pca.n_comps, **quality_control_fields(preprocess)}


def color_options(analysis: Analysis) -> list[str]:
    """Categorical ``obs`` columns worth colouring by, most useful first (``sccore.annotations``)."""
    return annotation_columns(analysis.adata)


def category_palette(values: pd.Series) -> list[str]:
    """One colour per category of ``values``: colour-blind safe in presentation mode (the largest categories in
    Okabe-Ito, the rest grey), else ``sccore.render.category_colors``."""
    values = values.astype("category")
    if presentation.is_on():
        codes = values.cat.codes.to_numpy()
        return safe_category_colors(np.bincount(codes[codes >= 0], minlength=len(values.cat.categories)))
    return category_colors(len(values.cat.categories))


def layout_of(analysis: Analysis, rep: str) -> str:
    """The UMAP of the embedding ``obsm[rep]`` when there is one, else the analysis's first layout."""
    layouts = analysis.layouts()
    return layout_key(rep) if layout_key(rep) in layouts else next(iter(layouts))


def default_view(analysis: Analysis, layout: str, width: int = 800, height: int = 600) -> View:
    """A view of the whole layout."""
    return fit_view(analysis.layouts()[layout], width, height)


EMBEDDING_NAMES = {"X_pca": "PCA", "X_pca_harmony": "PCA + Harmony", "X_encoder": "Encoder"}


def embedding_choices(analysis: Analysis, new_cells: bool = False) -> dict[str, str]:
    """The embeddings the pages offer (obsm key -> name; Search & transfer, Knockout's layouts) that the analysis
    holds: PCA, Harmony's integration of it (with a batch key, set on the Metrics page) and
    the encoder's. ``new_cells``: only those that other cells can be mapped into (PCA's loadings and the encoder;
    Harmony corrects only the cells it was fitted on)."""
    return {key: name for key, name in EMBEDDING_NAMES.items()
            if key in analysis.adata.obsm and not (new_cells and key == "X_pca_harmony")}


def metric_embeddings(analysis: Analysis) -> list[str]:
    """The ``obsm`` embeddings worth scoring: numeric, with more than two dimensions (not 2-D layouts)."""
    layouts = analysis.layouts()
    keys = []
    for key in analysis.adata.obsm:
        value = np.asarray(analysis.adata.obsm[key])
        if key not in layouts and value.ndim == 2 and value.shape[1] > 2 and np.issubdtype(value.dtype, np.number):
            keys.append(key)
    return keys



def job_store() -> jobs.JobStore:
    """The job records (``sccore.jobs.JobStore`` in the cache folder)."""
    return jobs.JobStore(settings().cache_dir)
