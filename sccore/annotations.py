"""Which ``obs`` columns are annotations, and which of them hold cell labels or batches: one rule for the pages,
the report and the atlas.

A column plays a role (``"label"``: cell types or clusters; ``"batch"``: batches, samples, donors, runs,
conditions) when its name, lower-cased, is one of the role's names or starts with one (``cell_type_fine``,
``sample_id``). Annotations are listed labels first, then batches, then perturbations, then the rest by name;
a guess picks the column whose name comes earliest in the role's list.
"""

from __future__ import annotations

from collections.abc import Iterable

import anndata as ad
import pandas as pd

from .io import categorical_columns

ROLE_NAMES = {
    "label": ("cell_type", "celltype", "cell_types", "label", "labels", "annotation", "louvain", "leiden"),
    "batch": ("batch", "sample", "donor_id", "donor", "individual", "patient", "library", "run", "condition"),
    "perturbation": ("perturbation",),
}
_ALL_NAMES = tuple(name for names in ROLE_NAMES.values() for name in names)


def _rank(column: str, names: tuple[str, ...]) -> tuple[int, int] | None:
    """Where ``column`` matches ``names``: (position of the name, 0 for an exact match, else 1), or None."""
    lowered = str(column).lower()
    for position, name in enumerate(names):
        if lowered == name:
            return position, 0
        if lowered.startswith(name):
            return position, 1
    return None


def _names(role: str) -> tuple[str, ...]:
    if role not in ROLE_NAMES:
        raise ValueError(f"Unknown annotation role '{role}': use {', '.join(ROLE_NAMES)}.")
    return ROLE_NAMES[role]


def looks_like(column: str, role: str) -> bool:
    """Whether the column name ``column`` names a ``role`` (``"label"``, ``"batch"`` or ``"perturbation"``)."""
    return _rank(column, _names(role)) is not None


def guess_column(columns: Iterable[str], role: str) -> str | None:
    """The column of ``columns`` that most likely plays ``role``: its name earliest in the role's names, exact
    matches before prefixes, then the given order; None when no column looks like one."""
    names = _names(role)
    ranked = [(rank, position, column) for position, column in enumerate(columns)
              if (rank := _rank(column, names)) is not None]
    return min(ranked)[2] if ranked else None


def annotation_order(columns: Iterable[str]) -> list[str]:
    """``columns`` most useful first: label-like, then batch-like, then perturbation columns (each in their names'
    order), then the rest by name."""
    def key(column: str) -> tuple:
        rank = _rank(column, _ALL_NAMES)
        return (rank if rank is not None else (len(_ALL_NAMES), 0)), str(column)

    return sorted(columns, key=key)


def annotation_columns(adata: ad.AnnData) -> list[str]:
    """Categorical ``obs`` columns worth colouring by (``sccore.io.categorical_columns``), most useful first."""
    return annotation_order(categorical_columns(adata))


def batch_candidates(adata: ad.AnnData) -> list[str]:
    """Columns that may name batches: the annotations, then text columns with a single value (offered so that a
    page can say why one batch cannot be scored)."""
    options = annotation_columns(adata)
    obs = adata.obs
    return options + [str(name) for name in obs.columns if str(name) not in options and obs[name].nunique() == 1
                      and not pd.api.types.is_numeric_dtype(obs[name])]


def guess_batch_column(obs: pd.DataFrame, columns: list[str]) -> str | None:
    """The batch column among ``columns``: a batch-like name (:func:`guess_column`), else the column with the fewest
    values but at least two (batches are usually few); None without columns."""
    if not columns:
        return None
    guessed = guess_column(columns, "batch")
    if guessed is not None:
        return guessed
    counts = {column: obs[column].nunique() for column in columns}
    return min(columns, key=lambda column: (counts[column] < 2, counts[column]))


def label_candidates(adata: ad.AnnData) -> list[str]:
    """Columns whose labels may be transferred: the annotations (most useful first), then every other ``obs`` column
    (``sccore.transfer.reference_labels`` refuses a bad one with the reason)."""
    annotations = annotation_columns(adata)
    return annotations + [column for column in map(str, adata.obs.columns) if column not in annotations]
