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
