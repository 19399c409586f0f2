"""Preprocessing: quality control, library-size normalisation, log1p and highly variable genes.

Quality control judges cells by one of two rules (:class:`PreprocessParams`): outliers of the file's own
distribution (the default, single-cell best practice) or explicit thresholds; a gene panel is never judged by a
whole-transcriptome number (:func:`is_gene_panel`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError
from .io import check_library_size_key

logger = logging.getLogger(__name__)

QC_RULES = ("outliers", "thresholds")
GENE_PANEL_MAX_GENES = 5_000  # fewer measured genes than this: a panel or a gene subset, not a transcriptome
QC_LABELS = {"total_counts": "counts", "n_genes": "detected genes", "pct_mito": "mitochondrial %"}


@dataclass(frozen=True)
class PreprocessParams:
    """Parameters of :func:`preprocess`.

    Cells are judged by ``qc_rule``:

    - ``"outliers"`` (the default, as in sc-best-practices.org and Germain et al. 2020): a cell is removed when it
      lies more than ``n_mads`` median absolute deviations (the raw MAD, as ``scipy.stats.median_abs_deviation``
      and sc-best-practices compute it; R's scater scales it by 1.4826) from the median of the file's cells in
      log1p(total counts) or log1p(detected genes), on either side (low: empty or broken droplets; high: likely
      doublets), or above the median in mitochondrial percentage (the upper side only: few mitochondrial reads is
      no sign of a damaged cell). sc-best-practices' extra fixed 8 % mitochondrial ceiling is left out: a fixed
      ceiling is what removes a third of a cell line's cells. A figure whose MAD is 0 (half the cells or more
      share one value, e.g. no mitochondrial gene measured) removes no cell.
    - ``"thresholds"``: at least ``min_genes`` detected genes and at most ``max_pct_mito`` % mitochondrial counts.

    ``n_genes_key``, ``pct_mito_key`` and ``library_size_key`` name ``obs`` columns with whole-transcriptome
    values, for files that hold only a subset of the genes. A gene panel (:func:`is_gene_panel`) is never judged
    by a whole-transcriptome number: under ``"thresholds"`` the ``min_genes`` cut (and the ``max_pct_mito`` cut
    unless ``pct_mito_key`` gives whole-transcriptome shares) is skipped with a note; under ``"outliers"`` its
    figures are compared only with those of the file's other cells. Genes are kept when detected in at least
    ``min_cells`` cells, under either rule.
    """

    qc_rule: str = "outliers"
    n_mads: float = 5.0
    min_genes: int = 200
    max_pct_mito: float = 10.0
    min_cells: int = 3
    mito_prefix: str = "MT-"
    n_genes_key: str | None = None
    pct_mito_key: str | None = None
    library_size_key: str | None = None
    target_sum: float = 1e4
    n_top_genes: int = 2000

    def __post_init__(self) -> None:
        """Refuse an unknown rule or a non-positive number of MADs."""
        if self.qc_rule not in QC_RULES:
            raise InputError(f"The quality-control rule is one of {', '.join(QC_RULES)}, not '{self.qc_rule}'.")
        if not self.n_mads > 0:
            raise InputError(f"n_mads (median absolute deviations) must be above 0, not {self.n_mads}; 5 is usual.")


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


def is_gene_panel(n_vars: int, params: PreprocessParams) -> bool:
    """Whether the detected genes counted in ``X`` (``n_vars`` genes) are no whole-transcriptome figure: the file
    names no whole-transcriptome detected-genes column (``params.n_genes_key``) and either measures fewer than
    :data:`GENE_PANEL_MAX_GENES` genes (a droplet transcriptome detects well over 10,000 genes over its cells;
    targeted panels and gene subsets hold hundreds to a few thousand) or takes its library sizes from ``obs``
    (``params.library_size_key``: the file says ``X`` holds only some of the genes)."""
    return not params.n_genes_key and (n_vars < GENE_PANEL_MAX_GENES or bool(params.library_size_key))


def _outlier_cut(values: np.ndarray, n_mads: float, log: bool, upper_only: bool) -> tuple[float, float, str]:
    """The (low, high) cut of ``values`` at ``n_mads`` MADs from the median (on log1p when ``log``; ``-inf`` below
    when ``upper_only``), in the values' units, and why it removes nothing ('' when it may)."""
    scaled = np.log1p(values) if log else values
    median = float(np.nanmedian(scaled))
    mad = float(np.nanmedian(np.abs(scaled - median)))
    back = np.expm1 if log else float
    low = -np.inf if upper_only else float(back(median - n_mads * mad))
    high = float(back(median + n_mads * mad))
    reason = "" if mad > 0 else f"MAD 0: half the cells or more have {back(median):.4g}"
    return low, high, reason


