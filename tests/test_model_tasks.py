"""The tasks behind issue 13's command line and jobs, run in-process on tiny models: training with objective weights
and a batch key, fine-tuning into a new folder, knockouts' predicted expression changes, the encoder's deletion
strategy in validation, and label transfer with a fine-tuned model's classifier."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sccore import InputError
from sccore.errors import Cancelled
from sccore.io import standardise
from sccore.models import EncoderConfig, TrainConfig, load_model, preset, train
from sccore.models.finetune import finetune
from sccore.tasks import finetune as finetune_task
from sccore.tasks import knockout, transfer, validate
from sccore.tasks import train as train_task
from sccore.training import FinetuneConfig
from tests.conftest import make_counts

WITH_DECODER = EncoderConfig(vocab_size=3, n_layers=1, d_model=32, n_heads=4, d_ff=64, max_length=128,
                             name="tiny-decoder", gepc_weight=1.0)
WITHOUT_DECODER = EncoderConfig(vocab_size=3, n_layers=1, d_model=32, n_heads=4, d_ff=64, max_length=128, name="tiny")
EXPRESSION_COLUMNS = ["gene", "knocked_out", "method", "predicted_log_change"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Counts (``counts.h5ad``, 240 cells x 150 genes), a tiny model with an expression decoder and one without."""
    folder = tmp_path_factory.mktemp("model-tasks")
    counts = make_counts(n_cells=240, n_genes=150)
    counts.write_h5ad(folder / "counts.h5ad")
    adata = standardise(counts)
    train(adata, folder / "decoder", WITH_DECODER, TrainConfig(epochs=2, batch_size=16, learning_rate=3e-3))
    train(adata, folder / "plain", WITHOUT_DECODER, TrainConfig(epochs=1, batch_size=16))
    return folder


def test_train_saves_the_objective_weights_and_the_batch_key_given(tmp_path):
    make_counts(n_cells=60, n_genes=80).write_h5ad(tmp_path / "counts.h5ad")
    params = train_task.TrainParams(input=str(tmp_path / "counts.h5ad"), out=str(tmp_path / "model"), epochs=1,
                                    gepc_weight=1.0, likelihood="poisson", batch_key="batch", device="cpu")
    history = train_task.run(params)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (config["gepc_weight"], config["likelihood"], config["batch_key"]) == (1.0, "poisson", "batch")
    small = preset("small", 3)  # the weights not given are the preset's
    assert config["batch_categories"] == ["b1", "b2"] and config["mlm_weight"] == small.mlm_weight
    assert config["latent_dim"] == small.latent_dim and config["n_bins"] == small.n_bins
    assert set(history["train_losses"]) == {"gepc"} | ({"mlm"} if small.mlm_weight else set())
    without_decoder = train_task.TrainParams(input=params.input, out=str(tmp_path / "other"), batch_key="batch",
                                             gepc_weight=0.0, mlm_weight=1.0, latent_dim=0)
    with pytest.raises(InputError, match="gepc_weight"):
        train_task.run(without_decoder)
    assert not (tmp_path / "other").exists()


def test_finetune_writes_a_new_model_folder_and_never_overwrites_one(data, tmp_path):
    params = finetune_task.FinetuneParams(input=str(data / "counts.h5ad"), model=str(data / "decoder"),
                                          label_key="cell_type", out=str(tmp_path / "tuned"), epochs=1, device="cpu")
    before = (data / "decoder" / "model.safetensors").read_bytes()
    history = finetune_task.run(params)
    tuned = load_model(tmp_path / "tuned")
    assert tuned.config.labels == ["type_0", "type_1", "type_2"] and tuned.config.label_key == "cell_type"
    assert len(history["loss"]) == 8 and (data / "decoder" / "model.safetensors").read_bytes() == before
    written = (tmp_path / "tuned" / "model.safetensors").read_bytes()
    for bad, message in ((params, "already holds a model"),
                         (finetune_task.FinetuneParams(**{**params.asdict(), "out": str(data / "decoder")}),
                          "already holds a model"),
                         (finetune_task.FinetuneParams(**{**params.asdict(), "out": str(tmp_path / "b"),
                                                          "label_key": "label"}), "no column 'label'")):
        with pytest.raises(InputError, match=message):
            finetune_task.run(bad)
    assert (tmp_path / "tuned" / "model.safetensors").read_bytes() == written
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tuned"]  # no half-built folder is left


