"""What the pages share: settings, the chosen dataset, and cached heavy objects.

Pages stay thin: widgets here and there, and every computation is a call into ``sccore``.
Heavy objects (AnnData, analyses with FAISS indices) live in ``st.cache_resource``; images and
tables in ``st.cache_data``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from sccore import InputError, jobs
from sccore.atlas import open_atlas
from sccore.cache import DiskCache, atomic_write
from sccore.io import categorical_columns, load_demo, open_dataset
from sccore.pp import PreprocessParams, default_params, qc_metrics
from sccore.render import (View, category_colors, fit_view, legend_table, render_categories, render_values,
                           safe_category_colors)
from sccore.export import embedding_table, h5ad_bytes
from sccore.settings import Settings, load_settings, printable, resolve_inside, safe_file_name
from sccore.workflow import Analysis, PipelineParams, analyse

from dashboard import presentation
from dashboard.access import current_user

DEMO = "demo"
DEMO_MODEL = Path(__file__).resolve().parents[1] / "assets" / "demo_model"


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
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(content), suffix=".h5ad")
    return str(path)


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
    """Pipeline parameters: the dataset's defaults with the user's changes (Data and Encoder pages)."""
    params = PipelineParams(preprocess=default_params(adata, **st.session_state.get("preprocess_overrides", {})),
                            encoder_model=encoder_model_for(source),
                            encoder_device=st.session_state.get("device", "auto"))
    return replace(params, pca=replace(params.pca, n_comps=st.session_state.get("n_comps", params.pca.n_comps)))


@st.cache_resource(show_spinner=False, max_entries=8)
def _analysis(source: str, library_size_key: str | None, params: PipelineParams) -> Analysis:
    adata = _open_source(source, library_size_key)
    bar = st.progress(0.0, text="Preparing the dataset…")
    try:
        result = analyse(adata, params, DiskCache(settings().results_dir(None if source == DEMO else source)),
                         progress=lambda fraction, message: bar.progress(min(max(fraction, 0.0), 1.0), text=message))
    finally:
        bar.empty()
    return result


def current_analysis() -> Analysis:
    """The processed current dataset with PCA, neighbours and UMAP (computed once, then cached); an atlas as it
    was built."""
    source, key = current_source()
    adata = load_dataset(source, key)
    if is_atlas(source):
        return _open_atlas(source).analysis()
    return _analysis(source, key, pipeline_params(adata, source))


def open_or_stop(atlas_ok: bool = False) -> Analysis:
    """The current analysis, or an error box and a stopped page when the input is bad; a page that needs the
    counts in memory (``atlas_ok=False``) stops with a note when the dataset is an atlas."""
    source = current_source()[0]
    if is_atlas(source) and not atlas_ok:
        st.info(f"**{printable(Path(source).name)}** is an atlas: its counts stay on disk, so this page, which needs "
                "them in memory, is not available for it. Explore it on the **Explore** page, or open the file (or a "
                "subset of its cells) on the Home page to use this one.")
        st.stop()
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


def category_palette(values: pd.Series) -> list[str]:
    """One colour per category of ``values``: colour-blind safe in presentation mode (the largest categories in
    Okabe-Ito, the rest grey), else ``sccore.render.category_colors``."""
    values = values.astype("category")
    if presentation.is_on():
        codes = values.cat.codes.to_numpy()
        return safe_category_colors(np.bincount(codes[codes >= 0], minlength=len(values.cat.categories)))
    return category_colors(len(values.cat.categories))


def category_image(analysis_key: str, layout: str, column: str, view: View, analysis: Analysis):
    """RGBA image of a layout coloured by an ``obs`` column (:func:`category_palette`), and its legend table."""
    colors = tuple(category_palette(analysis.adata.obs[column]))
    return _category_image(analysis_key, layout, column, view, colors, analysis)


@st.cache_data(show_spinner=False, max_entries=64)
def _category_image(analysis_key: str, layout: str, column: str, view: View, colors: tuple[str, ...],
                    _analysis: Analysis):
    coords = _analysis.layouts()[layout]
    values = _analysis.adata.obs[column].astype("category")
    codes = values.cat.codes.to_numpy()
    image = render_categories(coords, codes, list(colors), view)
    return image, legend_table(codes, list(values.cat.categories), list(colors))


@st.cache_data(show_spinner="Comparing the embeddings…", max_entries=16)
def neighbour_agreement_scores(analysis_key: str, column: str, _analysis: Analysis) -> dict[str, float]:
    """Each embedding's neighbour agreement with ``obs[column]`` (``sccore.report.embedding_agreement``, on the
    analysis's own neighbours): obsm key -> share of neighbours with the cell's own label."""
    from sccore.report import embedding_agreement

    table = embedding_agreement(_analysis.adata, column, _analysis.neighbors)
    return dict(zip(table["embedding"], table["knn_agreement"].astype(float)))


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
    file in the folder changes (a model retrained under the same name). Only folders inside the model folders load."""
    checked_model(folder)
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


