"""Cached computations of the pages, one wrapper each over an ``sccore`` function.

Heavy objects (loaded models, FAISS indexes, prepared reference datasets) live in ``st.cache_resource``;
tables, images and files in ``st.cache_data``. Each wrapper takes the analysis's key (``Analysis.key``, which
changes with the data and every parameter) and the analysis itself as an unhashed ``_analysis`` argument.
A finished computation can also be kept for every session (:func:`remember_result`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from sccore import InputError
from sccore.export import csv_bytes, embedding_table, h5ad_bytes
from sccore.pp import PreprocessParams, qc_metrics
from sccore.render import View, legend_table, render_categories, render_values
from sccore.tasks.knockout import KnockoutParams
from sccore.tasks.metrics import MetricsTaskParams
from sccore.workflow import Analysis

from dashboard.state import category_palette, checked_model, default_view, load_dataset, perturbation_fields
from dashboard.widgets import progress_bar


def array_digest(array: np.ndarray) -> str:
    """A hash of every value of ``array`` with its dtype and shape: the cache key of an array argument (Streamlit's
    own hash of an array of 500,000 values or more looks at 100,000 sampled ones, so two knockouts or selections
    differing elsewhere would share a cached result)."""
    array = np.ascontiguousarray(array)
    return hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest() + f"{array.dtype}{array.shape}"


EXACT_ARRAYS = {np.ndarray: array_digest}  # hash_funcs of every cached function with an array argument

# --- Data and Explore pages: QC table, images and exports -----------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=16)
def raw_qc_table(source: str, library_size_key: str | None, params: PreprocessParams) -> pd.DataFrame:
    """QC metrics of every cell before filtering, for the Data page's plots."""
    return qc_metrics(load_dataset(source, library_size_key), params)


def category_image(analysis_key: str, layout: str, column: str, view: View, analysis: Analysis):
    """RGBA image of a layout coloured by an ``obs`` column (:func:`category_palette`), and its legend table."""
    colors = tuple(category_palette(analysis.adata.obs[column]))
    return _category_image(analysis_key, layout, column, view, colors, analysis)


@st.cache_data(show_spinner=False, max_entries=64)
def _category_image(analysis_key: str, layout: str, column: str, view: View, colors: tuple[str, ...],
                    _analysis: Analysis):
    return _labels_image(_analysis.layouts()[layout], _analysis.adata.obs[column], list(colors), view)


def _labels_image(coords: np.ndarray, labels: pd.Series, colors: list[str], view: View):
    values = labels.astype("category")
    codes = values.cat.codes.to_numpy()
    return render_categories(coords, codes, colors, view), legend_table(codes, list(values.cat.categories), colors)


def labels_image(analysis: Analysis, layout: str, labels: pd.Series, view: View):
    """RGBA image of a layout coloured by ``labels`` (one per cell, e.g. transferred labels; categories in their
    order, :func:`category_palette`'s colours), and its legend table."""
    return _labels_image(analysis.layouts()[layout], labels, category_palette(labels), view)


def annotated_layout(analysis: Analysis, layout: str, column: str | None, view: View | None = None):
    """The layout at ``view`` (by default the whole layout, :func:`dashboard.state.default_view`) drawn in the colours
    of ``obs[column]``, or grey without a column: its image, view and legend table (None without a column)."""
    view = view or default_view(analysis, layout)
    if column is None:
        return plain_image(analysis.key, layout, view, analysis), view, None
    image, legend = category_image(analysis.key, layout, column, view, analysis)
    return image, view, legend


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


@st.cache_data(show_spinner="Preparing the table…", max_entries=8)
def embedding_csv(analysis_key: str, _analysis: Analysis) -> bytes:
    """Cell annotations, every 2-D layout and the principal components, as CSV."""
    return csv_bytes(embedding_table(_analysis.adata, _analysis.layouts()), index=True)


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


@st.cache_data(show_spinner=False, max_entries=8)
def default_gene(analysis_key: str, _adata) -> str:
    """``sccore.perturb.default_gene`` of the analysis's dataset: the gene the Knockout page offers first."""
    from sccore.perturb import default_gene as first_gene

    return first_gene(_adata)


@st.cache_resource(show_spinner=False, max_entries=4)
def linear_perturber(analysis_key: str, method: str, _analysis: Analysis):
    """The ``sccore.perturb.LinearPerturber`` of a baseline (``pca`` or ``linear``) on the analysis, built once and
    shared by every knockout and session: its column-major copy of the expression (one for both baselines) and its
    regressions."""
    from sccore.perturb import LinearPerturber

    matrix = linear_perturber(analysis_key, "pca", _analysis).matrix if method == "linear" else None
    return LinearPerturber(_analysis.adata, method, np.arange(_analysis.adata.n_obs), matrix=matrix)


