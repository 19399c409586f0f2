"""Label transfer within one dataset (the reference/query split) and onto another dataset mapped into its space."""

import numpy as np
import pandas as pd
import pytest

from sccore import InputError
from sccore.embed import pca
from sccore.io import standardise
from sccore.neighbors import IndexParams
from sccore.pp import PreprocessParams, preprocess
from sccore.transfer import (counts_query, default_reference_values, knn_transfer, mapped_transfer,
                             neighbour_table, prepared_reference, reference_split, score_labelled, transfer_within)
from tests.conftest import make_counts


@pytest.fixture(scope="module")
def processed():
    """300 synthetic cells processed with PCA, with a donor column."""
    adata = preprocess(standardise(make_counts(n_cells=300)), PreprocessParams(min_genes=0, min_cells=0))
    pca(adata)
    adata.obs["donor"] = pd.Categorical([f"d{i % 4}" for i in range(adata.n_obs)])
    return adata


def test_the_split_by_values_and_the_random_half(processed):
    split = reference_split(processed.obs, "donor", ["d0", "d2"])
    assert split.description == "donor in d0, d2"
    assert set(processed.obs["donor"].iloc[split.reference]) == {"d0", "d2"}
    assert len(split.reference) + len(split.query) == processed.n_obs and not np.intersect1d(split.reference,
                                                                                           split.query).size
    half = reference_split(processed.obs)
    assert half.description == "a random half of the cells" and len(half.reference) == processed.n_obs // 2
    np.testing.assert_array_equal(half.reference, reference_split(processed.obs).reference)  # always the same half
    assert reference_split(processed.obs, "donor", []).description == "no cell"
    assert default_reference_values(["a", "b", "c", "d"]) == ["a", "b", "c"] and default_reference_values(["a"]) == ["a"]


def test_transfer_within_votes_from_the_reference_cells_only(processed):
    split = reference_split(processed.obs, "donor", ["d0", "d1"])
    result = transfer_within(processed, "cell_type", "X_pca", split.reference, split.query, k=10)
    embedding = processed.obsm["X_pca"]
    labels = processed.obs["cell_type"].astype(str).to_numpy()
    expected = knn_transfer(embedding[split.reference], labels[split.reference], embedding[split.query], 10)
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_allclose(result.confidence, expected.confidence)
    assert (result.labels == labels[split.query]).mean() > 0.9
    with pytest.raises(InputError, match="both need cells"):
        empty = reference_split(processed.obs, "donor", [])
        transfer_within(processed, "cell_type", "X_pca", empty.reference, empty.query)


def test_mapped_transfer_labels_another_datasets_cells_in_the_references_pca(processed):
    other = make_counts(n_cells=300)  # the same cell types (marker genes) as the query
    other.X = other.X.toarray() + 1  # every gene detected: the default filters keep every cell
    other = standardise(other)
    reference = prepared_reference(other, "X_pca")
    assert "X_pca" in reference.obsm and "X_pca_loadings" in reference.varm
    query = counts_query(processed)
    assert query.n_vars == processed.n_vars and list(query.obs["cell_type"]) == list(processed.obs["cell_type"])
    mapped = mapped_transfer(reference, query, "cell_type", "X_pca", k=10, params=IndexParams())
    assert mapped.embedding.shape == (processed.n_obs, reference.obsm["X_pca"].shape[1])
    assert mapped.report["genes_matched"] == mapped.report["genes_used"]
    assert "predicted_cell_type" not in mapped.obs and mapped.order == ["type_0", "type_1", "type_2"]
    assert (mapped.result.labels == processed.obs["cell_type"].astype(str).to_numpy()).mean() > 0.8
    with pytest.raises(InputError, match="needs the encoder's model"):
        prepared_reference(other, "X_encoder")


def test_the_neighbour_table_names_the_cells_and_scores_leave_out_cells_without_a_label(processed):
    neighbours = pd.DataFrame({"rank": [1, 2], "position": [4, 0], "euclidean_distance": [0.1, 0.2],
                               "cosine_similarity": [0.9, 0.8]})
    table = neighbour_table(neighbours, processed.obs, ["cell_type"])
    assert list(table.columns) == ["rank", "cell", "euclidean_distance", "cosine_similarity", "cell_type"]
    assert list(table["cell"]) == [processed.obs_names[4], processed.obs_names[0]]
    assert list(table["cell_type"]) == list(processed.obs["cell_type"].astype(str).iloc[[4, 0]])
    true = pd.Series(["a", None, "b", "b"])
    scores = score_labelled(true, np.array(["a", "a", "b", "a"]))
    assert scores["n_cells"] == 3 and scores["accuracy"] == pytest.approx(2 / 3)