# --- Search & transfer page: search indexes, neighbour tables, label transfer and mapped datasets -----------------


@st.cache_resource(show_spinner=False, max_entries=8)
def similarity_index(analysis_key: str, rep: str, metric: str, _analysis: Analysis):
    """The FAISS index cell search uses: the analysis's own for Euclidean, one over unit rows for cosine."""
    from sccore.transfer import search_index

    if metric == "euclidean" and rep in _analysis.indexes:
        return _analysis.indexes[rep]
    return search_index(np.asarray(_analysis.adata.obsm[rep]), metric, _analysis.params.index)


@st.cache_data(show_spinner=False, max_entries=64)
def similar_cells_table(analysis_key: str, rep: str, query_cells: tuple, k: int, metric: str, exclude_query: bool,
                        _analysis: Analysis) -> pd.DataFrame:
    """``sccore.transfer.similar_cells`` of ``query_cells`` in ``obsm[rep]``."""
    from sccore.transfer import similar_cells

    return similar_cells(np.asarray(_analysis.adata.obsm[rep]), np.array(query_cells, dtype=np.int64), k, metric,
                         similarity_index(analysis_key, rep, metric, _analysis), exclude_query)


@st.cache_data(show_spinner=False, max_entries=64)
def plain_image(analysis_key: str, layout: str, view: View, _analysis: Analysis) -> np.ndarray:
    """RGBA image of a layout with every cell grey (for datasets without annotations)."""
    coords = _analysis.layouts()[layout]
    return render_categories(coords, np.zeros(len(coords), dtype=np.int32), ["#9A9A9A"], view)


@st.cache_data(show_spinner="Transferring labels…", max_entries=16)
def transfer_within(analysis_key: str, rep: str, label_key: str, reference_cells: np.ndarray, query_cells: np.ndarray,
                    k: int, _analysis: Analysis):
    """``sccore.transfer.knn_transfer`` of ``obs[label_key]`` from ``reference_cells`` to ``query_cells`` of the
    current dataset, in ``obsm[rep]`` (no threshold applied)."""
    from sccore.transfer import TransferResult, knn_transfer, reference_labels

    labels, has_label, warnings = reference_labels(_analysis.adata.obs.iloc[reference_cells], label_key)
    embedding = np.asarray(_analysis.adata.obsm[rep])
    result = knn_transfer(embedding[reference_cells[has_label]], labels[has_label], embedding[query_cells], k,
                          params=_analysis.params.index)
    return TransferResult(result.labels, result.confidence, result.neighbors, warnings + result.warnings)


@st.cache_resource(show_spinner="Embedding the reference dataset…", max_entries=4)
def reference_dataset(source: str, rep: str, model_folder: str, device: str):
    """Another dataset (``source``) ready to be a reference: processed with its default parameters and PCA
    (``rep == 'X_pca'``), or its raw counts embedded with the current encoder (``model_folder``)."""
    from sccore.embed import pca
    from sccore.encode import encoder
    from sccore.pp import preprocess

    adata = load_dataset(source, None)
    if rep == "X_pca":
        processed = preprocess(adata, default_params(adata))
        pca(processed)
        return processed
    reference = adata.copy()
    encoder(reference, loaded_model(model_folder, device), key_added=rep, device=device)
    return reference


