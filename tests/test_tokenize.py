import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sccore import InputError
from sccore.tokenize import CLS_ID, Vocabulary, expression_bins, match_genes, nonzero_medians, tokenize


def test_rank_value_encoding_orders_by_median_scaled_expression_and_drops_zeros():
    # genes A, B, C, D -> tokens 3, 4, 5, 6; medians make B's 4 counts outrank A's 8 counts
    counts = sp.csr_matrix(np.array([[8.0, 4.0, 0.0, 1.0]]))
    medians = np.array([1, 1, 1, 4.0, 1.0, 1.0, 0.1])
    cells = tokenize(counts, np.array([13.0]), np.array([3, 4, 5, 6]), medians, max_length=10)
    # values: A 8/4=2, B 4/1=4, D 1/0.1=10 -> D, B, A; C (zero) dropped
    assert cells[0].tokens.tolist() == [6, 4, 3]
    truncated = tokenize(counts, np.array([13.0]), np.array([3, 4, 5, 6]), medians, max_length=3, add_cls=True)
    assert truncated[0].tokens.tolist() == [CLS_ID, 6, 4]


def test_genes_outside_the_vocabulary_are_ignored():
    counts = sp.csr_matrix(np.array([[5.0, 3.0]]))
    cells = tokenize(counts, np.array([8.0]), np.array([-1, 3]), np.ones(4), max_length=8)
    assert cells[0].tokens.tolist() == [3]


def test_expression_bins_are_per_cell_quantiles():
    bins = expression_bins(np.array([10.0, 5.0, 1.0, 0.5]), 4)
    assert bins.tolist() == [4, 3, 2, 1]
    assert expression_bins(np.array([]), 4).size == 0


def test_nonzero_medians():
    counts = sp.csr_matrix(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]))
    medians = nonzero_medians(counts, np.array([10.0, 10.0, 10.0]), target_sum=10)
    assert medians.tolist() == [2.0, 2.0]


def test_match_genes_by_symbol_and_by_id_and_refuse_too_few():
    vocabulary = Vocabulary([f"G{i}" for i in range(100)], [f"ENSG{i:05d}" for i in range(100)])
    var = pd.DataFrame({"gene_ids": [f"ENSG{i:05d}.3" for i in range(50)]}, index=[f"G{i}" for i in range(50)])
    ids, report = match_genes(var, vocabulary)
    assert report["matched"] == 50 and ids[0] == 3
    renamed = var.set_axis([f"X{i}" for i in range(50)])
    ids, report = match_genes(renamed, vocabulary, gene_id_key="gene_ids")
    assert report["matched"] == 50 and report["by"] == "gene ID"
    with pytest.raises(InputError, match="Ensembl IDs in a column"):
        match_genes(renamed, vocabulary)


def test_vocabulary_round_trip(tmp_path):
    vocabulary = Vocabulary(["A", "B"], ["E1", "E2"])
    vocabulary.save(tmp_path / "vocab.json")
    again = Vocabulary.load(tmp_path / "vocab.json")
    assert again.index == {"A": 3, "B": 4} and len(again) == 5