def test_a_stopped_finetune_leaves_no_model(data, tmp_path):
    params = finetune_task.FinetuneParams(input=str(data / "counts.h5ad"), model=str(data / "decoder"),
                                          label_key="cell_type", out=str(tmp_path / "tuned"), epochs=1, device="cpu")
    reports = []
    with pytest.raises(Cancelled):
        finetune_task.run(params, lambda fraction, message: reports.append(message), lambda: len(reports) >= 2)
    assert list(tmp_path.iterdir()) == []


def test_finetune_parameters_take_their_defaults_and_bounds_from_finetune_config():
    for name in ("epochs", "batch_size", "learning_rate", "head_learning_rate", "seed", "device"):
        assert finetune_task.FinetuneParams.default(name) == getattr(FinetuneConfig(), name), name
    with pytest.raises(InputError, match="epochs must lie between 0.001 and 1000 for the finetune task"):
        finetune_task.FinetuneParams(input="x", model="m", label_key="cell_type", epochs=0)
    with pytest.raises(InputError, match="needs label_key"):
        finetune_task.FinetuneParams.from_dict({"input": "x", "model": "m"})


def test_knockout_writes_every_genes_predicted_expression_change_by_each_method(data, tmp_path):
    common = {"input": str(data / "counts.h5ad"), "genes": ("GENE1", "GENE2"), "min_genes": 0,
              "where": {"cell_type": "type_0"}}
    for method in ("decoder", "pca", "linear"):
        model = str(data / method) if method == "decoder" else method
        out = tmp_path / f"{method}.csv"
        summary = knockout.run(knockout.KnockoutParams(**common, model=model, output=str(tmp_path / "ko.csv"),
                                                       expression_output=str(out)))
        table = pd.read_csv(out)
        assert list(table.columns) == EXPRESSION_COLUMNS and list(summary["gene"]) == ["GENE1", "GENE2"]
        assert list(table["knocked_out"].unique()) == ["GENE1", "GENE2"]
        assert table["method"].unique().tolist() == ["pca" if method == "pca" else
                                                     "linear" if method == "linear" else "encoder"]
        n_genes = len(load_model(data / "decoder").vocabulary.genes) if method == "decoder" else table["gene"].nunique()
        assert table.groupby("knocked_out").size().tolist() == [n_genes] * 2  # every gene, once per knockout
        assert np.isfinite(table["predicted_log_change"]).all() and (table["predicted_log_change"] != 0).any()
        if method != "decoder":  # zeroing the gene itself lowers its own expression
            own = table.set_index(["knocked_out", "gene"]).loc[("GENE1", "GENE1"), "predicted_log_change"]
            assert own < 0


def test_a_model_without_decoder_gives_shifts_only(data, tmp_path):
    params = knockout.KnockoutParams(input=str(data / "counts.h5ad"), genes=("GENE1",), model=str(data / "plain"),
                                     output=str(tmp_path / "ko.csv"), expression_output=str(tmp_path / "e.csv"),
                                     min_genes=0)
    with pytest.raises(InputError, match="no expression decoder .*shifts only"):
        knockout.run(params)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="no expression decoder"):
        knockout.run(knockout.KnockoutParams(**{**params.asdict(), "expression_output": "", "strategy": "decoder"}))
    table = knockout.run(knockout.KnockoutParams(**{**params.asdict(), "expression_output": ""}))
    assert table["mean_cosine"].between(-1, 1).all() and not (tmp_path / "e.csv").exists()
    with pytest.raises(InputError, match="strategy is one of tokens, decoder, both"):
        knockout.KnockoutParams(**{**params.asdict(), "strategy": "silence"})


@pytest.fixture(scope="module")
def screen_file(data):
    """The counts with a CRISPR-like obs['perturbation']: control, or one of three targets (20 cells each)."""
    adata = ad.read_h5ad(data / "counts.h5ad")
    labels = np.array(["control"] * adata.n_obs, dtype=object)
    labels[:60] = np.repeat(["GENE3", "GENE4", "GENE5"], 20)
    adata.obs["perturbation"] = labels
    adata.write_h5ad(data / "screen.h5ad")
    return data / "screen.h5ad"


def test_validation_runs_the_encoders_strategy_and_compares_gene_space(data, screen_file, tmp_path):
    common = {"input": str(screen_file), "output": str(tmp_path / "v.csv"), "min_genes": 0}
    table = validate.run(validate.ValidateParams(**common, model=str(data / "decoder"), strategy="both"))
    assert list(table.columns) == ["target", "method", "n_cells", "cosine", "predicted_norm", "observed_norm",
                                   "pearson_delta", "rmse_delta"]
    assert list(table["target"]) == ["GENE3", "GENE4", "GENE5"] and table["pearson_delta"].notna().all()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "v.csv"), table, check_dtype=False)
    with pytest.raises(InputError, match="no expression decoder"):  # refused, not three rows of NaN
        validate.run(validate.ValidateParams(**common, model=str(data / "plain"), strategy="decoder"))


