"""The ``transfer`` task: label transfer from a labelled reference to query cells mapped into its space."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import anndata as ad

from ..embed import PCAParams
from ..errors import InputError
from .base import (Limits, Progress, QualityControl, ShouldStop, check_stop, never, open_counts, quiet, require,
                   stoppable, write_h5ad)

REPRESENTATIONS = ("X_pca", "X_encoder")


@dataclass(frozen=True, kw_only=True)
class TransferParams(QualityControl):
    """Parameters of :func:`run`: the ``reference`` (raw counts, or a file from ``embed``, whose PCA is reused) and its
    ``label_key``, the ``query`` (raw counts), the space they meet in (``use_rep``, with ``model`` for the encoder),
    the vote (``k`` neighbours, ``threshold``), and where the labels go (``output``, ``obs[key_added]``)."""

    task: ClassVar[str] = "transfer"
    limits: ClassVar[Limits] = {"k": (1, 1000), "threshold": (0, 1)}
    reference: str
    query: str
    label_key: str
    output: str = ""
    use_rep: str = "X_pca"
    model: str | None = None
    key_added: str = "predicted_cell_type"
    k: int = 15
    threshold: float = 0.5
    gene_id_key: str | None = None
    query_label_key: str | None = None
    n_comps: int = PCAParams.n_comps
    device: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.use_rep in REPRESENTATIONS, f"use_rep is one of {', '.join(REPRESENTATIONS)}, not "
                                                 f"'{self.use_rep}'.")


@dataclass
class TransferOutcome:
    """What :func:`run` did: the labelled ``query``, how it was mapped (``mapping``: genes matched, library sizes),
    the vote's ``warnings``, the scores of ``obs[key_added]`` against the query's true labels (``true_key``; empty
    without), and ``notes`` on what was computed for the reference. With a fine-tuned model's classifier,
    ``obs[key_added]`` holds its labels and ``knn_key`` names the column of the kNN vote, scored in ``knn_scores``."""

    query: ad.AnnData
    mapping: dict
    warnings: list[str]
    true_key: str | None
    scores: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    knn_key: str | None = None
    knn_scores: dict = field(default_factory=dict)


def _reference(stored: ad.AnnData, params: TransferParams, model, progress: Progress, notes: list[str]) -> ad.AnnData:
    """The reference with ``obsm[use_rep]``: ``stored`` (the file as read) when it can be reused, else the file's raw
    counts made one by :func:`sccore.transfer.prepared_reference` (PCA through these quality-control filters, or the
    encoder in ``model``)."""
    from ..transfer import has_pca_projection, prepared_reference

    if params.use_rep == "X_pca":
        if has_pca_projection(stored):
            return stored
        notes.append("The reference holds no sccore PCA with loadings: computed one (quality control, normalisation, "
                     "PCA).")
    else:
        embedded_with = stored.uns.get(params.use_rep, {}).get("model")
        if (params.use_rep in stored.obsm and embedded_with
                and Path(embedded_with).resolve() == Path(model.path).resolve()):
            return stored
        notes.append(f"Embedded the reference with {model.path}.")
    raw = open_counts(params.reference, params.library_size_key)
    return prepared_reference(raw, params.use_rep, model, params.device, params.preprocess_params(raw),
                              PCAParams(n_comps=params.n_comps), params.gene_id_key, params.library_size_key,
                              progress=lambda f, m: progress(0.4 * f, f"reference: {m}"))


def _model(stored: ad.AnnData, params: TransferParams):
    """The loaded encoder for ``use_rep="X_encoder"``: ``model``, else the one the reference ``stored`` names."""
    from ..device import resolve_device
    from ..models import load_model

    if params.use_rep != "X_encoder":
        return None
    folder = params.model or stored.uns.get("X_encoder", {}).get("model")
    require(bool(folder) and Path(folder).is_dir(), "--use-rep X_encoder needs --model DIR: the encoder folder that "
                                                    "embeds both the reference and the query.")
    return load_model(folder, resolve_device(params.device))


def _check_genes(adata: ad.AnnData, model, which: str, gene_id_key: str | None) -> None:
    """:class:`InputError` naming the dataset (``which``) and the fix when too few of its genes are in the model's
    vocabulary."""
    from ..tokenize import match_genes

    try:
        match_genes(adata.var, model.vocabulary, gene_id_key)
    except InputError as error:
        raise InputError(f"The {which} does not fit the model {model.path.name}: {error} Use a model trained (or "
                         "fine-tuned) on data that measures these genes.") from error


def run(params: TransferParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> TransferOutcome:
    """Map the query into the reference's space (never refitted on it), give each query cell the similarity-weighted
    vote of its ``k`` nearest reference cells, score it where the query has true labels, and write the query with
    ``obs[key_added]`` and ``obs[key_added + '_confidence']`` to ``params.output``.

    With a model fine-tuned on ``label_key`` (:func:`sccore.transfer.has_classifier_for`), ``obs[key_added]`` holds
    its classifier's label (and ``_confidence`` the label's probability) and the vote goes to
    ``obs[key_added + '_knn']`` (and ``_knn_confidence``); both are scored."""
    from ..io import read_h5ad
    from ..transfer import (classifier_labels, has_classifier_for, mapped_transfer, reference_labels, score,
                            write_classifier_labels)

    output = params.output_path
    stored = read_h5ad(params.reference)
    reference_labels(stored.obs, params.label_key)  # bad keys fail before anything is computed
    query = open_counts(params.query)
    true_key = params.query_label_key or (params.label_key if params.label_key in query.obs.columns else None)
    require(not true_key or true_key in query.obs.columns, f"The query's obs has no column '{true_key}' to score "
                                                           f"against; columns: {', '.join(map(str, query.obs.columns))}.")
    model = _model(stored, params)
    notes: list[str] = []
    if model is not None:
        _check_genes(stored, model, "reference", params.gene_id_key)
        _check_genes(query, model, "query", params.gene_id_key)
    with_classifier = has_classifier_for(model, params.label_key)
    if model is not None and model.config.labels and not with_classifier:
        notes.append(f"The model's classifier predicts obs['{model.config.label_key}'], not '{params.label_key}': "
                     "the kNN vote alone labels the query.")
    reference = _reference(stored, params, model, progress, notes)
    check_stop(should_stop)
    progress(0.4, "mapping the query onto the reference")
    knn_key = f"{params.key_added}_knn" if with_classifier else params.key_added
    report = stoppable(progress, should_stop)
    mapped = mapped_transfer(reference, query, params.label_key, params.use_rep, params.k, model, params.gene_id_key,
                             key_added=knn_key, threshold=params.threshold,
                             progress=lambda f, m: report(0.4 + 0.5 * f, m))
    mapping = mapped.report
    if with_classifier:
        labels, probability = classifier_labels(model, query.obsm[params.use_rep], mapping["pooling"], mapping["layer"])
        write_classifier_labels(query, model, labels, probability, params.key_added, params.threshold)
    scores = score(query.obs[true_key], query.obs[params.key_added]) if true_key else {}
    knn_scores = score(query.obs[true_key], query.obs[knn_key]) if true_key and with_classifier else {}
    write_h5ad(query, output)
    return TransferOutcome(query, mapping, list(mapped.result.warnings), true_key, scores, notes,
                           knn_key if with_classifier else None, knn_scores)
