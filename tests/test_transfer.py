"""Cell search, reference mapping (PCA loadings, encoder) and label transfer, in the library and the CLI."""

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sccore import InputError
from sccore.embed import pca
from sccore.io import standardise
from sccore.neighbors import Neighbors
from sccore.pp import PreprocessParams, preprocess
from sccore.transfer import (UNASSIGNED, cell_positions, compositions, confusion_table, gaussian_weights, knn_transfer,
                             map_query, match_reference_genes, per_type_scores, project_query_pca, reference_labels,
                             score, search_index, similar_cells, transfer, vote)
from tests.conftest import ROOT, make_counts

NO_FILTERS = PreprocessParams(qc_rule="thresholds", min_genes=0, min_cells=0)


@pytest.fixture(scope="module")
def raw():
    """400 standardised synthetic cells (3 types, 2 batches) with Ensembl-like IDs in var['gene_ids']."""
    adata = standardise(make_counts(n_cells=400))
    adata.var["gene_ids"] = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    return adata


@pytest.fixture(scope="module")
def reference(raw):
    """The first 300 cells, processed with PCA (20 components)."""
    from sccore.embed import PCAParams

    processed = preprocess(raw[:300].copy(), NO_FILTERS)
    pca(processed, PCAParams(n_comps=20))
    return processed


def test_similar_cells_of_one_cell_are_mostly_its_type_nearest_first(reference):
    embedding = reference.obsm["X_pca"]
    table = similar_cells(embedding, np.array([0]), k=10)
    assert list(table["rank"]) == list(range(1, 11)) and 0 not in set(table["position"])
    assert np.all(np.diff(table["euclidean_distance"]) >= -1e-5)
    types = reference.obs["cell_type"].to_numpy()
    assert np.mean(types[table["position"]] == types[0]) >= 0.8
    cosine = similar_cells(embedding, np.array([0]), k=10, metric="cosine", index=search_index(embedding, "cosine"))
    assert np.all(np.diff(cosine["cosine_similarity"]) <= 1e-5) and cosine["cosine_similarity"].iloc[0] > 0.5
    with_self = similar_cells(embedding, np.array([0]), k=3, exclude_query=False)
    assert with_self["position"].iloc[0] == 0 and with_self["euclidean_distance"].iloc[0] < 1e-4


def test_a_group_is_searched_by_its_mean_without_its_own_cells(reference):
    group = np.flatnonzero(reference.obs["batch"] == "b1")[:40]
    table = similar_cells(reference.obsm["X_pca"], group, k=25)
    assert len(table) == 25 and not set(table["position"]) & set(group)
    tables = compositions(reference.obs, table["position"].to_numpy(), ["cell_type", "batch"])
    assert set(tables) == {"cell_type", "batch"} and tables["cell_type"]["n_cells"].sum() == 25


def test_cells_are_found_by_id_with_a_suggestion_for_a_typo(reference):
    assert list(cell_positions(reference.obs_names, ["cell_3", "cell_1"])) == [3, 1]
    with pytest.raises(InputError, match="Did you mean cell_12"):
        cell_positions(reference.obs_names, ["cell_12x"])


def test_query_cells_of_the_reference_map_onto_their_own_embedding(raw, reference):
    query = raw[:300][::7].copy()[:, ::-1].copy()  # the reference's own cells, genes in reverse order
    embedding, report = project_query_pca(reference, query)
    rows = reference.obs_names.get_indexer(query.obs_names)
    np.testing.assert_allclose(embedding, reference.obsm["X_pca"][rows], atol=1e-3)
    used = np.any(reference.varm["X_pca_loadings"] != 0, axis=1)  # genes expressed in the reference
    assert report["genes_matched"] == report["genes_used"] == used.sum() > 0.95 * reference.n_vars
    assert report["library_size"] == "the sum of the query's counts"


def test_new_cells_map_next_to_reference_cells_of_their_type(raw, reference):
    query = raw[300:].copy()
    report = map_query(reference, query, "X_pca")
    assert query.obsm["X_pca"].shape == (100, 20) and query.uns["X_pca"]["mapped_onto_reference"]
    transfer(reference, query, "cell_type", threshold=0.0)
    assert score(query.obs["cell_type"].astype(str), query.obs["predicted_cell_type"])["accuracy"] > 0.95
    assert report["matched_by"] == "symbol"


def test_missing_genes_count_as_zero_and_are_reported(raw, reference):
    query = raw[300:, 40:].copy()  # the query lacks the first 40 genes
    embedding, report = project_query_pca(reference, query)
    assert report["genes_matched"] == np.any(reference.varm["X_pca_loadings"] != 0, axis=1)[40:].sum()
    full, _ = project_query_pca(reference, raw[300:].copy())
    assert np.corrcoef(embedding[:, 0], full[:, 0])[0, 1] > 0.9