@st.cache_data(show_spinner=False, max_entries=48, hash_funcs=EXACT_ARRAYS)
def knockout_result(analysis_key: str, params: KnockoutParams, cells: np.ndarray, _analysis: Analysis):
    """The ``knockout`` task's in-memory core (``sccore.tasks.knockout.compute``) of ``params`` (one gene, or its genes
    together) in ``cells`` of the analysis: its one ``sccore.perturb.KnockoutResult``."""
    from sccore.tasks.knockout import compute

    model = loaded_model(params.model, _analysis.params.encoder_device) if params.method == "encoder" else None
    perturber = linear_perturber(analysis_key, params.method, _analysis) if params.method != "encoder" else None
    (result,) = compute(_analysis.adata, params, model, _analysis.params.preprocess.library_size_key, cells,
                        perturber=perturber)
    return result


def knockout_by_method(analysis: Analysis, gene: str, cells: np.ndarray, methods: list[str], mode: str) -> dict:
    """:func:`knockout_result` of ``gene`` in ``cells`` by each of ``methods`` (the ``knockout`` task's parameters of
    each, :func:`dashboard.state.perturbation_fields`): method -> its result, or the message of its
    :class:`InputError`. One message shared by every method is raised as that error."""
    results = {}
    for method in methods:
        try:
            params = KnockoutParams(genes=(gene,), mode=mode,
                                    **perturbation_fields(analysis, analysis.params.encoder_model, method))
            results[method] = knockout_result(analysis.key, params, cells, analysis)
        except InputError as error:
            results[method] = str(error)
    messages = {value for value in results.values() if isinstance(value, str)}
    if len(messages) == 1 and all(isinstance(value, str) for value in results.values()):
        raise InputError(messages.pop())
    return results


@st.cache_resource(show_spinner=False, max_entries=8)
def umap_train_index(analysis_key: str, rep: str, _analysis: Analysis):
    """A FAISS index over the embedding of the cells ``rep``'s UMAP was fitted on, for ``sccore.umap.transform``."""
    from sccore.neighbors import build_index

    model = _analysis.umap_models[rep]
    if len(model.train_cells) == _analysis.adata.n_obs and rep in _analysis.indexes:
        return _analysis.indexes[rep]
    return build_index(np.asarray(_analysis.adata.obsm[rep])[model.train_cells])


def _transform(analysis: Analysis, rep: str, embedding: np.ndarray, optimize: bool) -> np.ndarray:
    from sccore.umap import transform

    return transform(analysis.umap_models[rep], embedding, umap_train_index(analysis.key, rep, analysis),
                     optimize=optimize)


@st.cache_data(show_spinner=False, max_entries=64, hash_funcs=EXACT_ARRAYS)
def placed_in_umap(analysis_key: str, rep: str, embedding: np.ndarray, _analysis: Analysis,
                   optimize: bool = True) -> np.ndarray:
    """UMAP positions of new (e.g. perturbed) embeddings in the layout of ``rep``, by ``sccore.umap.transform``."""
    return _transform(_analysis, rep, embedding, optimize)


@st.cache_resource(show_spinner=False, max_entries=8)
def _cell_places(analysis_key: str, rep: str, n_cells: int) -> np.ndarray:
    return np.full((n_cells, 2), np.nan, dtype=np.float32)  # filled by placed_originals, shared by every session


def placed_originals(analysis: Analysis, rep: str, cells: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """UMAP positions (``sccore.umap.transform`` without refinement, as :func:`placed_in_umap`) of ``rows``, the
    embeddings of ``cells`` in ``rep``'s layout. Rows that are the cells' own ``obsm[rep]`` (a knockout's originals)
    are placed once per cell and analysis and kept for every knockout and session: a row's place depends on that row
    alone (to float rounding: FAISS may round a distance differently in a batch of another size). Other rows (e.g.
    moved into Harmony's space) are placed as :func:`placed_in_umap` places them."""
    own = np.asarray(analysis.adata.obsm[rep])
    if not np.array_equal(np.asarray(rows, dtype=own.dtype), own[cells]):
        return placed_in_umap(analysis.key, rep, rows, analysis, optimize=False)
    places = _cell_places(analysis.key, rep, analysis.adata.n_obs)
    missing = np.unique(cells[np.isnan(places[cells, 0])])
    if len(missing):
        places[missing] = _transform(analysis, rep, own[missing], optimize=False)
    return places[cells]


@st.cache_resource(show_spinner=False)
def _finished_results() -> tuple:
    import threading

    return threading.Lock(), {}


def remember_result(key, value, max_entries: int = 32) -> None:
    """Keep a finished computation (e.g. a screen) for every session, the ``max_entries`` most recent."""
    lock, store = _finished_results()
    with lock:
        store.pop(key, None)
        store[key] = value
        while len(store) > max_entries:
            store.pop(next(iter(store)))


def recall_result(key):
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


@st.cache_data(show_spinner="Transferring labels…", max_entries=16, hash_funcs=EXACT_ARRAYS)
def transfer_within(analysis_key: str, rep: str, label_key: str, reference_cells: np.ndarray, query_cells: np.ndarray,
                    k: int, _analysis: Analysis):
    """``sccore.transfer.transfer_within`` of ``obs[label_key]`` from ``reference_cells`` to ``query_cells`` of the
    current dataset, in ``obsm[rep]`` (no threshold applied)."""
    from sccore.transfer import transfer_within as transfer

    return transfer(_analysis.adata, label_key, rep, reference_cells, query_cells, k, params=_analysis.params.index)


def transfer_scores(analysis: Analysis, reps: list[str], label_key: str, reference_cells: np.ndarray,
                    query_cells: np.ndarray, k: int, threshold: float) -> pd.DataFrame:
    """The same transfer within the dataset (:func:`transfer_within`) in each embedding of ``reps``: its accuracy and
    macro F1 at ``threshold`` over the query cells with a true label, one row per embedding."""
    from sccore.transfer import score_labelled

    truth = analysis.adata.obs[label_key].iloc[query_cells]
    rows = []
    for rep in reps:
        result = transfer_within(analysis.key, rep, label_key, reference_cells, query_cells, k, analysis)
        scores = score_labelled(truth, result.assigned(threshold))
        rows.append({"embedding": rep, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]})
    return pd.DataFrame(rows)


