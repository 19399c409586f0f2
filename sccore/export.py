"""Exports: tables and files a user takes away."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd


def embedding_table(adata: ad.AnnData, layouts: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per cell: its annotations, its coordinates in each layout and its principal components."""
    table = adata.obs.copy()
    for name, coords in layouts.items():
        label = name.split(" ")[0]
        if label != "X_pca":
            table[f"{label}_1"], table[f"{label}_2"] = coords[:, 0], coords[:, 1]
    if "X_pca" in adata.obsm:
        pcs = np.asarray(adata.obsm["X_pca"])
        for i in range(pcs.shape[1]):
            table[f"PC{i + 1}"] = pcs[:, i]
    table.index.name = "cell"
    return table


def h5ad_bytes(adata: ad.AnnData) -> bytes:
    """The AnnData written as an ``.h5ad`` file, returned as bytes (for downloads)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.h5ad"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata.write_h5ad(path)
        return path.read_bytes()