@st.cache_data(show_spinner="Mapping and transferring labels…", max_entries=8)
def mapped_transfer(analysis_key: str, rep: str, source: str, this_is_reference: bool, gene_id_key: str | None,
                    label_key: str, k: int, _analysis: Analysis) -> dict:
    """Label transfer between the current dataset and another (``source``), in ``obsm[rep]``: from the current one
    to the other (``this_is_reference``) or back. The query is mapped into the reference's space (its PCA loadings or
    the same encoder). Returns the query's ``obs``, embedding, mapping report and transfer result (no threshold)."""
    import anndata as ad

    from sccore.io import counts_matrix
    from sccore.transfer import label_order, map_query, transfer

    params = _analysis.params
    model = loaded_model(params.encoder_model, params.encoder_device) if rep == "X_encoder" else None
    if this_is_reference:
        reference, query = _analysis.adata, load_dataset(source, None).copy()
        library_size_key = None
    else:
        reference = reference_dataset(source, rep, params.encoder_model, params.encoder_device)
        current = _analysis.adata
        query = ad.AnnData(counts_matrix(current), obs=current.obs.copy(), var=pd.DataFrame(index=current.var_names))
        library_size_key = params.preprocess.library_size_key
    report = map_query(reference, query, rep, model=model, gene_id_key=gene_id_key or None,
                       library_size_key=library_size_key)
    obs = query.obs.copy()
    result = transfer(reference, query, label_key, rep, k=k, threshold=0.0, params=params.index)
    return {"obs": obs, "embedding": query.obsm[rep], "report": report, "result": result,
            "order": label_order(reference.obs[label_key])}


# --- Metrics page: scIB integration metrics of the current analysis's embeddings ----------------------------------


def metric_embeddings(analysis: Analysis) -> list[str]:
    """The ``obsm`` embeddings worth scoring: numeric, with more than two dimensions (not 2-D layouts)."""
    layouts = analysis.layouts()
    keys = []
    for key in analysis.adata.obsm:
        value = np.asarray(analysis.adata.obsm[key])
        if key not in layouts and value.ndim == 2 and value.shape[1] > 2 and np.issubdtype(value.dtype, np.number):
            keys.append(key)
    return keys


def batch_options(analysis: Analysis) -> list[str]:
    """Categorical ``obs`` columns that may name batches: those worth colouring by, then those with a single value
    (offered so that the Metrics page can say why one batch cannot be scored)."""
    options = color_options(analysis)
    obs = analysis.adata.obs
    return options + [str(name) for name in obs.columns if str(name) not in options and obs[name].nunique() == 1
                      and not pd.api.types.is_numeric_dtype(obs[name])]


@st.cache_data(show_spinner=False, max_entries=16)
def integration_metrics(analysis_key: str, label_key: str, batch_key: str, embeddings: tuple[str, ...],
                        _analysis: Analysis) -> pd.DataFrame:
    """``sccore.metrics.benchmark_embeddings`` of the analysis (one row per embedding), with a progress bar."""
    from sccore.metrics import benchmark_embeddings

    bar = st.progress(0.0, text="Computing the integration metrics…")
    try:
        return benchmark_embeddings(_analysis.adata, label_key, batch_key, list(embeddings),
                                    progress=lambda f, message: bar.progress(min(max(f, 0.0), 1.0), text=message))
    finally:
        bar.empty()


# --- Report page: what this session computed (read-only), and the report itself ------------------------------------


def session_knockouts(analysis_key: str) -> pd.DataFrame | None:
    """The knockouts this session ran on the Knockout page for this analysis (``knockout_results``, keyed by
    analysis key, model, gene, population, mode and max cells): one row per gene and method, or None."""
    from sccore.report import describe_cells

    rows = []
    for key, entry in st.session_state.get("knockout_results", {}).items():
        if key[0] != analysis_key or "results" not in entry:
            continue
        cells = describe_cells(dict([key[3]]) if key[3] else None, entry["n_chosen"], entry["n_population"])
        rows += [{**result.summary(), "cells": cells, "mode": key[4]} for result in entry["results"].values()
                 if not isinstance(result, str)]
    return pd.DataFrame(rows) if rows else None