@st.cache_resource(show_spinner="Embedding the reference dataset…", max_entries=4)
def reference_dataset(source: str, rep: str, model_folder: str, device: str):
    """Another dataset (``source``) ready to be a reference (``sccore.transfer.prepared_reference``): processed with
    its default parameters and PCA (``rep == 'X_pca'``), or embedded with the current encoder (``model_folder``)."""
    from sccore.transfer import prepared_reference

    model = loaded_model(model_folder, device) if rep != "X_pca" else None
    return prepared_reference(load_dataset(source, None), rep, model, device)


@st.cache_data(show_spinner="Mapping and transferring labels…", max_entries=8)
def mapped_transfer(analysis_key: str, rep: str, source: str, this_is_reference: bool, gene_id_key: str | None,
                    label_key: str, k: int, _analysis: Analysis):
    """``sccore.transfer.mapped_transfer`` between the current dataset and another (``source``), in ``obsm[rep]``:
    from the current one to the other (``this_is_reference``) or back. The query is mapped into the reference's space
    (its PCA loadings or the same encoder)."""
    from sccore.transfer import counts_query, mapped_transfer as transfer

    params = _analysis.params
    model = loaded_model(params.encoder_model, params.encoder_device) if rep == "X_encoder" else None
    if this_is_reference:
        reference, query = _analysis.adata, load_dataset(source, None).copy()
        library_size_key = None
    else:
        reference = reference_dataset(source, rep, params.encoder_model, params.encoder_device)
        query, library_size_key = counts_query(_analysis.adata), params.preprocess.library_size_key
    return transfer(reference, query, label_key, rep, k, model=model, gene_id_key=gene_id_key,
                    library_size_key=library_size_key, params=params.index)


@st.cache_data(show_spinner="Preparing the file…", max_entries=4)
def labelled_h5ad(cache_key, labels: pd.DataFrame, _build) -> bytes:
    """The query cells (``_build()``) with the transferred labels in ``obs``, as ``.h5ad`` bytes."""
    export = _build()
    for column in labels.columns:
        export.obs[column] = labels[column].to_numpy()
    return h5ad_bytes(export)


# --- Metrics and Report pages -------------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=16)
def integration_metrics(analysis_key: str, params: MetricsTaskParams, _analysis: Analysis) -> pd.DataFrame:
    """The ``metrics`` task's in-memory core (``sccore.tasks.metrics.compute``) on the analysis (one row per
    embedding), with a progress bar."""
    from sccore.tasks.metrics import compute

    with progress_bar("Computing the integration metrics…") as progress:
        return compute(_analysis.adata, params, progress)


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


# --- Clusters & markers page and the Explore page's differential expression -------------------------------------


@st.cache_data(show_spinner="Clustering the cells (Leiden)…", max_entries=32)
def leiden_clusters(analysis_key: str, model: str, rep: str, resolution: float, seed: int,
                    _analysis: Analysis) -> pd.Series:
    """``sccore.cluster.leiden`` of the analysis's stored kNN graph of ``obsm[rep]`` at ``resolution``: the cluster
    of every cell (categorical, ``"0"`` the largest), indexed by cell (``model``: the analysis's encoder, which its
    key does not name). The graph is clustered in an AnnData of its own, so the analysis every session shares is left
    as it was."""
    import anndata as ad

    from sccore.cluster import leiden
    from sccore.neighbors import graph_keys
    from sccore.workflow import graph_key

    neighbors_key = graph_key(rep)
    stored = {key: _analysis.adata.obsp[key] for key in graph_keys(neighbors_key) if key in _analysis.adata.obsp}
    graph = ad.AnnData(obs=pd.DataFrame(index=_analysis.adata.obs_names), obsp=stored)
    leiden(graph, resolution, neighbors_key=neighbors_key, seed=seed)
    return graph.obs["leiden"]