def qc_cuts(qc: pd.DataFrame, params: PreprocessParams, gene_panel: bool = False) -> pd.DataFrame:
    """The cell criteria of ``params.qc_rule`` on the QC table ``qc`` (:func:`qc_metrics`): one row per criterion
    with the ``metric`` (a ``qc`` column), the ``criterion`` in words, its ``low`` and ``high`` cut in the
    metric's units (``-inf``/``inf``: no cut on that side) and why it is ``skipped`` ('' when it applies): a
    ``gene_panel`` (:func:`is_gene_panel`) is not judged by the fixed whole-transcriptome cuts, and an outlier cut
    whose MAD is 0 removes nothing."""
    rows = []
    if params.qc_rule == "outliers":
        n = params.n_mads
        for metric, log, upper_only in (("total_counts", True, False), ("n_genes", True, False),
                                        ("pct_mito", False, True)):
            low, high, skipped = _outlier_cut(qc[metric].to_numpy(dtype=float), n, log, upper_only)
            criterion = (f"cells at most {n:g} MADs above the median mitochondrial % (<= {high:.3g}%)" if upper_only
                         else f"cells within {n:g} MADs of the median log {QC_LABELS[metric]} "
                              f"({low:,.0f} to {high:,.0f})")
            rows.append({"metric": metric, "criterion": criterion, "low": low, "high": high, "skipped": skipped})
    else:
        panel = "a gene panel, without a whole-transcriptome obs column for this figure"
        rows.append({"metric": "n_genes", "criterion": f"cells with >= {params.min_genes} detected genes",
                     "low": float(params.min_genes), "high": np.inf, "skipped": panel if gene_panel else ""})
        rows.append({"metric": "pct_mito", "criterion": f"cells with <= {params.max_pct_mito:g}% mitochondrial counts",
                     "low": -np.inf, "high": float(params.max_pct_mito),
                     "skipped": panel if gene_panel and not params.pct_mito_key else ""})
    return pd.DataFrame(rows, columns=["metric", "criterion", "low", "high", "skipped"])


def cells_failing(qc: pd.DataFrame, cuts: pd.DataFrame) -> pd.DataFrame:
    """For every cell of ``qc``, whether it fails each criterion of ``cuts`` (:func:`qc_cuts`; one column per
    metric): outside [low, high] or missing; a skipped criterion fails no cell."""
    failing = pd.DataFrame(index=qc.index)
    for cut in cuts.itertuples():
        values = qc[cut.metric].to_numpy(dtype=float)
        failing[cut.metric] = False if cut.skipped else ~((values >= cut.low) & (values <= cut.high))
    return failing


def compare_rules(qc: pd.DataFrame, params: PreprocessParams, gene_panel: bool = False) -> pd.DataFrame:
    """How many cells each quality-control rule would remove with ``params``' settings: one row per rule, the cells
    failing each criterion (a cell may fail several; empty where the rule has no such criterion) and in total."""
    rows = []
    for rule in QC_RULES:
        ruled = replace(params, qc_rule=rule)
        failing = cells_failing(qc, qc_cuts(qc, ruled, gene_panel))
        name = f"outliers ({ruled.n_mads:g} MADs)" if rule == "outliers" else "thresholds"
        row = {"rule": name, **{QC_LABELS[metric]: pd.NA for metric in QC_LABELS}}
        row.update({QC_LABELS[metric]: int(failing[metric].sum()) for metric in failing.columns})
        removed = int(failing.any(axis=1).sum())
        rows.append({**row, "cells removed": removed, "share": removed / max(len(qc), 1)})
    table = pd.DataFrame(rows)
    return table.astype({label: "Int64" for label in QC_LABELS.values()})