def session_screens(analysis_key: str) -> dict:
    """The screens this session ran on the Knockout page for this analysis (``screen_results``, keyed by analysis
    key, model, population, methods, top, max cells, goal and estimate), as ``sccore.report.ScreenReport`` by a
    key that changes when a screen is recomputed."""
    from sccore.report import ScreenReport, describe_cells

    screens = {}
    for key, entry in st.session_state.get("screen_results", {}).items():
        if key[0] != analysis_key or not entry.get("tables"):
            continue
        goal = key[6]
        cells = describe_cells(dict([key[2]]) if key[2] else None, entry["n_cells"], entry["n_population"])
        screens[(key, entry["partial"], entry["n_cells"])] = ScreenReport(
            cells, entry["tables"], goal=f"{goal[0]} = {goal[1]}" if goal else "", partial=entry["partial"])
    return screens


def session_metrics(analysis: Analysis) -> tuple[pd.DataFrame, str] | None:
    """The integration metrics the Metrics page computed for this analysis (its last request) and which labels and
    batches they score, or None."""
    request = st.session_state.get("mt_request")
    if not request or request[0] != analysis.key:
        return None
    return integration_metrics(*request, analysis), f"{request[1]} as labels, {request[2]} as batches."


def session_transfer(analysis: Analysis) -> pd.DataFrame | None:
    """The label transfers the Search & transfer page ran for this analysis (within the dataset, and with another
    dataset when the query has true labels), scored at the page's threshold: one row each, or None."""
    from sccore.transfer import score

    threshold = float(st.session_state.get("tr_threshold", 0.5))
    rows = []
    within = st.session_state.get("tr_result")
    if within and "result" in within and within["key"][0] == analysis.key:
        _, rep, label_key, reference, k = within["key"]
        truth = analysis.adata.obs[label_key].iloc[within["query"]].to_numpy()
        rows.append({"labels": label_key, "embedding": rep, "reference": reference, "query": "the other cells",
                     "k": k, "threshold": threshold, "mean_confidence": float(within["result"].confidence.mean()),
                     **score(truth, within["result"].assigned(threshold))})
    mapped = st.session_state.get("map_result")
    if mapped and "result" in mapped and mapped["key"][0] == analysis.key and mapped["key"][5] in mapped["obs"]:
        _, rep, source, this_is_reference, _, label_key, k = mapped["key"]
        other = printable(Path(source).name)
        rows.append({"labels": label_key, "embedding": rep, "reference": "this dataset" if this_is_reference else other,
                     "query": other if this_is_reference else "this dataset", "k": k, "threshold": threshold,
                     "mean_confidence": float(mapped["result"].confidence.mean()),
                     **score(mapped["obs"][label_key].to_numpy(), mapped["result"].assigned(threshold))})
    if not rows:
        return None
    return pd.DataFrame(rows).drop(columns=["types_never_predicted"])


@st.cache_data(show_spinner="Writing the report…", max_entries=8)
def report_html(analysis_key: str, sections: tuple[str, ...], color_by: str | None, knockouts: pd.DataFrame | None,
                screen_keys: tuple, metrics: pd.DataFrame | None, metrics_about: str, transfer: pd.DataFrame | None,
                _analysis: Analysis, _qc: pd.DataFrame, _screens: list) -> bytes:
    """``sccore.report.build_report`` of the analysis with the chosen sections and this session's results (the
    screens are keyed by ``screen_keys``), as UTF-8 bytes."""
    from sccore.report import build_report

    return build_report(_analysis, sections=sections, color_by=color_by, qc=_qc, knockouts=knockouts,
                        screens=_screens, metrics=metrics, metrics_about=metrics_about,
                        transfer=transfer).encode("utf-8")