def grouping_image(analysis: Analysis, layout: str, grouping_key: tuple, labels: pd.Series, view: View):
    """RGBA image of a layout coloured by ``labels`` (a grouping of the cells, e.g. clusters, that ``grouping_key``
    names for the cache; :func:`category_palette`'s colours), and its legend table."""
    colors = tuple(category_palette(labels))
    return _grouping_image(analysis.key, layout, grouping_key, view, colors, labels, analysis)


@st.cache_data(show_spinner=False, max_entries=64)
def _grouping_image(analysis_key: str, layout: str, grouping_key: tuple, view: View, colors: tuple[str, ...],
                    _labels: pd.Series, _analysis: Analysis):
    return _labels_image(_analysis.layouts()[layout], _labels, list(colors), view)


@st.cache_data(show_spinner="Ranking the genes of every group…", max_entries=16)
def marker_genes(analysis_key: str, grouping_key: tuple, method: str, _labels: pd.Series,
                 _analysis: Analysis) -> pd.DataFrame:
    """``sccore.markers.rank_genes`` of the groups ``_labels`` gives the cells (named by ``grouping_key``, which keys
    the cache) on the analysis's log-normalised expression (``sccore.markers.analysis_expression``: in memory, or an
    atlas's store on disk), each group against the rest."""
    from sccore.markers import analysis_expression, rank_genes

    return rank_genes(analysis_expression(_analysis), _analysis.adata.var_names, _labels, method=method)


def _gene_columns(analysis: Analysis, genes: tuple[str, ...], cells: np.ndarray | None = None) -> np.ndarray:
    """The log-normalised expression of a few ``genes`` (columns) in ``cells`` (default: every cell), read one gene
    at a time (``Analysis.expression``: from memory, or an atlas's store)."""
    columns = [analysis.expression(gene) for gene in genes]
    values = np.column_stack(columns) if columns else np.zeros((analysis.adata.n_obs, 0))
    return values if cells is None else values[cells]


@st.cache_data(show_spinner=False, max_entries=16)
def marker_expression(analysis_key: str, grouping_key: tuple, genes: tuple[str, ...], _labels: pd.Series,
                      _analysis: Analysis) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``sccore.markers.expression_by_group`` of ``genes``: each group's mean log expression and share of expressing
    cells (groups x genes), for the dot plot."""
    from sccore.markers import expression_by_group

    return expression_by_group(_gene_columns(_analysis, genes), list(genes), _labels, list(genes))


@st.cache_data(show_spinner=False, max_entries=16)
def marker_cells(analysis_key: str, grouping_key: tuple, genes: tuple[str, ...], per_group: int, _labels: pd.Series,
                 _analysis: Analysis) -> tuple[np.ndarray, list[str]]:
    """The log expression of ``genes`` in at most ``per_group`` cells of each group
    (``sccore.markers.sample_by_group``) and each of those cells' group, for the heat map."""
    from sccore.markers import sample_by_group

    cells = sample_by_group(_labels, per_group)
    return _gene_columns(_analysis, genes, cells), [str(label) for label in np.asarray(_labels, dtype=object)[cells]]


def cells_digest(cells: np.ndarray) -> str:
    """A hash of a set of cells (its sorted, distinct positions): the cache key of a result over those cells."""
    return array_digest(np.unique(np.asarray(cells, dtype=np.int64)))


def differential_expression(analysis: Analysis, cells_a: np.ndarray, cells_b: np.ndarray,
                            method: str) -> pd.DataFrame:
    """``sccore.markers.differential_expression`` of the cells ``cells_a`` (positions) against ``cells_b`` on the
    analysis's log-normalised expression, cached by the analysis and the two sets' content
    (:func:`cells_digest`)."""
    return _differential_expression(analysis.key, cells_digest(cells_a), cells_digest(cells_b), method, cells_a,
                                    cells_b, analysis)


@st.cache_data(show_spinner="Testing every gene in A against B…", max_entries=16)
def _differential_expression(analysis_key: str, digest_a: str, digest_b: str, method: str, _cells_a: np.ndarray,
                             _cells_b: np.ndarray, _analysis: Analysis) -> pd.DataFrame:
    from sccore.markers import analysis_expression, differential_expression as compare

    return compare(analysis_expression(_analysis), _analysis.adata.var_names, _cells_a, _cells_b, method=method)
