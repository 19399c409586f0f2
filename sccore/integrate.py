"""Batch integration of an embedding: Harmony (``harmonypy``) on PCA, written as
``scanpy.external.pp.harmony_integrate`` writes it (``obsm['X_pca_harmony']``), with its parameters in ``uns``.

Harmony (Korsunsky et al., Nature Methods 2019) clusters the cells softly and moves each cell by the batch-specific
offsets of its clusters, so that batches mix within clusters while the clusters (cell types) stay apart. It corrects
the cells it was fitted on: new cells cannot be mapped into its space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import anndata as ad
import numpy as np
import pandas as pd

from .errors import InputError
from .perturb import KnockoutResult

METHODS = ("harmony",)


@dataclass(frozen=True)
class HarmonyParams:
    """Parameters of :func:`harmony` (harmonypy's defaults): the diversity penalty ``theta`` (higher mixes batches
    harder), at most ``max_iter`` rounds of clustering and correction, and the ``seed`` of its k-means."""

    theta: float = 2.0
    max_iter: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.theta >= 0:
            raise InputError(f"theta (Harmony's diversity penalty) must be 0 or more, not {self.theta}.")
        if self.max_iter < 1:
            raise InputError(f"max_iter (Harmony's rounds) must be 1 or more, not {self.max_iter}.")


def default_key(use_rep: str) -> str:
    """Where :func:`harmony` writes the corrected ``obsm[use_rep]``: ``<use_rep>_harmony`` (``X_pca_harmony``)."""
    return f"{use_rep}_harmony"


def check_batches(adata: ad.AnnData, batch_key: str) -> int:
    """The number of batches in ``obs[batch_key]``; :class:`InputError` naming the fix when the column is missing,
    has a missing value or holds a single value (with the annotations that do hold several, batch-like names
    first)."""
    from .annotations import annotation_columns, looks_like

    obs = adata.obs

    def several_values() -> str:
        columns = sorted(annotation_columns(adata), key=lambda column: not looks_like(column, "batch"))
        return (f"Columns with several values: {', '.join(columns[:12])}{' …' if len(columns) > 12 else ''}."
                if columns else "This dataset has no column with several values to use as batches.")

    if batch_key not in obs.columns:
        raise InputError(f"obs has no column '{batch_key}' to take batches from. {several_values()} Give the one "
                         "that names the batches (sample, donor, sequencing run…) as the batch key.")
    values = obs[batch_key]
    if values.isna().any():
        raise InputError(f"'{batch_key}' has no value for {int(values.isna().sum()):,} of {len(values):,} cells: give "
                         "those cells a batch (e.g. 'unknown') or remove them, then integrate.")
    n_batches = int(values.nunique())
    if n_batches < 2:
        raise InputError(f"'{batch_key}' has a single value ({values.iloc[0] if len(values) else 'no cells'}) in every "
                         f"cell, so there are no batches to integrate. {several_values()} Give the one that names "
                         "the batches (sample, donor, sequencing run…) as the batch key.")
    return n_batches


def check_embedding(adata: ad.AnnData, use_rep: str) -> None:
    """:class:`InputError` naming the fix unless ``adata`` holds the embedding ``obsm[use_rep]``."""
    if use_rep not in adata.obsm:
        raise InputError(f"obsm has no '{use_rep}' to integrate (available: {', '.join(adata.obsm) or 'none'}). "
                         "Compute it first, e.g. `python -m sccore embed IN.h5ad --method pca -o OUT.h5ad`; "
                         "`python -m sccore integrate` computes X_pca itself when the file has none.")


def harmony_embedding(embedding: np.ndarray, batches, params: HarmonyParams = HarmonyParams()) -> np.ndarray:
    """Harmony's correction of ``embedding`` (cells x dimensions) for ``batches`` (one label per cell), as float32."""
    import harmonypy

    embedding = np.asarray(embedding, dtype=np.float64)
    labels = pd.Series(np.asarray(batches).astype(str), name="batch")
    n_clusters = max(1, min(round(len(labels) / 30), 100))  # harmonypy's default, at least one cluster
    result = harmonypy.run_harmony(embedding, pd.DataFrame({"batch": labels}), "batch", theta=params.theta,
                                   nclust=n_clusters, max_iter_harmony=params.max_iter, random_state=params.seed,
                                   verbose=False)
    return np.asarray(result.Z_corr, dtype=np.float32)


def harmony(adata: ad.AnnData, batch_key: str, use_rep: str = "X_pca", key_added: str | None = None,
            params: HarmonyParams = HarmonyParams()) -> str:
    """Integrate the batches of ``obs[batch_key]`` in ``obsm[use_rep]`` with Harmony; writes the corrected embedding
    to ``obsm[key_added]`` (default :func:`default_key`, e.g. ``X_pca_harmony``) and the parameters to
    ``uns[key_added]``; returns ``key_added``. Refuses (:class:`InputError`) a missing ``use_rep`` and what
    :func:`check_batches` refuses."""
    key_added = key_added or default_key(use_rep)
    check_embedding(adata, use_rep)
    n_batches = check_batches(adata, batch_key)
    adata.obsm[key_added] = harmony_embedding(adata.obsm[use_rep], adata.obs[batch_key], params)
    adata.uns[key_added] = harmony_info(batch_key, use_rep, n_batches, params)
    return key_added


def harmony_info(batch_key: str, use_rep: str, n_batches: int, params: HarmonyParams) -> dict:
    """What :func:`harmony` writes to ``uns[key_added]``: the method, its input and its parameters."""
    import harmonypy

    return {"method": "harmony", "batch_key": batch_key, "use_rep": use_rep, "n_batches": int(n_batches),
            "params": asdict(params), "harmonypy_version": harmonypy.__version__}


def corrected_knockout(result: KnockoutResult, uncorrected: np.ndarray, corrected: np.ndarray) -> KnockoutResult:
    """A knockout computed in the uncorrected embedding (e.g. PCA's baselines) moved into its Harmony integration:
    each knocked-out cell's own correction (``corrected - uncorrected``: its soft clusters' batch offsets, held fixed)
    is added to its original and perturbed embeddings, so the moves stay the baseline's, placed in Harmony's space."""
    correction = (np.asarray(corrected, dtype=np.float64) - np.asarray(uncorrected, dtype=np.float64))[result.cells]
    return replace(result, original=result.original + correction, perturbed=result.perturbed + correction)
