"""The plain-language help sentences and the honest notes shown wherever the encoder sits beside a baseline."""

import pytest

from sccore.glossary import HELP, agreement_note, baseline_note, help_for
from sccore.metrics import AGGREGATES, BATCH_METRICS, BIO_METRICS

SHOWN_COLUMNS = ["mean_cosine", "mean_shift", "mean_shift_norm", "p_value", "fdr", "goal_alignment",
                 "goal_cosine_gain", "n_cells", "n_not_expressed", "estimate", "spearman_rho", "shared_genes",
                 "top_overlap", "euclidean_distance", "cosine_similarity", "rank", "recall", "precision", "f1",
                 "accuracy", "macro_f1", "predicted_cell_type_confidence", "knn_agreement", "cells_left",
                 "genes_left", "score", "logfoldchange", "pvalue", "pct_in", "pct_out", "resolution", "n_clusters",
                 *BIO_METRICS, *BATCH_METRICS, *AGGREGATES]


@pytest.mark.parametrize("column", SHOWN_COLUMNS)
def test_every_number_the_pages_show_has_one_short_sentence(column):
    sentence = help_for(column)
    assert sentence and sentence.endswith(".") and len(sentence) < 200
    assert sentence.count(". ") == 0  # one sentence


def test_help_for_unknown_columns_is_none():
    assert help_for("cell_type") is None and help_for("methods") is None
    assert all(isinstance(text, str) and text for text in HELP.values())


def test_baseline_note_says_when_the_baseline_does_better_or_as_well():
    better = baseline_note("the scIB total score", 0.60, {"PCA baseline": 0.70})
    assert "PCA baseline does better than the encoder" in better and "0.700 vs 0.600" in better
    assert "does as well as the encoder" in baseline_note("accuracy", 0.80, {"PCA baseline": 0.795})
    assert "best" not in baseline_note("accuracy", 0.80, {"PCA baseline": 0.70, "Linear baseline": 0.81})
    assert "Linear baseline does as well" in baseline_note("accuracy", 0.80, {"PCA baseline": 0.7,
                                                                              "Linear baseline": 0.805})


def test_baseline_note_when_the_encoder_is_clearly_better_or_a_score_is_missing():
    assert baseline_note("accuracy", 0.90, {"PCA baseline": 0.80}) == ("The encoder does better than the PCA "
                                                                       "baseline on accuracy (0.900 vs 0.800).")
    assert baseline_note("accuracy", float("nan"), {"PCA baseline": 0.8}) == ""
    assert baseline_note("accuracy", 0.8, {"PCA baseline": float("nan")}) == ""


def test_agreement_note_reads_the_rank_correlation_honestly():
    assert "adds little beyond co-expression" in agreement_note(0.85, 40)
    assert "partly agree" in agreement_note(0.5, 40) and "rough estimate" in agreement_note(0.5, 10)
    assert "hypotheses to test" in agreement_note(0.05, 40)
    assert agreement_note(float("nan"), 40) == ""
