"""Preprocessing: quality control, library-size normalisation, log1p and highly variable genes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError
from .io import check_library_size_key


@dataclass(frozen=True)
class PreprocessParams:
    """Parameters of :func:`preprocess`; the defaults are scanpy's usual ones.

    ``n_genes_key``, ``pct_mito_key`` and ``library_size_key`` name ``obs`` columns with
    whole-transcriptome values, for files that hold only a subset of the genes.
    """

    min_genes: int = 200
    max_pct_mito: float = 10.0
    min_cells: int = 3
    mito_prefix: str = "MT-"
    n_genes_key: str | None = None
    pct_mito_key: str | None = None
    library_size_key: str | None = None
    target_sum: float = 1e4
    n_top_genes: int = 2000


def default_params(adata: ad.AnnData, **overrides) -> PreprocessParams:
    """Parameters for ``adata``: whole-transcriptome ``obs`` columns are used where the file has them.

    The convention (used by the files in ``shared/data`` and the demo) is ``full_total_umis``,
    ``full_n_genes`` and ``full_pct_mito``; a library-size key chosen when opening the file wins.
    """
    obs = adata.obs.columns
    library_size_key = adata.uns.get("input", {}).get("library_size_key") or None
    if library_size_key is None and "full_total_umis" in obs:
        library_size_key = "full_total_umis"
    defaults = {
        "library_size_key": library_size_key,
        "n_genes_key": "full_n_genes" if "full_n_genes" in obs else None,
        "pct_mito_key": "full_pct_mito" if "full_pct_mito" in obs else None,
    }
    defaults.update(overrides)
    return PreprocessParams(**defaults)


def qc_metrics(adata: ad.AnnData, params: PreprocessParams = PreprocessParams()) -> pd.DataFrame:
    """Per-cell QC table: ``total_counts``, ``n_genes`` (detected) and ``pct_mito``.

    Values come from the counts in ``X`` unless ``params`` names ``obs`` columns to use instead.
    """
    counts = sp.csr_matrix(adata.X)
    table = pd.DataFrame(index=adata.obs_names)
    table["total_counts"] = np.asarray(counts.sum(axis=1)).ravel()
    table["n_genes"] = np.diff(counts.indptr)
    is_mito = adata.var_names.str.upper().str.startswith(params.mito_prefix.upper())
    mito_counts = np.asarray(counts[:, np.flatnonzero(is_mito)].sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        table["pct_mito"] = np.nan_to_num(100 * mito_counts / table["total_counts"].to_numpy())
    for column, key in (("total_counts", params.library_size_key), ("n_genes", params.n_genes_key),
                        ("pct_mito", params.pct_mito_key)):
        if key:
            if key not in adata.obs.columns:
                raise InputError(f"obs has no column '{key}'. Choose one of: {', '.join(map(str, adata.obs.columns))}.")
            table[column] = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=float)
    return table


def _step(name: str, before: tuple[int, int], after: tuple[int, int]) -> dict:
    return {"step": name, "cells_removed": before[0] - after[0], "genes_removed": before[1] - after[1],
            "cells_left": after[0], "genes_left": after[1]}


def preprocess(adata: ad.AnnData, params: PreprocessParams = PreprocessParams()) -> ad.AnnData:
    """Filter, normalise, log-transform and flag highly variable genes; return a new AnnData.

    ``adata.X`` must hold raw counts (see :func:`sccore.io.standardise`). The result has
    ``X = log1p(counts / library size * target_sum)``, the counts in ``layers['counts']``, the QC
    table in ``obs``, ``var['highly_variable']``, and ``uns['preprocess']`` with the parameters and
    how many cells and genes each step removed.
    """
    if params.library_size_key:
        check_library_size_key(adata, params.library_size_key)
    qc = qc_metrics(adata, params)
    steps = []
    shape = adata.shape
    keep_cells = (qc["n_genes"] >= params.min_genes).to_numpy()
    steps.append(_step(f"cells with >= {params.min_genes} detected genes", shape, (int(keep_cells.sum()), shape[1])))
    shape = (int(keep_cells.sum()), shape[1])
    mito_ok = (qc["pct_mito"] <= params.max_pct_mito).to_numpy()
    keep_cells &= mito_ok
    steps.append(_step(f"cells with <= {params.max_pct_mito:g}% mitochondrial counts", shape,
                       (int(keep_cells.sum()), shape[1])))
    shape = (int(keep_cells.sum()), shape[1])
    if not keep_cells.any():
        raise InputError(
            f"Quality control removed every cell (median detected genes {qc['n_genes'].median():.0f}, "
            f"median mitochondrial {qc['pct_mito'].median():.1f}%). Lower the minimum detected genes "
            f"(now {params.min_genes}) or raise the mitochondrial limit (now {params.max_pct_mito:g}%)."
        )
    counts = sp.csr_matrix(adata.X)[keep_cells]
    keep_genes = np.diff(sp.csc_matrix(counts).indptr) >= params.min_cells
    steps.append(_step(f"genes detected in >= {params.min_cells} cells", shape, (shape[0], int(keep_genes.sum()))))
    if not keep_genes.any():
        raise InputError(f"No gene is detected in {params.min_cells} or more cells. Lower the minimum cells per gene.")
    counts = counts[:, keep_genes]
    result = ad.AnnData(
        X=counts,
        obs=pd.concat([adata.obs.loc[keep_cells], qc.loc[keep_cells].add_prefix("qc_")], axis=1),
        var=adata.var.loc[keep_genes].copy(),
        obsm={key: value[keep_cells] for key, value in adata.obsm.items()},
        uns={key: value for key, value in adata.uns.items() if key in ("input", "dataset")},
    )
    result.layers["counts"] = counts.copy()
    library_size = qc["total_counts"].to_numpy()[keep_cells]
    if np.any(library_size <= 0):
        raise InputError("Some cells have no counts left; raise the minimum detected genes so empty cells are removed.")
    result.X = log_normalise(counts, library_size, params.target_sum)
    result.var["highly_variable"] = highly_variable(result, params.n_top_genes)
    result.uns["preprocess"] = {"params": {k: ("" if v is None else v) for k, v in asdict(params).items()},
                                "steps": pd.DataFrame(steps).to_dict(orient="list"),
                                "n_highly_variable": int(result.var["highly_variable"].sum())}
    return result


def log_normalise(counts: sp.spmatrix, library_size: np.ndarray,
                  target_sum: float = PreprocessParams.target_sum) -> sp.csr_matrix:
    """``log1p(counts / library size * target_sum)`` (natural logarithm) of a sparse cells x genes counts matrix,
    as float32; ``library_size`` holds each cell's total (positive). :func:`preprocess` normalises with it."""
    scale = (target_sum / np.asarray(library_size, dtype=np.float64)).astype(np.float32)
    normalised = sp.csr_matrix(sp.diags(scale) @ counts, dtype=np.float32)
    np.log1p(normalised.data, out=normalised.data)
    return normalised