def test_genes_match_by_ensembl_id_and_no_shared_gene_names_the_fix(raw, reference):
    query = raw[300:].copy()
    query.var_names = [f"{gid}.7" for gid in query.var["gene_ids"]]  # IDs with a version as names
    query.var["gene_ids"] = list(query.var_names)
    with pytest.raises(InputError, match="shares no genes.*gene_ids"):
        project_query_pca(reference, query)
    embedding, report = project_query_pca(reference, query, gene_id_key="gene_ids")
    expected, _ = project_query_pca(reference, raw[300:].copy())
    np.testing.assert_allclose(embedding, expected, atol=1e-4)
    assert report["matched_by"] == "var['gene_ids']"
    with pytest.raises(InputError, match="no column 'ensembl'"):
        match_reference_genes(reference.var, query.var, "ensembl")
    with pytest.raises(InputError, match="shares only 5 genes"):
        project_query_pca(reference, raw[300:, :5].copy())


def test_weighted_vote_confidence_and_unassigned_on_a_hand_made_example():
    labels = np.array(["B", "B", "T", "T", "T"])
    neighbors = Neighbors(indices=np.array([[0, 2, 3], [0, 1, 2], [2, 0, 1]]),
                          distances=np.array([[0.1, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    weights = gaussian_weights(neighbors.distances)
    np.testing.assert_allclose(weights[0], np.exp(-(np.array([0.1, 1.0, 1.0]) / 0.7) ** 2))
    np.testing.assert_allclose(weights[1:], [[np.exp(-1.0)] * 3, [1.0] * 3])  # equal distances: equal weights
    predicted, confidence = vote(neighbors, labels)
    assert list(predicted) == ["B", "B", "B"]  # the near B outweighs two far Ts; equal weights: majority
    np.testing.assert_allclose(confidence, [weights[0, 0] / weights[0].sum(), 2 / 3, 2 / 3], rtol=1e-5)
    assert confidence[0] > 0.75
    reference = np.array([[0.0], [0.2], [5.0], [5.2], [5.1]])
    result = knn_transfer(reference, labels, np.array([[0.1], [2.6], [5.05]]), k=5)
    assert result.labels[0] == "B" and result.labels[2] == "T"
    assigned = result.assigned(0.7)
    assert assigned[1] == UNASSIGNED and result.confidence[1] < 0.7 and assigned[0] == "B"
    assert list(result.assigned(0.0)) == list(result.labels)


def test_transfer_writes_labels_confidence_and_parameters(raw, reference):
    types = raw.obs["cell_type"].to_numpy()
    first, second = np.flatnonzero(types == "type_0")[:20], np.flatnonzero(types == "type_1")[:20]
    doublets = ad.AnnData(raw.X[first] + raw.X[second], var=raw.var,
                          obs=pd.DataFrame(index=[f"doublet_{i}" for i in range(20)]))
    query = ad.concat([raw[300:], doublets], merge="same")
    map_query(reference, query)
    transfer(reference, query, "cell_type", key_added="predicted", k=7, threshold=0.9)
    assert {"predicted", "predicted_confidence"} <= set(query.obs.columns)
    assert query.obs["predicted"].cat.categories[-1] == UNASSIGNED
    confidence = query.obs["predicted_confidence"]
    assert confidence.between(0, 1).all() and confidence[:100].median() > confidence[100:].median()
    params = query.uns["predicted"]
    assert params["k"] == 7 and params["threshold"] == 0.9
    assert params["n_unassigned"] == (confidence < 0.9).sum() > 0


def test_bad_labels_are_refused_or_warned_about(reference):
    obs = reference.obs.copy()
    with pytest.raises(InputError, match="no column 'celltype'.*cell_type"):
        reference_labels(obs, "celltype")
    obs["one"] = "T cell"
    with pytest.raises(InputError, match="at least 2 labels"):
        reference_labels(obs, "one")
    obs["name"] = obs.index
    with pytest.raises(InputError, match="identifier"):
        reference_labels(obs, "name")
    obs["rare"] = np.where(np.arange(len(obs)) == 0, "doublet", obs["cell_type"].astype(str))
    obs.loc[obs.index[1], "rare"] = np.nan
    labels, has_label, warnings = reference_labels(obs, "rare")
    assert not has_label[1] and has_label.sum() == len(obs) - 1
    assert any("single reference cell (doublet)" in w for w in warnings)
    assert any("no rare" in w for w in warnings)


def test_scores_and_confusion_table_ordered_by_type():
    true = np.array(["T", "T", "B", "B", "NK", "NK"])
    predicted = np.array(["T", "B", "B", "B", UNASSIGNED, "NK"])
    result = score(true, predicted)
    assert result["accuracy"] == pytest.approx(4 / 6) and result["n_unassigned"] == 1
    assert result["accuracy_assigned"] == pytest.approx(4 / 5)
    table = confusion_table(true, predicted, order=["T", "B", "NK"])
    assert list(table.index) == ["T", "B", "NK"] and list(table.columns) == ["T", "B", "NK", UNASSIGNED]
    assert table.loc["T", "B"] == 1 and table.to_numpy().sum() == 6
    per_type = per_type_scores(true, predicted, order=["T", "B", "NK"])
    assert list(per_type["type"]) == ["T", "B", "NK"]
    assert per_type.set_index("type").loc["NK", "n_unassigned"] == 1
    assert result["macro_f1"] == pytest.approx(per_type["f1"].mean())


# --- command line ---------------------------------------------------------------------------------------------------


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sccore", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transfer")
    adata = make_counts(n_cells=400)
    adata[:300].copy().write_h5ad(folder / "reference.h5ad")
    query = adata[300:].copy()
    query.write_h5ad(folder / "query.h5ad")
    renamed = query.copy()
    renamed.var_names = [f"ENSG{i:011d}" for i in range(renamed.n_vars)]
    renamed.write_h5ad(folder / "renamed.h5ad")
    return folder


def test_cli_transfer_with_pca_writes_the_issue_keys_and_prints_scores(files):
    out = files / "out.h5ad"
    result = run_cli("transfer", "--reference", files / "reference.h5ad", "--query", files / "query.h5ad",
                     "--label-key", "cell_type", "--use-rep", "X_pca", "-o", out, "--min-genes", "0")
    assert result.returncode == 0, result.stderr
    labelled = ad.read_h5ad(out)
    assert labelled.obs["predicted_cell_type"].astype(str).str.startswith("type_").mean() > 0.9
    assert labelled.obs["predicted_cell_type_confidence"].between(0, 1).all()
    assert labelled.obsm["X_pca"].shape == (100, 50) and labelled.uns["predicted_cell_type"]["k"] == 15
    accuracy = float(result.stdout.split("accuracy ")[1].split(",")[0])
    assert accuracy > 0.9 and "macro F1" in result.stdout
    # the reference written by `embed` is reused as it is: the same labels
    embedded = files / "embedded.h5ad"
    assert run_cli("embed", files / "reference.h5ad", "-o", embedded, "--min-genes", "0").returncode == 0
    again = run_cli("transfer", "--reference", embedded, "--query", files / "query.h5ad", "--label-key", "cell_type",
                    "-o", files / "again.h5ad")
    assert again.returncode == 0, again.stderr
    assert "computing" not in again.stderr
    reused = ad.read_h5ad(files / "again.h5ad").obs["predicted_cell_type"]
    assert list(reused) == list(labelled.obs["predicted_cell_type"])


@pytest.mark.parametrize("args, message", [
    (["--label-key", "celltype"], "no column 'celltype'"),
    (["--label-key", "cell_type", "--query-label-key", "truth"], "no column 'truth'"),
])
def test_cli_bad_label_keys_exit_2_with_one_line(files, args, message):
    result = run_cli("transfer", "--reference", files / "reference.h5ad", "--query", files / "query.h5ad", *args,
                     "-o", files / "bad.h5ad", "--min-genes", "0")
    lines = [line.split("\r")[-1] for line in result.stderr.splitlines() if line.split("\r")[-1].strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0]


def test_cli_query_sharing_no_genes_exits_2(files):
    result = run_cli("transfer", "--reference", files / "reference.h5ad", "--query", files / "renamed.h5ad",
                     "--label-key", "cell_type", "-o", files / "bad.h5ad", "--min-genes", "0")
    assert result.returncode == 2 and "shares no genes" in result.stderr


def test_cli_transfer_with_a_tiny_encoder(files, tmp_path):
    from sccore.models import TrainConfig, train
    from sccore.models.encoder import EncoderConfig

    tiny = EncoderConfig(vocab_size=3, n_layers=1, d_model=32, n_heads=4, d_ff=64, max_length=128, name="tiny")
    train(standardise(ad.read_h5ad(files / "reference.h5ad")), tmp_path / "model", tiny,
          TrainConfig(epochs=1, batch_size=32, eval_every=50, device="cpu"))
    out = tmp_path / "encoded.h5ad"
    result = run_cli("transfer", "--reference", files / "reference.h5ad", "--query", files / "query.h5ad",
                     "--label-key", "cell_type", "--use-rep", "X_encoder", "--model", tmp_path / "model", "-o", out,
                     "--device", "cpu", "--threshold", "0")
    assert result.returncode == 0, result.stderr
    labelled = ad.read_h5ad(out)
    assert labelled.obsm["X_encoder"].shape == (100, 32)
    assert (labelled.obs["predicted_cell_type"] != UNASSIGNED).all()
    assert run_cli("transfer", "--reference", files / "reference.h5ad", "--query", files / "query.h5ad",
                   "--label-key", "cell_type", "--use-rep", "X_encoder", "-o", out).returncode == 2
