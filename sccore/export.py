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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula at the start of a cell


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell (and the index and column names) that a spreadsheet would run as a formula
    (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return: ``=HYPERLINK(...)`` in a cell-type name)
    prefixed with ``'``, as OWASP advises for CSV exports; numbers are left as they are."""
    def cell(value):
        return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or isinstance(safe[column].dtype, (pd.CategoricalDtype, pd.StringDtype)):
            safe[column] = safe[column].astype(object).map(cell)
    safe.index = safe.index.map(cell)
    safe.columns = safe.columns.map(cell)
    return safe


def csv_bytes(table: pd.DataFrame, index: bool = False) -> bytes:
    """``table`` as CSV bytes for a download from the app, made :func:`spreadsheet_safe` first."""
    return spreadsheet_safe(table).to_csv(index=index).encode()
