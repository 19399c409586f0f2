"""The one rule for annotation columns: which are labels or batches, their order, and the guesses pages make."""

import pandas as pd
import pytest

from sccore.annotations import (annotation_columns, annotation_order, batch_candidates, guess_batch_column,
                                guess_column, label_candidates, looks_like)
from tests.conftest import make_counts


def test_names_and_prefixes_play_a_role_case_insensitively():
    assert looks_like("Cell_Type", "label") and looks_like("cell_type_fine", "label") and looks_like("leiden", "label")
    assert looks_like("donor_id", "batch") and looks_like("sample_id", "batch") and looks_like("Batch", "batch")
    assert not looks_like("phase", "batch") and not looks_like("phase", "label")
    with pytest.raises(ValueError, match="Unknown annotation role"):
        looks_like("batch", "donors")


def test_a_guess_prefers_the_earlier_name_then_an_exact_match_then_the_given_order():
    assert guess_column(["louvain", "labels", "cell_type_fine", "cell_type"], "label") == "cell_type"
    assert guess_column(["louvain", "labels"], "label") == "labels"
    assert guess_column(["phase", "donor", "sample"], "batch") == "sample"
    assert guess_column(["phase", "louvain"], "batch") is None


def test_annotations_come_labels_first_then_batches_then_the_rest_by_name():
    order = annotation_order(["zeta", "perturbation", "donor_id", "phase", "batch", "louvain", "cell_type"])
    assert order == ["cell_type", "louvain", "batch", "donor_id", "perturbation", "phase", "zeta"]


def test_batch_candidates_add_single_valued_text_columns_and_the_guess_falls_back_to_the_fewest_values():
    adata = make_counts(n_cells=60)
    adata.obs["run"] = pd.Categorical(["r1"] * adata.n_obs)
    adata.obs["phase"] = pd.Categorical(["G1", "S", "G2M"] * 20)
    adata.obs["cluster"] = pd.Categorical([str(i % 6) for i in range(adata.n_obs)])
    assert annotation_columns(adata) == ["cell_type", "batch", "cluster", "phase"]
    candidates = batch_candidates(adata)
    assert candidates == ["cell_type", "batch", "cluster", "phase", "run"]
    assert guess_batch_column(adata.obs, candidates[1:]) == "batch"
    assert guess_batch_column(adata.obs, ["cluster", "phase", "run"]) == "run"  # a batch-like name wins
    assert guess_batch_column(adata.obs, ["cluster", "phase"]) == "phase"  # else the fewest values, at least two
    assert guess_batch_column(adata.obs, []) is None


def test_label_candidates_are_the_annotations_then_every_other_column():
    adata = make_counts(n_cells=30)
    adata.obs["n_counts"] = 1.0
    adata.obs["louvain"] = pd.Categorical([str(i % 3) for i in range(adata.n_obs)])
    assert label_candidates(adata) == ["cell_type", "louvain", "batch", "n_counts"]