# --- Background jobs: the Jobs page, the Knockout page's screens and the Encoder page's training ------------------


@st.cache_resource(show_spinner="Starting the Dask cluster…", validate=lambda held: held[0].status != "closed")
def _dask_client(scheduler_address: str) -> list:
    return [jobs.connect(scheduler_address)]  # in a list: st.cache_resource refuses an awaitable such as a Client


def dask_client(scheduler_address: str):
    """One Dask client for the server: to ``scheduler_address``, or to a local cluster the app starts (a client
    that was closed, e.g. by a lab's scheduler that restarted, is replaced)."""
    return _dask_client(scheduler_address)[0]


def job_store() -> jobs.JobStore:
    """The job records (``sccore.jobs.JobStore`` in the cache folder)."""
    return jobs.JobStore(settings().cache_dir)


def job_input(source: str, create: bool = True) -> str | None:
    """The file a job reads for ``source``: the file itself, or for the demo a copy written once into the cache
    folder (``None`` when ``create`` is off and that copy is not there yet)."""
    if source != DEMO:
        return checked_source(source)
    path = settings().cache_dir / "demo" / "pbmc68k_reduced.h5ad"
    if create and not path.exists():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atomic_write(path, _open_source(DEMO, None).copy().write_h5ad, suffix=".h5ad")
    return str(path) if path.exists() else None


def job_params(kind: str, source: str, params: dict, create: bool = True) -> dict | None:
    """``params`` of a ``kind`` job on ``source``'s file (:func:`job_input`), completed and checked
    (``sccore.jobs.checked_params``); ``None`` when ``create`` is off and the demo has no file yet."""
    path = job_input(source, create)
    return None if path is None else jobs.checked_params(kind, {**params, "input": path})


def submit_job(kind: str, source: str, params: dict) -> str:
    """Queue a ``kind`` job with checked ``params`` (:func:`job_params`) for the current user on the settings'
    cluster, its result in ``source``'s cache folder; returns its id."""
    current = settings()
    return jobs.submit(dask_client(current.scheduler_address), job_store(), current_user(), kind, params,
                       results_dir=current.results_dir(None if source == DEMO else source))


def find_jobs(kind: str, params_list: list[dict]) -> list:
    """For each of ``params_list`` (checked parameters), the current user's newest ``kind`` job with exactly these
    parameters, or ``None``: read from the job records, so a page finds its jobs again after a browser refresh."""
    return jobs.find_jobs(job_store(), current_user(), kind, params_list)


def source_jobs(kind: str, source: str) -> list:
    """The current user's ``kind`` jobs on ``source``'s file, newest first (none while the demo has no file)."""
    path = job_input(source, create=False)
    if path is None:
        return []
    path = str(Path(path).resolve())
    return [record for record in jobs.list_jobs(job_store(), current_user())
            if record.kind == kind and record.params.get("input") == path]


@st.fragment(run_every=1.0)
def follow_jobs(job_ids: tuple[str, ...], what: str, cancel_key: str, hint: str) -> None:
    """A progress bar of the current user's jobs ``job_ids``, redrawn every second while the page stays open, and a
    button that cancels them; the whole page reruns (to show their result) once they have all ended."""
    store, user = job_store(), current_user()
    records = [jobs.status(store, user, job_id) for job_id in job_ids]
    if all(record.done for record in records):
        st.rerun()
    fraction = sum(record.progress for record in records) / len(records)
    messages = "; ".join(record.message or record.status for record in records if not record.done)
    st.progress(min(max(fraction, 0.0), 1.0), text=f"{what} runs in the background: {messages}")
    st.caption(f"Job {', '.join(f'`{job_id}`' for job_id in job_ids)}: it goes on when you leave this page or close "
               f"the browser, and the **Jobs** page (in the sidebar) lists it. {hint}")
    if st.button("Cancel", key=cancel_key, icon=":material/cancel:"):
        for record in records:
            jobs.cancel(store, user, record.id)
        st.rerun()