def _half_warning(metric: str, params: PreprocessParams, removed: int, before: int, median: float) -> str:
    """The reason and the fix when the criterion on ``metric`` removed more than half of the ``before`` cells."""
    share = f"removed {removed:,} of {before:,} cells ({removed / before:.0%})"
    outliers = "use the outlier rule (--qc-rule outliers, or Outliers on the Data & QC page)"
    if params.qc_rule == "outliers":
        return (f"The {params.n_mads:g}-MAD outlier cut on {QC_LABELS[metric]} {share}. The cells may form separate "
                "populations (cell types, samples or a failed lane): check the histograms, and widen the cut "
                "(--n-mads) or give explicit thresholds (--qc-rule thresholds).")
    if metric == "pct_mito":
        return (f"The fixed {params.max_pct_mito:g}% mitochondrial cut {share}; their median is {median:.3g}%. Cell "
                f"lines and some tissues have more mitochondrial reads: {outliers} or raise --max-pct-mito.")
    return (f"The minimum of {params.min_genes:,} detected genes {share}; their median is {median:,.0f}. For shallow "
            f"sequencing or a gene subset, {outliers}, lower --min-genes, or name a whole-transcriptome "
            "detected-genes column.")


def _step(name: str, before: tuple[int, int], after: tuple[int, int]) -> dict:
    return {"step": name, "cells_removed": before[0] - after[0], "genes_removed": before[1] - after[1],
            "cells_left": after[0], "genes_left": after[1]}


def preprocess(adata: ad.AnnData, params: PreprocessParams = PreprocessParams()) -> ad.AnnData:
    """Filter, normalise, log-transform and flag highly variable genes; return a new AnnData.

    ``adata.X`` must hold raw counts (see :func:`sccore.io.standardise`). Cells are judged by ``params.qc_rule``
    (see :class:`PreprocessParams`), one criterion after the other. The result has
    ``X = log1p(counts / library size * target_sum)``, the counts in ``layers['counts']``, the QC table in
    ``obs``, ``var['highly_variable']``, and ``uns['preprocess']`` with the parameters, the criteria with their
    computed cuts (``criteria``), whether the file is a ``gene_panel``, how many cells and genes each step removed
    (``steps``) and ``warnings`` (reason and fix) for each step that removed more than half of its cells, which
    are also logged (the CLI prints them on stderr).
    """
    if params.library_size_key:
        check_library_size_key(adata, params.library_size_key)
    qc = qc_metrics(adata, params)
    gene_panel = is_gene_panel(adata.n_vars, params)
    cuts = qc_cuts(qc, params, gene_panel)
    failing = cells_failing(qc, cuts)
    steps, warnings = [], []
    keep_cells = np.ones(adata.n_obs, dtype=bool)
    for cut in cuts.itertuples():
        before = int(keep_cells.sum())
        keep_cells &= ~failing[cut.metric].to_numpy()
        after = int(keep_cells.sum())
        name = f"{cut.criterion}: skipped ({cut.skipped})" if cut.skipped else cut.criterion
        steps.append(_step(name, (before, adata.n_vars), (after, adata.n_vars)))
        if before - after > before / 2:
            median = float(np.nanmedian(qc[cut.metric].to_numpy(dtype=float)))
            warnings.append(_half_warning(cut.metric, params, before - after, before, median))
    shape = (int(keep_cells.sum()), adata.n_vars)
    if not keep_cells.any():
        raise InputError(
            f"Quality control removed every cell (median detected genes {qc['n_genes'].median():.0f}, "
            f"median mitochondrial {qc['pct_mito'].median():.1f}%). Lower the minimum detected genes "
            f"(now {params.min_genes}) or raise the mitochondrial limit (now {params.max_pct_mito:g}%), or use the "
            "outlier rule (qc_rule 'outliers')."
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
    for warning in warnings:
        logger.warning(warning)
    result.uns["preprocess"] = {"params": {k: ("" if v is None else v) for k, v in asdict(params).items()},
                                "criteria": cuts.assign(cells_failing=failing.sum().to_numpy())
                                .to_dict(orient="list"),
                                "gene_panel": gene_panel, "warnings": warnings,
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


def qc_warnings(adata: ad.AnnData) -> list[str]:
    """The warnings of :func:`preprocess` (steps that removed more than half of their cells), none for data
    processed before they were recorded."""
    return [str(warning) for warning in adata.uns.get("preprocess", {}).get("warnings", [])]