@pytest.fixture(scope="module")
def transfer_files(data):
    """Reference (160 cells) and query (80 cells) files of the counts, and a model fine-tuned on the reference."""
    adata = ad.read_h5ad(data / "counts.h5ad")
    adata[:160].copy().write_h5ad(data / "reference.h5ad")
    adata[160:].copy().write_h5ad(data / "query.h5ad")
    renamed = adata[160:].copy()
    renamed.var_names = [f"ENSG{i:011d}" for i in range(renamed.n_vars)]
    renamed.write_h5ad(data / "renamed.h5ad")
    finetune(standardise(adata[:160].copy()), data / "decoder", "cell_type", data / "tuned",
             FinetuneConfig(epochs=3, batch_size=16, device="cpu"))
    return data


def transfer_params(folder, model: str, **changes) -> transfer.TransferParams:
    return transfer.TransferParams(**{"reference": str(folder / "reference.h5ad"), "query": str(folder / "query.h5ad"),
                                      "label_key": "cell_type", "use_rep": "X_encoder", "model": str(folder / model),
                                      "output": str(folder / "labelled.h5ad"), "threshold": 0.0, "device": "cpu",
                                      **changes})


def test_transfer_with_a_fine_tuned_model_writes_the_classifier_beside_the_knn_vote(transfer_files):
    outcome = transfer.run(transfer_params(transfer_files, "tuned"))
    obs = ad.read_h5ad(transfer_files / "labelled.h5ad").obs
    assert {"predicted_cell_type", "predicted_cell_type_confidence", "predicted_cell_type_knn",
            "predicted_cell_type_knn_confidence"} <= set(obs.columns)
    tuned = load_model(transfer_files / "tuned")
    query = ad.read_h5ad(transfer_files / "query.h5ad")
    from sccore.encode import classify

    labels, probability = classify(query, tuned)
    assert list(obs["predicted_cell_type"].astype(str)) == list(labels)
    np.testing.assert_allclose(obs["predicted_cell_type_confidence"], probability, rtol=1e-4)
    assert outcome.knn_key == "predicted_cell_type_knn" and outcome.true_key == "cell_type"
    truth = query.obs["cell_type"].astype(str).to_numpy()
    assert outcome.scores["accuracy"] == pytest.approx(np.mean(labels == truth))
    assert outcome.knn_scores["accuracy"] == pytest.approx(np.mean(obs["predicted_cell_type_knn"].astype(str) == truth))
    assert outcome.query.uns["predicted_cell_type"]["method"] == "classifier"


def test_transfer_with_a_model_without_classifier_keeps_the_knn_vote_alone(transfer_files):
    outcome = transfer.run(transfer_params(transfer_files, "decoder"))
    assert outcome.knn_key is None and not outcome.knn_scores
    assert "predicted_cell_type_knn" not in outcome.query.obs.columns
    assert outcome.query.uns["predicted_cell_type"]["k"] == 15  # the vote's own parameters
    other_labels = transfer.run(transfer_params(transfer_files, "tuned", label_key="batch"))
    assert other_labels.knn_key is None
    assert any("predicts obs['cell_type'], not 'batch'" in note for note in other_labels.notes)


def test_a_query_without_the_models_genes_is_refused_with_the_fix(transfer_files):
    with pytest.raises(InputError, match="The query does not fit the model tuned: Only 0 of the dataset's 150 genes"):
        transfer.run(transfer_params(transfer_files, "tuned", query=str(transfer_files / "renamed.h5ad")))


def test_a_finetune_job_builds_its_model_in_the_cache_and_finds_it_there_again(data, tmp_path):
    from sccore import jobs

    store = jobs.JobStore(tmp_path / "cache")
    params = jobs.checked_params("finetune", {"input": str(data / "counts.h5ad"), "model": str(data / "decoder"),
                                              "label_key": "cell_type", "epochs": 0.5, "device": "cpu"})
    for job_id in ("first", "again"):
        store.write(jobs.JobRecord(id=job_id, user="local", kind="finetune", params=params))
        result = jobs.run_job(str(store.cache_dir), str(store.cache_dir), "local", job_id)
        assert store.read("local", job_id).status == "finished", store.read("local", job_id).error
    assert not store.read("local", "first").cached and store.read("local", "again").cached
    assert load_model(result).config.labels == ["type_0", "type_1", "type_2"]
    assert not list(tmp_path.rglob(".*.tmp*"))
