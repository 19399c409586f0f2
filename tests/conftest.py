"""Shared fixtures: small synthetic count data, the demo, and the real data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))
SHARED_DATA = ROOT.parent / "shared" / "data"

# The tiers (markers registered in pyproject.toml). `pytest -m "not slow"` runs the unit tests of the sccore
# modules; the tests of every other tier are also `slow`, and `pytest` (.ci/run) runs them all.
TIERS_BY_MODULE = {
    "test_browser": ("browser",),
    "test_benchmarks": ("benchmark",),
    "test_jobs": ("cluster",),
    "test_partitions": ("cluster",),
    "test_installed_cluster": ("cluster",),
    "test_page_background_jobs": ("apptest", "cluster"),
    "test_pages": ("apptest",),
    "test_tour": ("apptest",),
    "test_hostile_inputs": ("apptest",),
}  # and every test_page_*.py is an AppTest, as is any test that sets up the dashboard's folders (app_folders);
# every other module (test_tasks, test_tasks_in_memory, test_annotations, test_shifts, test_transfer_within, ...)
# holds unit tests, in the default tier but for the end-to-end runs listed here:
SLOW_UNIT_TESTS = {  # measured (--durations): the slowest of the unit tests, each an end-to-end run
    # the command line in a subprocess, over the whole pipeline (the functions it calls are unit-tested too)
    "tests/test_cli.py::test_train_then_embed_with_the_encoder",
    "tests/test_cli.py::test_knockout_and_screen_with_the_baselines",
    "tests/test_cli.py::test_embed_then_umap",
    "tests/test_report.py::test_cli_writes_the_report_with_knockouts_and_a_screen",
    "tests/test_transfer.py::test_cli_transfer_with_a_tiny_encoder",
    "tests/test_transfer.py::test_cli_transfer_with_pca_writes_the_issue_keys_and_prints_scores",
    "tests/test_metrics.py::test_cli_writes_one_row_per_embedding",
    "tests/test_atlas.py::test_cli_builds_an_atlas_and_keeps_the_file_s_library_sizes",
    "tests/test_cluster.py::test_cli_writes_clusters_and_scores",
    "tests/test_integrate.py::test_cli_integrates_raw_counts_after_their_pca_and_refuses_one_batch",
    # the real CRISPR screen through the command line
    "tests/test_cli.py::test_embed_real_crispr_screen_with_whole_transcriptome_library_sizes",
    "tests/test_cli.py::test_validate_knockout_prints_spearman_last",
    # fine-tuning, transfer with its classifier and knockout expression changes through the command line
    "tests/test_cli.py::test_finetune_then_transfer_with_its_classifier_and_knockout_expression_changes",
    # the demo's whole report (knockouts and screens by every method); build_report's parts stay unit tests
    "tests/test_report.py::test_demo_report_holds_dataset_parameters_figures_baselines_and_versions",
    # the real PBMCs of eight donors through the dashboard's analysis
    "tests/test_workflow.py::test_analyse_real_pbmcs_from_eight_donors",
    # a second training (resumed), and a third (every objective, a batch-conditioned decoder) and what its tests
    # read from it; the module's first training stays a unit test
    "tests/test_models.py::test_training_resumes_from_its_checkpoint",
    "tests/test_models.py::test_every_objective_is_trained_and_its_losses_recorded",
    "tests/test_models.py::test_the_decoder_gives_expression_of_every_gene_for_known_and_unseen_batches",
    "tests/test_models.py::test_a_decoder_learns_the_cell_types_expression",
    "tests/test_models.py::test_finetuning_adds_a_classifier_and_never_overwrites_a_model",
}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by these markers
def pytest_configure(config):
    """A test process of a parallel run (pytest-xdist's ``-n``) runs at the jobs' niceness: the Dask workers its tests
    start lower themselves to it (``sccore.jobs.lower_priority``), and at a higher priority the other test process
    would take the processors from them for as long as its own tests run."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        from sccore.jobs import JOB_NICENESS

        os.nice(max(0, JOB_NICENESS - os.nice(0)))


def pytest_collection_modifyitems(items):
    """Mark each test with its tier (see TIERS_BY_MODULE) and every test outside the unit tier as ``slow``."""
    for item in items:
        module = item.path.stem
        tiers = set(TIERS_BY_MODULE.get(module, ()))
        if module.startswith("test_page_") or "app_folders" in item.fixturenames:
            tiers.add("apptest")
        if tiers or item.nodeid.split("[")[0] in SLOW_UNIT_TESTS:
            tiers.add("slow")
        for tier in sorted(tiers):
            item.add_marker(tier)


def make_counts(n_cells: int = 300, n_genes: int = 400, n_types: int = 3, seed: int = 0) -> ad.AnnData:
    """Negative-binomial counts with ``n_types`` cell types, each with its own up-regulated genes, and 2 batches."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    base = rng.gamma(0.6, 1.2, n_genes)
    markers = np.ones((n_types, n_genes))
    for t in range(n_types):
        markers[t, rng.choice(n_genes, 30, replace=False)] = 8.0
    means = base[None, :] * markers[types] * rng.uniform(0.6, 1.6, n_cells)[:, None]
    counts = rng.negative_binomial(2, 2 / (2 + means)).astype(np.float32)
    genes = [f"GENE{i}" for i in range(n_genes - 3)] + ["MT-CO1", "MT-ND1", "MT-ATP6"]
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type_{t}" for t in types]),
                        "batch": pd.Categorical(rng.choice(["b1", "b2"], n_cells))},
                       index=[f"cell_{i}" for i in range(n_cells)])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=genes))


@pytest.fixture
def counts_adata() -> ad.AnnData:
    """300 cells x 400 genes of synthetic counts, 3 cell types, 2 batches."""
    return make_counts()


@pytest.fixture(scope="session")
def demo():
    """The embedded demo dataset (standardised)."""
    from sccore.io import load_demo

    return load_demo()


@pytest.fixture
def shared_data() -> Path:
    """The real datasets beside the checkout; skips where they are absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (only CI and developers have ../shared/data)")
    return SHARED_DATA


@pytest.fixture
def app_folders(tmp_path_factory, monkeypatch):
    """Point the dashboard at temporary cache, upload and data folders (the cache is shared by the page tests,
    so the demo is computed once); no settings file applies."""
    monkeypatch.setenv("SCCORE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "app-cache"))
    monkeypatch.setenv("SCCORE_UPLOAD_DIR", str(tmp_path_factory.mktemp("uploads")))
    monkeypatch.setenv("SCCORE_DATA_DIRS", str(tmp_path_factory.mktemp("data")))
    monkeypatch.setenv("SCCORE_MODEL_DIR", str(tmp_path_factory.mktemp("models")))
    monkeypatch.setenv("SCCORE_SETTINGS", os.devnull)  # defaults and these variables only, whatever sccore.toml says


def certificate_settings(client):
    """Dask's settings naming the certificate of the local cluster ``client`` reaches (``sccore.jobs.connect``), as a
    context: within it, `--scheduler ADDRESS` and the app's own client can connect to that cluster."""
    import dask

    from sccore.dask_security import tls_config
    from sccore.jobs import certificate_folder

    return dask.config.set(tls_config(certificate_folder(client)))


def rendered(markdown: str) -> str:
    """The text a reader sees of a message the app escaped for markdown (``dashboard.widgets.plain``): AppTest gives
    an element's markdown source, backslashes included."""
    import re

    return re.sub(r"\\([!-/:-@\[-^_{-~])", r"\1", markdown)
