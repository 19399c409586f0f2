"""Cell search, reference mapping and label transfer, all on FAISS neighbours (:mod:`sccore.neighbors`).

* **Search**: a cell, or a group of cells (its mean embedding), against every cell: the nearest cells
  with their Euclidean distance and cosine similarity, and the neighbours' make-up by each annotation.
* **Reference mapping**: a query dataset of raw counts embedded into a reference's space, never refitted
  on the query. PCA: the query's counts are put in the reference's genes and order (genes the query
  lacks are zero), normalised like the reference (``log1p(counts / library size * target_sum)``) and
  projected with the reference's stored mean and loadings. Encoder: the reference's model folder and
  pooling. Genes are matched by symbol, or by an Ensembl-ID ``var`` column (version suffixes ignored).
* **Label transfer**: each query cell's ``k`` nearest reference cells vote with Gaussian weights
  ``exp(-(d / sigma)**2)``, ``d`` the Euclidean distance and ``sigma`` the mean distance of that cell's
  ``k`` neighbours. The kernel adapts to the local density and to the embedding's scale (PCA and encoder
  distances differ by orders of magnitude), and reduces to a plain majority vote when the neighbours are
  equally far. The confidence is the winning label's share of the weight (1 = every neighbour agrees);
  cells below a threshold are labelled ``"unassigned"``.
* **Within one dataset**: the reference is a random half of the cells or the cells with chosen values of an
  annotation (e.g. some donors; :func:`reference_split`), the query the other cells.
* **Between datasets**: either dataset is the reference; the other's raw counts are mapped into its space
  (:func:`prepared_reference`, :func:`mapped_transfer`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import anndata as ad
import faiss
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .embed import PCAParams, project_pca
from .errors import InputError
from .io import counts_matrix
from .neighbors import IndexParams, Neighbors, build_index, search
from .perturb import sample_cells
from .pp import PreprocessParams
from .select import composition
from .tokenize import library_sizes

UNASSIGNED = "unassigned"
METRICS = ("euclidean", "cosine")


# --- Search ------------------------------------------------------------------------------------------------------


def cell_positions(obs_names: pd.Index, ids: list[str]) -> np.ndarray:
    """Positions of the cells named ``ids``; an unknown name raises :class:`InputError` with the closest names."""
    index = pd.Index(obs_names.astype(str))
    positions = index.get_indexer([str(i) for i in ids])
    missing = [str(i) for i, p in zip(ids, positions) if p < 0]
    if missing:
        close = difflib.get_close_matches(missing[0], index[:200_000].tolist(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else f" Cell ids look like {', '.join(index[:3])}."
        raise InputError(f"No cell is named '{missing[0]}'.{hint}")
    return positions.astype(np.int64)


def unit_rows(embedding: np.ndarray) -> np.ndarray:
    """The rows of ``embedding`` scaled to length 1 (zero rows stay zero), as float32."""
    embedding = np.asarray(embedding, dtype=np.float32)
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    return np.divide(embedding, norms, out=np.zeros_like(embedding), where=norms > 0)


def search_index(embedding: np.ndarray, metric: str = "euclidean", params: IndexParams = IndexParams()) -> faiss.Index:
    """A FAISS index for :func:`similar_cells`: over the embedding (Euclidean) or its unit rows (cosine)."""
    if metric not in METRICS:
        raise InputError(f"Unknown metric '{metric}': use {' or '.join(METRICS)}.")
    return build_index(unit_rows(embedding) if metric == "cosine" else embedding, params)


def similar_cells(embedding: np.ndarray, query_cells: np.ndarray, k: int = 15, metric: str = "euclidean",
                  index: faiss.Index | None = None, exclude_query: bool = True) -> pd.DataFrame:
    """The ``k`` cells nearest to a cell or a group of cells (positions ``query_cells``), nearest first.

    A group is searched by its mean (of unit rows, for cosine). ``metric`` ranks by Euclidean distance or
    cosine similarity; ``index`` is :func:`search_index`'s for that metric (built here when omitted). With
    ``exclude_query`` the query cells themselves are left out. Columns: ``rank``, ``position``,
    ``euclidean_distance`` (to the query's mean) and ``cosine_similarity`` (to the searched direction), whatever
    the ranking.
    """
    embedding = np.asarray(embedding, dtype=np.float32)
    query_cells = np.unique(np.asarray(query_cells, dtype=np.int64))
    if len(query_cells) == 0:
        raise InputError("No query cell: pick a cell, a group or a selection first.")
    if query_cells.min() < 0 or query_cells.max() >= len(embedding):
        raise InputError("A query cell lies outside the embedding; recompute the search on this dataset.")
    if k < 1:
        raise InputError("Ask for at least 1 neighbour.")
    index = index if index is not None else search_index(embedding, metric)
    members = embedding[query_cells]
    query = unit_rows(unit_rows(members).mean(axis=0, keepdims=True)) if metric == "cosine" else \
        members.mean(axis=0, keepdims=True)
    found = search(index, query, k, exclude=query_cells if exclude_query else None)
    positions = found.indices[0][found.indices[0] >= 0]
    centre = members.mean(axis=0)
    vectors = embedding[positions]
    cosine = unit_rows(vectors) @ unit_rows(query)[0]
    return pd.DataFrame({"rank": np.arange(1, len(positions) + 1), "position": positions,
                         "euclidean_distance": np.linalg.norm(vectors - centre, axis=1).astype(np.float32),
                         "cosine_similarity": cosine.astype(np.float32)})


def neighbour_table(neighbours: pd.DataFrame, obs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """:func:`similar_cells`' table for people: each neighbour's cell id after its rank and its value of each ``obs``
    column in ``columns`` at the end, instead of its position."""
    positions = neighbours["position"].to_numpy()
    table = neighbours.copy()
    table.insert(1, "cell", obs.index[positions].astype(str))
    for column in columns:
        table[column] = obs[column].astype(str).to_numpy()[positions]
    return table.drop(columns="position")


def compositions(obs: pd.DataFrame, cells: np.ndarray, columns: list[str]) -> dict[str, pd.DataFrame]:
    """How ``cells`` split over each annotation in ``columns`` (count and percentage, largest first)."""
    return {column: composition(obs, cells, column) for column in columns}


# --- Reference mapping -------------------------------------------------------------------------------------------


def _gene_keys(var: pd.DataFrame, gene_id_key: str | None, which: str) -> pd.Series:
    if not gene_id_key:
        return pd.Series(var.index.astype(str), index=var.index)
    if gene_id_key not in var.columns:
        raise InputError(f"The {which}'s var has no column '{gene_id_key}' with gene IDs; its columns: "
                         f"{', '.join(map(str, var.columns)) or 'none'}. Name a column both datasets have, or "
                         "match by gene symbol.")
    return var[gene_id_key].astype(str).str.split(".").str[0]


def match_reference_genes(reference_var: pd.DataFrame, query_var: pd.DataFrame, gene_id_key: str | None = None,
                          used: np.ndarray | None = None, min_fraction: float = 0.05,
                          min_genes: int = 20) -> tuple[np.ndarray, dict]:
    """For each reference gene, the query column holding it (``-1`` where the query lacks it).

    Genes are matched by symbol (``var_names``), or by the ``gene_id_key`` column of both ``var`` tables
    (Ensembl IDs; version suffixes such as ``.12`` ignored). ``used`` marks the reference genes the
    embedding reads (e.g. non-zero loadings); the report counts those. Raises :class:`InputError` naming
    the fix when fewer than ``min(used, max(min_genes, min_fraction * used))`` of them match.
    """
    used = np.ones(len(reference_var), dtype=bool) if used is None else np.asarray(used, dtype=bool)
    reference_keys = _gene_keys(reference_var, gene_id_key, "reference")
    query_keys = _gene_keys(query_var, gene_id_key, "query")
    first_column = pd.Series(np.arange(len(query_keys)), index=query_keys.to_numpy())
    first_column = first_column[~first_column.index.duplicated()]
    columns = first_column.reindex(reference_keys.to_numpy()).fillna(-1).to_numpy(dtype=np.int64)
    by = f"var['{gene_id_key}']" if gene_id_key else "symbol"
    matched = int(((columns >= 0) & used).sum())
    n_used = int(used.sum())
    report = {"genes_matched": matched, "genes_used": n_used, "reference_genes": len(reference_var),
              "query_genes": len(query_var), "matched_by": by}
    needed = min(n_used, max(min_genes, int(np.ceil(min_fraction * n_used))))
    if matched < needed:
        shared = sorted(set(map(str, reference_var.columns)) & set(map(str, query_var.columns)))
        if gene_id_key:
            hint = " Check that both var columns hold the same kind of ID, or match by gene symbol."
        elif shared:
            hint = (f" If a var column holds Ensembl IDs, match by it (gene ID key; columns both datasets have: "
                    f"{', '.join(shared[:10])}).")
        else:
            hint = " If the genes are named differently (symbols vs Ensembl IDs), add a var column with matching IDs."
        what = "shares no genes" if matched == 0 else f"shares only {matched} genes"
        raise InputError(f"The query {what} with the {n_used:,} genes the reference's embedding uses (matched by {by}, "
                         f"e.g. query '{query_keys.iloc[0] if len(query_keys) else ''}' vs reference "
                         f"'{reference_keys.iloc[0] if len(reference_keys) else ''}'); at least {needed} are "
                         f"needed.{hint}")
    return columns, report


def has_pca_projection(adata: ad.AnnData, key: str = "X_pca") -> bool:
    """Whether ``adata`` holds what projecting new cells needs: loadings, gene means and its normalisation."""
    return (key in adata.obsm and f"{key}_loadings" in adata.varm and f"{key}_mean" in adata.var
            and "preprocess" in adata.uns)


def _library_size_key(query: ad.AnnData, keys: list[str | None]) -> str | None:
    """The first of ``keys`` that names a query ``obs`` column (None: library sizes are the counts' sums)."""
    return next((key for key in keys if key and key in query.obs.columns), None)


def _describe_library_size(key: str | None) -> str:
    return f"obs['{key}']" if key else "the sum of the query's counts"


def project_query_pca(reference: ad.AnnData, query: ad.AnnData, key: str = "X_pca", gene_id_key: str | None = None,
                      library_size_key: str | None = None) -> tuple[np.ndarray, dict]:
    """The query's raw counts projected onto the reference's PCA (``reference`` from :func:`sccore.embed.pca`).

    The counts are put in the reference's genes and order (missing genes zero), divided by each cell's
    library size (``library_size_key``, else the reference's library-size column where the query has it,
    else the sum of the query's counts), scaled to the reference's ``target_sum``, log1p-transformed and
    projected with the reference's gene means and loadings. Returns the embedding and a matching report.
    """
    if not has_pca_projection(reference, key):
        raise InputError(f"The reference has no PCA loadings (varm['{key}_loadings'], var['{key}_mean']) to project "
                         "new cells with: compute its PCA with sccore "
                         "(`python -m sccore embed REF.h5ad --method pca`).")
    loadings = np.asarray(reference.varm[f"{key}_loadings"], dtype=np.float32)
    mean = reference.var[f"{key}_mean"].to_numpy(dtype=np.float32)
    columns, report = match_reference_genes(reference.var, query.var, gene_id_key, used=np.any(loadings != 0, axis=1))
    preprocess_params = reference.uns["preprocess"]["params"]
    counts = counts_matrix(query)
    size_key = _library_size_key(query, [library_size_key, preprocess_params.get("library_size_key") or None])
    sizes = library_sizes(counts, query.obs, size_key)
    report["library_size"] = _describe_library_size(size_key)
    present = np.flatnonzero(columns >= 0)
    selector = sp.csr_matrix((np.ones(len(present), dtype=np.float32), (columns[present], present)),
                             shape=(query.n_vars, reference.n_vars))
    scale = np.divide(float(preprocess_params["target_sum"]), sizes, out=np.zeros_like(sizes), where=sizes > 0)
    normalised = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ (counts @ selector), dtype=np.float32)
    np.log1p(normalised.data, out=normalised.data)
    return project_pca(normalised, mean, loadings), report


def embed_query_encoder(reference: ad.AnnData, query: ad.AnnData, model, key: str = "X_encoder",
                        gene_id_key: str | None = None, library_size_key: str | None = None,
                        progress=lambda fraction, message: None) -> tuple[np.ndarray, dict]:
    """The query's cells embedded with a loaded model (:class:`sccore.models.LoadedModel`), pooled the way the
    reference's ``uns[key]`` says (the model's cell embedding by default)."""
    from .encode import embed_cells
    from .tokenize import match_genes

    info = reference.uns.get(key, {})
    pooling, layer = str(info.get("pooling", "cell")), int(info.get("layer", -1))
    _, match = match_genes(query.var, model.vocabulary, gene_id_key)
    size_key = _library_size_key(query, [library_size_key, info.get("library_size_key") or None])
    embedding = embed_cells(query, model, pooling=pooling, layer=layer, library_size_key=size_key,
                            gene_id_key=gene_id_key, progress=progress)
    report = {"genes_matched": match["matched"], "genes_used": match["vocabulary_genes"],
              "reference_genes": match["vocabulary_genes"], "query_genes": match["dataset_genes"],
              "matched_by": f"var['{gene_id_key}']" if gene_id_key else "symbol",
              "library_size": _describe_library_size(size_key),
              "pooling": pooling, "layer": layer}
    return embedding, report


def map_query(reference: ad.AnnData, query: ad.AnnData, use_rep: str = "X_pca", model=None,
              gene_id_key: str | None = None, library_size_key: str | None = None,
              progress=lambda fraction, message: None) -> dict:
    """Embed ``query`` (raw counts) into the reference's ``obsm[use_rep]`` space, in place; return the report.

    PCA embeddings (``reference.uns[use_rep]['method'] == 'pca'``, or loadings in ``varm``) are projected
    with the reference's loadings; encoder embeddings need the reference's ``model`` (loaded). Writes
    ``query.obsm[use_rep]`` and ``query.uns[use_rep]`` (method, genes matched, how library sizes were read).
    """
    if use_rep not in reference.obsm:
        raise InputError(f"The reference has no obsm['{use_rep}']; it holds: "
                         f"{', '.join(reference.obsm.keys()) or 'nothing'}. Embed it first.")
    method = str(reference.uns.get(use_rep, {}).get("method", "pca" if f"{use_rep}_loadings" in reference.varm
                                                     else "encoder"))
    if method == "pca":
        embedding, report = project_query_pca(reference, query, use_rep, gene_id_key, library_size_key)
    elif model is None:
        raise InputError(f"obsm['{use_rep}'] of the reference comes from an encoder: give its model folder (--model) "
                         "so the query is embedded with the same model.")
    else:
        embedding, report = embed_query_encoder(reference, query, model, use_rep, gene_id_key, library_size_key,
                                                progress)
    reference_embedding = np.asarray(reference.obsm[use_rep])
    if embedding.shape[1] != reference_embedding.shape[1]:
        raise InputError(f"The query was embedded in {embedding.shape[1]} dimensions but the reference's {use_rep} "
                         f"has {reference_embedding.shape[1]}: use the model that embedded the reference.")
    query.obsm[use_rep] = embedding
    query.uns[use_rep] = {"method": method, "mapped_onto_reference": True, **report}
    return report


# --- Label transfer ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferResult:
    """Each query cell's winning label (before any threshold), its confidence, the neighbours that voted, and
    warnings about the reference (e.g. labels with a single cell)."""

    labels: np.ndarray
    confidence: np.ndarray
    neighbors: Neighbors
    warnings: list[str] = field(default_factory=list)

    def assigned(self, threshold: float) -> np.ndarray:
        """The labels, with :data:`UNASSIGNED` where the confidence is below ``threshold``."""
        return np.where(self.confidence < threshold, UNASSIGNED, self.labels.astype(object)).astype(str)


def reference_labels(obs: pd.DataFrame, label_key: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The reference's labels as strings, which cells have one, and warnings; bad keys raise :class:`InputError`.

    Cells without a label are left out (with a warning); a label column with a single value, or one that
    looks like an identifier or a measurement (more distinct values than half the cells), is refused.
    """
    if label_key not in obs.columns:
        raise InputError(f"The reference's obs has no column '{label_key}'. Label columns it has: "
                         f"{', '.join(map(str, obs.columns)) or 'none'}.")
    column = obs[label_key]
    has_label = column.notna().to_numpy() & (column.astype(str).str.strip() != "").to_numpy()
    labels = column.astype(str).to_numpy()
    warnings = []
    if not has_label.any():
        raise InputError(f"obs['{label_key}'] is empty in the reference: choose a column with labels.")
    if not has_label.all():
        warnings.append(f"{int((~has_label).sum()):,} reference cells have no {label_key} and are left out of the "
                        "vote.")
    values, counts = np.unique(labels[has_label], return_counts=True)
    if len(values) < 2:
        raise InputError(f"Every labelled reference cell has {label_key} = '{values[0]}': transferring needs at least "
                         "2 labels. Choose a larger reference or another label column.")
    if len(values) > max(20, has_label.sum() // 2):
        raise InputError(f"obs['{label_key}'] has {len(values):,} distinct values for {int(has_label.sum()):,} cells: "
                         "it looks like an identifier or a measurement, not a label. Choose a categorical column "
                         "such as a cell type.")
    single = values[counts == 1]
    if len(single):
        warnings.append(f"{len(single)} label(s) have a single reference cell ({', '.join(single[:5])}"
                        f"{', …' if len(single) > 5 else ''}): such a label wins a vote only where that one cell "
                        "outweighs all other neighbours. Add reference cells of that type or merge it with another.")
    return labels, has_label, warnings


def label_order(column: pd.Series) -> list[str]:
    """The labels of an ``obs`` column in their own order: its categories if categorical, else sorted."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return [str(v) for v in column.cat.categories]
    return sorted(set(column.dropna().astype(str)))


def gaussian_weights(distances: np.ndarray) -> np.ndarray:
    """Vote weights ``exp(-(d / sigma)**2)`` per row, ``sigma`` the row's mean distance (equal weights if all 0)."""
    distances = np.asarray(distances, dtype=np.float64)
    sigma = distances.mean(axis=1, keepdims=True)
    scaled = np.divide(distances, sigma, out=np.zeros_like(distances), where=sigma > 0)
    return np.exp(-scaled ** 2)


def vote(neighbors: Neighbors, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarity-weighted vote of each row's neighbours (indices into ``labels``): the winning label and its share
    of the weight. Ties go to the label that sorts first."""
    names, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    weights = gaussian_weights(neighbors.distances)
    valid = neighbors.indices >= 0
    rows = np.repeat(np.arange(len(weights)), weights.shape[1])
    scores = np.zeros((len(weights), len(names)))
    np.add.at(scores, (rows[valid.ravel()], codes[neighbors.indices[valid]]), weights[valid])
    winner = scores.argmax(axis=1)
    total = scores.sum(axis=1)
    confidence = np.divide(scores[np.arange(len(scores)), winner], total, out=np.zeros(len(total)), where=total > 0)
    return names[winner], confidence.astype(np.float32)


def knn_transfer(reference_embedding: np.ndarray, labels: np.ndarray, query_embedding: np.ndarray, k: int = 15,
                 index: faiss.Index | None = None, params: IndexParams = IndexParams()) -> TransferResult:
    """Labels for the query cells from a vote of their ``k`` nearest reference cells (see the module's docstring).

    ``index`` is a FAISS index over ``reference_embedding`` (built here when omitted).
    """
    if k < 1:
        raise InputError("k must be at least 1 neighbour.")
    if len(labels) != len(reference_embedding):
        raise InputError("There must be one label per reference cell.")
    warnings = []
    if len(reference_embedding) < k:
        warnings.append(f"The reference has only {len(reference_embedding)} cells, fewer than k = {k}: every cell "
                        "votes.")
    index = index if index is not None else build_index(reference_embedding, params)
    neighbors = search(index, query_embedding, k)
    predicted, confidence = vote(neighbors, labels)
    return TransferResult(labels=predicted, confidence=confidence, neighbors=neighbors, warnings=warnings)


def transfer(reference: ad.AnnData, query: ad.AnnData, label_key: str, use_rep: str = "X_pca",
             key_added: str = "predicted_cell_type", k: int = 15, threshold: float = 0.5,
             params: IndexParams = IndexParams()) -> TransferResult:
    """Transfer ``reference.obs[label_key]`` to ``query`` through ``obsm[use_rep]`` (the same space in both).

    Writes ``query.obs[key_added]`` (labels, :data:`UNASSIGNED` where the confidence is below ``threshold``),
    ``query.obs[key_added + '_confidence']`` and the parameters and warnings in ``query.uns[key_added]``.
    """
    if not 0 <= threshold <= 1:
        raise InputError(f"The confidence threshold must lie between 0 and 1, not {threshold}.")
    for name, data in (("reference", reference), ("query", query)):
        if use_rep not in data.obsm:
            raise InputError(f"The {name} has no obsm['{use_rep}']; map the query onto the reference first "
                             f"(it holds: {', '.join(data.obsm.keys()) or 'nothing'}).")
    labels, has_label, warnings = reference_labels(reference.obs, label_key)
    embedding = np.asarray(reference.obsm[use_rep])[has_label]
    result = knn_transfer(embedding, labels[has_label], np.asarray(query.obsm[use_rep]), k, params=params)
    result = TransferResult(result.labels, result.confidence, result.neighbors, warnings + result.warnings)
    assigned = result.assigned(threshold)
    order = [v for v in label_order(reference.obs[label_key]) if v in set(assigned)]
    query.obs[key_added] = pd.Categorical(assigned, categories=order + ([UNASSIGNED] if UNASSIGNED in assigned
                                                                         else []))
    query.obs[f"{key_added}_confidence"] = result.confidence
    query.uns[key_added] = {"label_key": label_key, "use_rep": use_rep, "k": int(min(k, len(embedding))),
                            "threshold": float(threshold), "weights": "gaussian, sigma = mean neighbour distance",
                            "n_reference_cells": int(len(embedding)),
                            "n_unassigned": int((assigned == UNASSIGNED).sum()),
                            "warnings": list(result.warnings)}
    return result


# --- A fine-tuned model's classifier ------------------------------------------------------------------------------


def has_classifier_for(model, label_key: str) -> bool:
    """Whether the loaded ``model`` (None: no model) was fine-tuned (:func:`sccore.models.finetune`) to predict
    ``obs[label_key]``: then its classifier labels the query beside the kNN vote."""
    return model is not None and bool(model.config.labels) and model.config.label_key == label_key


def classifier_labels(model, embedding: np.ndarray, pooling: str = "cell", layer: int = -1
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The fine-tuned ``model``'s label for each cell it embedded (``embedding``, pooled by ``pooling`` at ``layer``)
    and the label's probability (:func:`sccore.encode.classify_embeddings`). The classifier reads the model's cell
    embedding: another pooling is refused with the fix."""
    from .encode import classify_embeddings, is_cell_embedding

    if not is_cell_embedding(model, pooling, layer):
        raise InputError(f"The classifier of {model.path.name} reads the model's cell embedding, but these cells "
                         f"were embedded with pooling '{pooling}' (layer {layer}): embed them with the default "
                         "pooling ('cell').")
    return classify_embeddings(model, embedding)


def write_classifier_labels(query: ad.AnnData, model, labels: np.ndarray, confidence: np.ndarray,
                            key_added: str = "predicted_cell_type", threshold: float = 0.5) -> np.ndarray:
    """Write a classifier's ``labels`` to ``query.obs[key_added]`` (:data:`UNASSIGNED` where ``confidence``, the
    label's probability, is below ``threshold``, as the kNN vote does), ``confidence`` to
    ``obs[key_added + '_confidence']`` and the model and threshold to ``uns[key_added]``; returns the labels written."""
    assigned = np.where(confidence < threshold, UNASSIGNED, np.asarray(labels).astype(object)).astype(str)
    order = [label for label in model.config.labels if label in set(assigned)]
    query.obs[key_added] = pd.Categorical(assigned, categories=order + ([UNASSIGNED] if UNASSIGNED in assigned
                                                                         else []))
    query.obs[f"{key_added}_confidence"] = np.asarray(confidence, dtype=np.float32)
    query.uns[key_added] = {"method": "classifier", "model": str(model.path), "label_key": model.config.label_key,
                            "threshold": float(threshold), "n_unassigned": int((assigned == UNASSIGNED).sum())}
    return assigned


def compare_predictions(true: pd.Series, predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per way of labelling the same cells (``predictions``: name -> labels): accuracy, macro F1 and the cells
    left unassigned, against the true labels (:func:`score_labelled`: cells without a true label left out)."""
    rows = []
    for name, predicted in predictions.items():
        scores = score_labelled(true, predicted)
        rows.append({"method": name, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                     "n_unassigned": scores["n_unassigned"]})
    return pd.DataFrame(rows)


# --- Scores --------------------------------------------------------------------------------------------------------


def type_order(true: np.ndarray, predicted: np.ndarray, order: list[str] | None = None) -> list[str]:
    """Every label in ``true`` and ``predicted``: ``order`` first, then the rest sorted, :data:`UNASSIGNED` last."""
    seen = set(map(str, true)) | set(map(str, predicted))
    labels = [str(v) for v in (order or []) if str(v) in seen]
    labels += sorted(seen - set(labels) - {UNASSIGNED})
    return labels + ([UNASSIGNED] if UNASSIGNED in seen else [])


def score(true: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy (unassigned counts as wrong), macro F1 over the true types, and how many were unassigned.

    Also the accuracy over the assigned cells, and the true types the predictions never contain (e.g.
    types absent from the reference).
    """
    from sklearn.metrics import f1_score

    true, predicted = np.asarray(true).astype(str), np.asarray(predicted).astype(str)
    if len(true) == 0:
        raise InputError("No query cell to score.")
    assigned = predicted != UNASSIGNED
    types = sorted(set(true))
    accuracy_assigned = float(np.mean(true[assigned] == predicted[assigned])) if assigned.any() else float("nan")
    return {"n_cells": int(len(true)), "accuracy": float(np.mean(true == predicted)),
            "macro_f1": float(f1_score(true, predicted, labels=types, average="macro", zero_division=0)),
            "n_unassigned": int((~assigned).sum()), "accuracy_assigned": accuracy_assigned,
            "types_never_predicted": [t for t in types if t not in set(predicted)]}


def score_labelled(true: pd.Series, predicted: np.ndarray) -> dict:
    """:func:`score` over the cells that have a true label (missing values in ``true`` left out)."""
    known = true.notna().to_numpy()
    return score(true.astype(str).to_numpy()[known], np.asarray(predicted)[known])


def confusion_table(true: np.ndarray, predicted: np.ndarray, order: list[str] | None = None) -> pd.DataFrame:
    """Cell counts: one row per true type, one column per predicted label, both in :func:`type_order`."""
    true, predicted = np.asarray(true).astype(str), np.asarray(predicted).astype(str)
    labels = type_order(true, predicted, order)
    table = pd.crosstab(pd.Categorical(true, categories=labels), pd.Categorical(predicted, categories=labels),
                        dropna=False)
    table = table.loc[[t for t in labels if t in set(true)]]
    table.index.name, table.columns.name = "true", "predicted"
    return table


def per_type_scores(true: np.ndarray, predicted: np.ndarray, order: list[str] | None = None) -> pd.DataFrame:
    """One row per true type: cells, recall (the type's accuracy), precision, F1 and how many were unassigned."""
    from sklearn.metrics import precision_recall_fscore_support

    true, predicted = np.asarray(true).astype(str), np.asarray(predicted).astype(str)
    types = [t for t in type_order(true, predicted, order) if t in set(true)]
    precision, recall, f1, support = precision_recall_fscore_support(true, predicted, labels=types, zero_division=0)
    unassigned = [int(np.sum((true == t) & (predicted == UNASSIGNED))) for t in types]
    return pd.DataFrame({"type": types, "n_cells": support, "recall": recall, "precision": precision, "f1": f1,
                         "n_unassigned": unassigned})


# --- Transfer within one dataset, and between two --------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceSplit:
    """The reference cells (labelled) and the query cells (the others) of a transfer within one dataset, by
    position, and a description of the reference (e.g. ``"donor in d1, d2"``)."""

    reference: np.ndarray
    query: np.ndarray
    description: str


def default_reference_values(values: list[str]) -> list[str]:
    """The values of an annotation offered as the reference at first: the first three quarters (at least one)."""
    return values[: max(1, (3 * len(values)) // 4)]


def reference_split(obs: pd.DataFrame, column: str | None = None, values: list[str] | None = None,
                    seed: int = 0) -> ReferenceSplit:
    """The reference: the cells whose ``obs[column]`` is one of ``values``; without a column, a fixed random half of
    the cells (``sccore.perturb.sample_cells`` with ``seed``). The query is every other cell."""
    n_cells = len(obs)
    if column is None:
        reference = np.zeros(n_cells, dtype=bool)
        reference[sample_cells(np.arange(n_cells), n_cells // 2, seed)] = True
        description = "a random half of the cells"
    else:
        values = list(values or [])
        reference = obs[column].astype(str).isin(values).to_numpy()
        description = f"{column} in {', '.join(values)}" if values else "no cell"
    return ReferenceSplit(np.flatnonzero(reference), np.flatnonzero(~reference), description)


def transfer_within(adata: ad.AnnData, label_key: str, use_rep: str, reference_cells: np.ndarray,
                    query_cells: np.ndarray, k: int = 15, params: IndexParams = IndexParams()) -> TransferResult:
    """:func:`transfer` of ``obs[label_key]`` from the cells at ``reference_cells`` to those at ``query_cells`` (e.g.
    a :class:`ReferenceSplit`'s), in ``obsm[use_rep]``, with no threshold (apply one with
    :meth:`TransferResult.assigned`)."""
    if len(reference_cells) == 0 or len(query_cells) == 0:
        raise InputError("The reference and the query both need cells: choose some, but not all, values.")
    embedding = np.asarray(adata.obsm[use_rep])
    reference = ad.AnnData(obs=adata.obs.iloc[reference_cells], obsm={use_rep: embedding[reference_cells]})
    query = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names[query_cells]), obsm={use_rep: embedding[query_cells]})
    return transfer(reference, query, label_key, use_rep, k=k, threshold=0.0, params=params)


def prepared_reference(adata: ad.AnnData, use_rep: str = "X_pca", model=None, device: str = "auto",
                       preprocess_params: PreprocessParams | None = None, pca_params: PCAParams = PCAParams(),
                       gene_id_key: str | None = None, library_size_key: str | None = None,
                       progress=lambda fraction, message: None) -> ad.AnnData:
    """A dataset of raw counts ready to be a reference in ``obsm[use_rep]`` (``adata`` is left as it is): processed
    (with ``preprocess_params``; None: :func:`sccore.pp.default_params`) and its PCA (``pca_params``) for ``X_pca``, or
    embedded with the loaded ``model`` (genes matched by ``gene_id_key``, library sizes from ``library_size_key``) for
    any other key."""
    from .embed import pca
    from .encode import encoder
    from .pp import default_params, preprocess

    if use_rep == "X_pca":
        processed = preprocess(adata, preprocess_params or default_params(adata))
        pca(processed, pca_params)
        return processed
    if model is None:
        raise InputError(f"Embedding a reference in {use_rep} needs the encoder's model: choose one on the Encoder "
                         "page, or use X_pca.")
    reference = adata.copy()
    encoder(reference, model, key_added=use_rep, device=device, library_size_key=library_size_key,
            gene_id_key=gene_id_key, progress=progress)
    return reference


def counts_query(adata: ad.AnnData) -> ad.AnnData:
    """A processed dataset as a query to map: its raw counts (``sccore.io.counts_matrix``), ``obs`` and genes."""
    return ad.AnnData(counts_matrix(adata), obs=adata.obs.copy(), var=pd.DataFrame(index=adata.var_names))


@dataclass(frozen=True)
class MappedTransfer:
    """A transfer onto another dataset: the query's ``obs`` (before the labels were added), its embedding in the
    reference's space, the mapping report (:func:`map_query`), the transfer (no threshold) and the reference's
    labels in their own order."""

    obs: pd.DataFrame
    embedding: np.ndarray
    report: dict
    result: TransferResult
    order: list[str]


def mapped_transfer(reference: ad.AnnData, query: ad.AnnData, label_key: str, use_rep: str = "X_pca", k: int = 15,
                    model=None, gene_id_key: str | None = None, library_size_key: str | None = None,
                    params: IndexParams = IndexParams(), key_added: str = "predicted_cell_type",
                    threshold: float = 0.0, progress=lambda fraction, message: None) -> MappedTransfer:
    """Map ``query`` (raw counts) into the reference's ``obsm[use_rep]`` (:func:`map_query`, in place), then
    :func:`transfer` the reference's ``label_key`` to it (``query.obs[key_added]``, unassigned below ``threshold``;
    the result itself is before any threshold). ``progress`` reports the mapping, then the vote (at 1)."""
    report = map_query(reference, query, use_rep, model=model, gene_id_key=gene_id_key or None,
                       library_size_key=library_size_key, progress=progress)
    obs = query.obs.copy()
    progress(1.0, f"voting ({k} nearest reference cells)")
    result = transfer(reference, query, label_key, use_rep, key_added=key_added, k=k, threshold=threshold,
                      params=params)
    return MappedTransfer(obs, np.asarray(query.obsm[use_rep]), report, result, label_order(reference.obs[label_key]))
