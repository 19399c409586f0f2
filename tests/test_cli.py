import json
import subprocess
import sys

import anndata as ad
import pandas as pd
import pytest

from tests.conftest import ROOT, make_counts


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sccore", *map(str, args)], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def counts_file(tmp_path):
    path = tmp_path / "counts.h5ad"
    make_counts(n_cells=400).write_h5ad(path)
    return path


def test_embed_then_umap(counts_file, tmp_path):
    embedded, laid_out = tmp_path / "embedded.h5ad", tmp_path / "umap.h5ad"
    result = run_cli("embed", counts_file, "-o", embedded, "--method", "pca", "--qc-rule", "thresholds", "--min-genes",
                     "0", "--n-comps", "20")
    assert result.returncode == 0, result.stderr
    adata = ad.read_h5ad(embedded)
    assert adata.obsm["X_pca"].shape == (400, 20) and "counts" in adata.layers
    result = run_cli("umap", embedded, "-o", laid_out, "--use-rep", "X_pca")
    assert result.returncode == 0, result.stderr
    assert ad.read_h5ad(laid_out).obsm["X_umap"].shape == (400, 2)


def test_help_for_every_subcommand():
    for command in ("embed", "umap"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "OUT.h5ad" in result.stdout
    assert "--library-size-key" in run_cli("embed", "--help").stdout


@pytest.mark.parametrize("command, flags", [
    ("train", ("--batch-key", "--mlm-weight", "--gep-weight", "--gepc-weight", "--likelihood", "--contrastive-weight")),
    ("finetune", ("--model", "--label-key", "--out", "--epochs", "--library-size-key")),
    ("knockout", ("--expression-out", "--strategy", "--decoder-batch")),
    ("validate-knockout", ("--strategy", "pearson_delta")),
    ("transfer", ("predicted_cell_type_knn",)),
])
def test_help_names_issue_13s_flags(command, flags, capsys):
    from sccore.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert all(flag in text for flag in flags), text


@pytest.mark.parametrize("command", ["embed", "knockout", "screen", "validate-knockout", "transfer", "report"])
def test_every_command_that_filters_cells_offers_both_qc_rules(command, capsys):
    from sccore.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(flag in text for flag in ("--qc-rule {outliers,thresholds}", "--n-mads", "--min-genes")), text


def test_embed_warns_on_stderr_when_a_qc_step_removes_more_than_half_of_the_cells(tmp_path, capsys):
    import numpy as np

    from sccore.cli import main
    from sccore.pp import qc_metrics
    from tests.test_pp import whole_transcriptome

    adata = whole_transcriptome(n_cells=200)  # fixed cuts apply
    adata.write_h5ad(tmp_path / "counts.h5ad")
    limit = float(np.percentile(qc_metrics(adata)["pct_mito"], 30))
    out = tmp_path / "pca.h5ad"
    assert main(["embed", str(tmp_path / "counts.h5ad"), "-o", str(out), "--n-comps", "5", "--n-top-genes", "100",
                 "--qc-rule", "thresholds", "--max-pct-mito", f"{limit}"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and "mitochondrial cut removed 140 of 200 cells (70%)" in warning[0], warning
    assert "--qc-rule outliers" in warning[0]
    assert list(ad.read_h5ad(out).uns["preprocess"]["warnings"]) == [warning[0].removeprefix("warning: ")]


@pytest.mark.parametrize("content", [b"not an h5ad file at all", b""])
def test_bad_input_exits_non_zero_with_one_line(tmp_path, content):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(content)
    result = run_cli("embed", bad, "-o", tmp_path / "out.h5ad", "--method", "pca")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not (tmp_path / "out.h5ad").exists()


def test_missing_representation_and_library_size_key(counts_file, tmp_path):
    result = run_cli("umap", counts_file, "-o", tmp_path / "o.h5ad", "--use-rep", "X_encoder")
    assert result.returncode == 2 and "X_encoder" in result.stderr
    result = run_cli("embed", counts_file, "-o", tmp_path / "o.h5ad", "--library-size-key", "full_total_umis")
    assert result.returncode == 2 and "full_total_umis" in result.stderr


def test_embed_real_crispr_screen_with_whole_transcriptome_library_sizes(shared_data, tmp_path):
    out = tmp_path / "lowmoi.h5ad"
    result = run_cli("embed", shared_data / "lowmoi_example_data.h5ad", "-o", out, "--method", "pca",
                     "--library-size-key", "full_total_umis", "--min-genes", "0")
    assert result.returncode == 0, result.stderr
    adata = ad.read_h5ad(out)
    assert adata.uns["preprocess"]["params"]["library_size_key"] == "full_total_umis"
    assert adata.obsm["X_pca"].shape[0] > 20_000


def test_train_then_embed_with_the_encoder(counts_file, tmp_path):
    model, out = tmp_path / "model", tmp_path / "encoded.h5ad"
    result = run_cli("--threads", "1", "train", counts_file, "--out", model, "--config", "small", "--epochs", "1",
                     "--batch-size", "32", "--cls")
    assert result.returncode == 0, result.stderr
    assert (model / "model.safetensors").exists() and (model / "config.json").exists()
    result = run_cli("embed", counts_file, "-o", out, "--method", "encoder", "--model", model)
    assert result.returncode == 0, result.stderr
    adata = ad.read_h5ad(out)
    width = json.loads((model / "config.json").read_text())["latent_dim"] or 128  # the preset's cell embedding
    assert adata.obsm["X_encoder"].shape == (400, width) and adata.uns["X_encoder"]["model_name"] == "small"
    result = run_cli("embed", counts_file, "-o", out, "--method", "encoder")
    assert result.returncode == 2 and "--model" in result.stderr
    result = run_cli("embed", counts_file, "-o", out, "--method", "encoder", "--model", model, "--pooling", "cls",
                     "--key-added", "X_cls", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert ad.read_h5ad(out).uns["X_cls"]["pooling"] == "cls"
    screened = tmp_path / "screen.csv"
    result = run_cli("screen", counts_file, "--model", model, "--where", "cell_type=type_0", "--top", "6",
                     "--max-cells", "4", "--estimate", "first-order", "--exact-top", "2", "--min-genes", "0",
                     "-o", screened)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(screened)
    assert len(table) == 6 and (table["estimate"] == "exact").sum() == 2


def test_knockout_and_screen_with_the_baselines(counts_file, tmp_path):

    out = tmp_path / "ko.csv"
    result = run_cli("knockout", counts_file, "--model", "linear", "--genes", "GENE0,GENE1", "--where",
                     "cell_type=type_0", "--goal", "cell_type=type_1", "-o", out, "--min-genes", "0")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert list(table["gene"]) == ["GENE0", "GENE1"]
    assert {"gene", "method", "n_cells", "mean_cosine", "mean_shift_norm", "goal_alignment",
            "goal_cosine_gain"} <= set(table.columns)
    result = run_cli("screen", counts_file, "--model", "pca", "--where", "cell_type=type_0", "--top", "20",
                     "-o", out, "--min-genes", "0")
    assert result.returncode == 0, result.stderr
    screened = pd.read_csv(out)
    assert len(screened) == 20 and {"p_value", "fdr"} <= set(screened.columns)
    result = run_cli("knockout", counts_file, "--model", "pca", "--genes", "GENE0", "--where", "cell_type=type_0",
                     "--goal", "cell_type=type_0", "-o", out, "--min-genes", "0")
    assert result.returncode == 2 and "same as the start" in result.stderr


def test_validate_knockout_prints_spearman_last(shared_data, tmp_path):

    out = tmp_path / "validation.csv"
    result = run_cli("validate-knockout", shared_data / "lowmoi_example_data.h5ad", "--model", "pca",
                     "--perturbation-key", "perturbation", "--control", "control", "--where", "guide_confident=True",
                     "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("Spearman correlation of predicted_norm vs observed_norm")
    table = pd.read_csv(out)
    assert list(table.columns) == ["target", "method", "n_cells", "cosine", "predicted_norm", "observed_norm",
                                   "pearson_delta", "rmse_delta"]
    assert len(table) == 9 and table["pearson_delta"].notna().all()
    assert "Mean pearson_delta" in result.stdout


def test_finetune_then_transfer_with_its_classifier_and_knockout_expression_changes(counts_file, tmp_path):
    from sccore.io import standardise
    from sccore.models import EncoderConfig, TrainConfig, train

    tiny = EncoderConfig(vocab_size=3, n_layers=1, d_model=32, n_heads=4, d_ff=64, max_length=128, name="tiny",
                         gepc_weight=1.0)
    adata = ad.read_h5ad(counts_file)
    adata[:300].copy().write_h5ad(tmp_path / "reference.h5ad")
    adata[300:].copy().write_h5ad(tmp_path / "query.h5ad")
    train(standardise(adata[:300].copy()), tmp_path / "model", tiny, TrainConfig(epochs=1, batch_size=32, device="cpu"))
    tuned = tmp_path / "tuned"
    result = run_cli("finetune", tmp_path / "reference.h5ad", "--model", tmp_path / "model", "--label-key", "cell_type",
                     "--out", tuned, "--epochs", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "3 labels of obs['cell_type']" in result.stdout and (tuned / "model.safetensors").exists()
    again = run_cli("finetune", tmp_path / "reference.h5ad", "--model", tmp_path / "model", "--label-key",
                    "cell_type", "--out", tuned)
    assert again.returncode == 2 and "already holds a model" in again.stderr
    out = tmp_path / "labelled.h5ad"
    result = run_cli("transfer", "--reference", tmp_path / "reference.h5ad", "--query", tmp_path / "query.h5ad",
                     "--label-key", "cell_type", "--use-rep", "X_encoder", "--model", tuned, "-o", out,
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr
    obs = ad.read_h5ad(out).obs
    assert {"predicted_cell_type", "predicted_cell_type_confidence", "predicted_cell_type_knn",
            "predicted_cell_type_knn_confidence"} <= set(obs.columns)
    assert "classifier (obs['predicted_cell_type']): accuracy" in result.stdout
    assert "kNN vote (obs['predicted_cell_type_knn']): accuracy" in result.stdout
    changes = tmp_path / "changes.csv"
    result = run_cli("knockout", counts_file, "--model", tmp_path / "model", "--genes", "GENE0,GENE1", "-o",
                     tmp_path / "ko.csv", "--expression-out", changes, "--min-genes", "0", "--strategy", "both")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(changes)
    assert list(table.columns) == ["gene", "knocked_out", "method", "predicted_log_change"]
    assert set(table["knocked_out"]) == {"GENE0", "GENE1"} and set(table["method"]) == {"encoder"}
