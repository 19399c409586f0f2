"""The HTML report: built from the demo analysis with knockouts and a screen beside both baselines; user strings are
escaped; nothing is loaded from the network; and ``python -m sccore report`` end to end."""

import base64
import html
import io
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sccore import InputError
from sccore.cache import DiskCache
from sccore.report import (ScreenReport, agreement_note, baseline_note, build_report, describe_cells,
                           knockout_note, method_agreement, metrics_note, transfer_note, write_report)
from tests.conftest import ROOT, make_counts

DEMO_MODEL = ROOT / "assets" / "demo_model"
HOSTILE = "<script>alert(1)</script>"
GENES = ["LYZ", "S100A9", "FCN1", "CST3", "TYROBP"]


def png_images(document: str) -> list[Image.Image]:
    """Every PNG embedded in the page, decoded."""
    return [Image.open(io.BytesIO(base64.b64decode(data)))
            for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', document)]


def assert_offline(document: str) -> None:
    """No script at all, and nothing (style, image, font) fetched from elsewhere."""
    assert "<script" not in document.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", document, re.IGNORECASE)
    assert "<link" not in document.lower() and "@import" not in document and "url(" not in document


@pytest.fixture(scope="module")
def demo_analysis(demo, tmp_path_factory):
    """The demo with PCA and the demo encoder (cached where the page tests cache it)."""
    from sccore.pp import default_params
    from sccore.workflow import PipelineParams, analyse

    params = PipelineParams(preprocess=default_params(demo), encoder_model=str(DEMO_MODEL))
    return analyse(demo, params, DiskCache(tmp_path_factory.getbasetemp() / "app-cache"))


@pytest.fixture(scope="module")
def demo_report(demo, demo_analysis, tmp_path_factory) -> tuple[str, int]:
    """The demo's report with five knockouts and a small screen by every method, written to a file."""
    from sccore.models import load_model
    from sccore.perturb import choose_cells, knockout, screen
    from sccore.pp import qc_metrics

    adata = demo_analysis.adata
    model = load_model(DEMO_MODEL)
    library_size_key = demo_analysis.params.preprocess.library_size_key
    population = choose_cells(adata, {"cell_type": "CD14+ Monocyte"})
    cells = population[:15]
    about = describe_cells({"cell_type": "CD14+ Monocyte"}, len(cells), len(population))
    rows = [{**knockout(adata, [gene], cells, method, model=model, library_size_key=library_size_key).summary(),
             "cells": about, "mode": "delete"} for gene in GENES for method in ("encoder", "pca", "linear")]
    tables = {method: screen(adata, cells[:10], method, model=model, top=8, library_size_key=library_size_key)
              for method in ("encoder", "pca", "linear")}
    metrics = pd.DataFrame({"kmeans_ari": [0.41, 0.52], "clisi": [0.90, 0.95], "total": [0.61, 0.66]},
                           index=pd.Index(["X_encoder", "X_pca"], name="embedding"))
    transfer = pd.DataFrame({"labels": "cell_type", "embedding": ["X_encoder", "X_pca"], "k": 15,
                             "accuracy": [0.70, 0.705], "macro_f1": [0.5, 0.52], "mean_confidence": [0.8, 0.8]})
    path = tmp_path_factory.mktemp("report") / "demo.html"
    size = write_report(path, demo_analysis, qc=qc_metrics(demo, demo_analysis.params.preprocess),
                        knockouts=pd.DataFrame(rows), screens=[ScreenReport(about, tables)], metrics=metrics,
                        metrics_about="cell_type as labels, phase as batches.", transfer=transfer)
    return path.read_text(encoding="utf-8"), size


def test_demo_report_holds_dataset_parameters_figures_baselines_and_versions(demo_report):
    document, size = demo_report
    assert size == len(document.encode("utf-8")) and size < 2_000_000
    assert html.escape("Demo: 700 PBMCs (scanpy's pbmc68k_reduced)") in document
    for parameter in ("min_genes", "max_pct_mito", "n_comps", "n_neighbors", "min_dist", "demo_model", "d_model",
                      "fingerprint"):
        assert parameter in document, parameter
    images = png_images(document)
    assert len(images) >= 5  # QC histograms, variance per PC, two UMAPs, the screen's rank plot
    assert all(image.width > 100 and image.height > 100 for image in images)
    assert all(gene in document for gene in GENES)
    assert "Encoder shift" in document and "Linear baseline shift" in document  # knockouts side by side
    assert "spearman_rho" in document and "knn_agreement" in document
    assert re.search(r"(does as well as|does better than) the encoder|The encoder does better than", document)
    assert "Ahlmann-Eltze" in document
    assert "PCA baseline does better than the encoder on the scIB total score (0.660 vs 0.610)" in document
    assert "PCA baseline does as well as the encoder on label-transfer accuracy" in document
    assert 'id="metrics"' in document and 'id="transfer"' in document and "adjusted Rand index" in document
    assert "1 − cosine similarity" in document and "false discovery rate" in document  # help beside the numbers
    assert f"<td>{np.__version__}</td>" in document and "sccore commit" in document
    assert_offline(document)


def test_sections_can_be_left_out_and_bad_choices_are_refused(demo_analysis):
    document = build_report(demo_analysis, sections=["dataset", "versions"])
    assert 'id="dataset"' in document and 'id="versions"' in document and 'id="layouts"' not in document
    with pytest.raises(InputError, match="Unknown report section"):
        build_report(demo_analysis, sections=["dataset", "everything"])
    with pytest.raises(InputError, match="cell_type"):
        build_report(demo_analysis, sections=["layouts"], color_by="no_such_column")


def test_user_strings_are_escaped(tmp_path):
    from sccore.embed import pca
    from sccore.pp import PreprocessParams, preprocess

    raw = make_counts(n_cells=200)
    raw.obs["cell_type"] = raw.obs["cell_type"].cat.rename_categories({"type_0": HOSTILE})
    raw.uns["dataset"] = {"name": f"{HOSTILE}.h5ad", "description": "<img src=x onerror=alert(2)>"}
    adata = preprocess(raw, PreprocessParams(min_genes=0))
    pca(adata)
    knockouts = pd.DataFrame([{"gene": HOSTILE, "method": "pca", "n_cells": 10, "n_not_expressed": 2,
                               "mean_cosine": 0.99, "mean_shift": 0.01, "mean_shift_norm": 0.5, "cells": HOSTILE}])
    table = pd.DataFrame({"gene": [HOSTILE, "GENE2", "GENE3"], "method": "pca", "n_cells": 10,
                          "mean_cosine": [0.9, 0.95, 0.99], "mean_shift": [0.1, 0.05, 0.01], "fdr": [0.01, 0.2, 0.9]})
    document = build_report(adata, knockouts=knockouts, screens=[ScreenReport(HOSTILE, {"pca": table})],
                            transfer=pd.DataFrame({"labels": [HOSTILE], "embedding": ["X_pca"], "accuracy": [0.9]}))
    assert HOSTILE not in document and "<img src=x" not in document
    assert html.escape(HOSTILE) in document
    assert len(png_images(document)) >= 2  # QC and PC1 vs PC2 (no UMAP in this file)
    assert_offline(document)


def test_baseline_notes_say_when_a_baseline_does_as_well():
    assert "PCA baseline does as well as the encoder" in baseline_note("kNN", 0.80, {"PCA baseline": 0.795})
    assert "does better than the encoder" in baseline_note("kNN", 0.70, {"PCA baseline": 0.80})
    assert baseline_note("kNN", 0.90, {"PCA baseline": 0.80}).startswith("The encoder does better")
    assert baseline_note("kNN", float("nan"), {"PCA baseline": 0.8}) == ""
    assert "much like the encoder" in agreement_note(0.85, 40)
    assert "hardly agree" in agreement_note(0.05, 40) and "rough estimate" in agreement_note(0.5, 10)
    genes = [f"G{i}" for i in range(30)]
    tables = {"encoder": pd.DataFrame({"gene": genes, "mean_shift": np.arange(30.0)}),
              "linear": pd.DataFrame({"gene": genes, "mean_shift": np.arange(30.0)})}
    (row,) = method_agreement(tables, "mean_shift").to_dict(orient="records")
    assert row["spearman_rho"] == pytest.approx(1.0) and row["top_overlap"] == "10 of 10"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sccore", "--threads", "1", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_knockout_metrics_and_transfer_notes_compare_the_encoder_with_its_baselines():
    shifts = [0.1, 0.2, 0.3, 0.4, 0.5]
    knockouts = pd.DataFrame([{"gene": f"G{i}", "method": method, "mean_shift": shift * (1 if method == "encoder"
                                                                                       else 2), "mode": "delete"}
                              for i, shift in enumerate(shifts) for method in ("encoder", "linear")])
    assert "much like the encoder" in knockout_note(knockouts)
    assert "cannot say" in knockout_note(knockouts.head(4))
    assert knockout_note(knockouts[knockouts["method"] == "linear"]) == ""
    metrics = pd.DataFrame({"total": [0.62, 0.60]}, index=["X_pca", "X_encoder"])
    assert "PCA baseline does better than the encoder on the scIB total score" in metrics_note(metrics)
    assert metrics_note(metrics.loc[["X_pca"]]) == ""
    transfer = pd.DataFrame({"embedding": ["X_pca", "X_encoder"], "accuracy": [0.70, 0.90]})
    assert transfer_note(transfer).startswith("The encoder does better")


def test_cli_writes_the_report_with_knockouts_and_a_screen(tmp_path):
    counts = make_counts(n_cells=400)
    counts.obs["cell_type"] = counts.obs["cell_type"].cat.rename_categories({"type_1": HOSTILE})
    path, out = tmp_path / "counts.h5ad", tmp_path / "report.html"
    counts.write_h5ad(path)
    result = run_cli("report", path, "-o", out, "--min-genes", "0", "--knockout", "GENE0,GENE1", "--where",
                     "cell_type=type_0", "--screen", "--top", "10", "--max-cells", "60", "--goal", "cell_type=type_2")
    assert result.returncode == 0, result.stderr
    assert "Wrote the report" in result.stdout
    document = out.read_text(encoding="utf-8")
    assert "counts.h5ad" in document and "GENE0" in document and "goal_alignment" in document
    assert "a random sample of 60" in document and "PCA baseline vs Linear baseline" in document
    assert html.escape(HOSTILE) in document and HOSTILE not in document
    assert len(png_images(document)) >= 3
    assert_offline(document)
    bad = run_cli("report", path, "-o", tmp_path / "bad.html", "--color-by", "nope")
    assert bad.returncode == 2 and not (tmp_path / "bad.html").exists()
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'nope'" in lines[0]