def highly_variable(adata: ad.AnnData, n_top_genes: int) -> np.ndarray:
    """Boolean mask of the ``n_top_genes`` most variable genes of log-normalised ``X`` (scanpy's Seurat flavour).

    All genes are kept when there are no more than ``n_top_genes``.
    """
    if adata.n_vars <= n_top_genes:
        return np.ones(adata.n_vars, dtype=bool)
    normalised = adata.X.expm1() if sp.issparse(adata.X) else np.expm1(np.asarray(adata.X, dtype=np.float64))
    mean = np.asarray(normalised.mean(axis=0), dtype=np.float64).ravel()
    mean_of_squares = np.asarray(normalised.multiply(normalised).mean(axis=0) if sp.issparse(normalised)
                                 else (normalised ** 2).mean(axis=0), dtype=np.float64).ravel()
    return highly_variable_from_moments(mean, mean_of_squares, adata.n_obs, n_top_genes)


def highly_variable_from_moments(mean: np.ndarray, mean_of_squares: np.ndarray, n_cells: int,
                                 n_top_genes: int) -> np.ndarray:
    """The Seurat-flavour selection of :func:`highly_variable` from each gene's mean and mean square of
    library-normalised (not logged) expression, so a dataset read in chunks gets the same genes as scanpy's
    ``highly_variable_genes(flavor="seurat")``: log dispersion z-scored within 20 bins of log mean."""
    n_genes = len(mean)
    if n_genes <= n_top_genes:
        return np.ones(n_genes, dtype=bool)
    variance = (mean_of_squares - mean ** 2) * n_cells / max(n_cells - 1, 1)
    mean = np.where(mean == 0, 1e-12, mean)
    dispersion = variance / mean
    dispersion[dispersion == 0] = np.nan
    table = pd.DataFrame({"dispersion": np.log(dispersion)})
    table["bin"] = pd.cut(np.log1p(mean), bins=20)
    stats = table.groupby("bin", observed=True)["dispersion"].agg(avg="mean", dev="std")
    alone = stats["dev"].isnull()  # a gene alone in its bin gets a normalised dispersion of 1, as in scanpy
    stats.loc[alone, "dev"] = stats.loc[alone, "avg"]
    stats.loc[alone, "avg"] = 0
    per_gene = stats.loc[table["bin"]]
    normalised_dispersion = ((table["dispersion"].to_numpy() - per_gene["avg"].to_numpy())
                             / per_gene["dev"].to_numpy())
    ranked = np.sort(normalised_dispersion[~np.isnan(normalised_dispersion)])[::-1]
    cut_off = ranked[min(n_top_genes, len(ranked)) - 1]
    return np.nan_to_num(normalised_dispersion, nan=-np.inf) >= cut_off


def steps_table(adata: ad.AnnData) -> pd.DataFrame:
    """The filtering report of :func:`preprocess` as a table, one row per step."""
    return pd.DataFrame(adata.uns["preprocess"]["steps"])
