"""The Search & transfer page's fine-tuned classifier: when the encoder's model was fine-tuned on the labels being
transferred (``python -m sccore finetune``), its classifier's label for each query cell beside the kNN vote, and both
accuracies where the query has true labels (``sccore.transfer``'s classifier functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import cached
from dashboard.explain import column_help
from dashboard.widgets import plain
from sccore import InputError
from sccore.transfer import UNASSIGNED, classifier_labels, compare_predictions, has_classifier_for
from sccore.workflow import Analysis


def classifier_for(analysis: Analysis, label_key: str | None):
    """The analysis's encoder model (loaded) when it has a classifier for ``obs[label_key]``, else None."""
    folder = analysis.params.encoder_model
    if not folder or not label_key:
        return None
    model = cached.loaded_model(folder, analysis.params.encoder_device)
    return model if has_classifier_for(model, label_key) else None


def show_if_fine_tuned(analysis: Analysis, rep: str, label_key: str | None, embedding: np.ndarray, embedded_as: dict,
                       vote: np.ndarray, vote_confidence: np.ndarray, true: pd.Series | None, cells: pd.Index,
                       threshold: float, key: str) -> None:
    """:func:`show_beside_vote` when the transfer ran on the encoder's embedding (``rep``) and its model was
    fine-tuned on ``obs[label_key]``; nothing otherwise."""
    if rep == "X_encoder" and (model := classifier_for(analysis, label_key)) is not None:
        show_beside_vote(model, embedding, embedded_as, vote, vote_confidence, true, cells, threshold, key)


def show_beside_vote(model, embedding: np.ndarray, embedded_as: dict, vote: np.ndarray, vote_confidence: np.ndarray,
                     true: pd.Series | None, cells: pd.Index, threshold: float, key: str) -> None:
    """The classifier's label and probability for the query cells (``embedding``: theirs, by ``model``, pooled as
    ``embedded_as`` says) beside the kNN ``vote`` and its confidence, the same ``threshold`` making both
    'unassigned'; with ``true`` labels, both accuracies. ``key`` prefixes the widgets' keys."""
    try:
        labels, probability = classifier_labels(model, embedding, str(embedded_as.get("pooling", "cell")),
                                                int(embedded_as.get("layer", -1)))
    except InputError as error:
        st.info(str(error))
        return
    labels = np.where(probability < threshold, UNASSIGNED, labels.astype(object)).astype(str)
    st.markdown(f"**The classifier of {plain(model.path.name)} beside the kNN vote**")
    st.caption(f"This model was fine-tuned to predict obs['{model.config.label_key}'] (`python -m sccore finetune`): "
               "its classification head labels each query cell from the cell's embedding alone, with the label's "
               "probability as its confidence (below the threshold: unassigned). Where the cells it was fine-tuned on "
               "are among the query cells, its accuracy here is optimistic.")
    if true is not None and true.notna().any():
        scores = compare_predictions(true, {"classifier": labels, "kNN vote": vote})
        st.dataframe(scores, hide_index=True, key=f"{key}_classifier_scores",
                     column_config=column_help(scores, {"accuracy": "%.3f", "macro_f1": "%.3f"}))
    table = pd.DataFrame({"cell": cells.astype(str), "classifier": labels, "classifier_probability": probability,
                          "knn_vote": np.asarray(vote).astype(str), "knn_confidence": vote_confidence})
    if true is not None:
        table["true"] = true.astype(str).to_numpy()
    st.dataframe(table, hide_index=True, key=f"{key}_classifier_cells", width="stretch",
                 column_config=column_help(table, {"classifier_probability": "%.3f", "knn_confidence": "%.3f"}))
