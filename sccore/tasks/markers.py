"""The ``markers`` task: the marker genes of every group of an ``obs`` column (:func:`sccore.markers.rank_genes`)
on log-normalised counts; and the expression that it and the ``de`` task share (:func:`open_expression`: an
``.h5ad`` normalised in memory, or an atlas folder's gene-major store read from disk)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

from ..markers import METHODS
from .base import Progress, ShouldStop, TaskParams, check_stop, never, open_counts, quiet, require, write_csv

if TYPE_CHECKING:
    import anndata as ad
    import scipy.sparse as sp

    from ..atlas import GeneStore


def check_method(method: str) -> None:
    """:class:`sccore.errors.InputError` unless ``method`` is one of :data:`sccore.markers.METHODS`."""
    require(method in METHODS, f"method is one of {', '.join(METHODS)}, not '{method}'.")


def is_atlas(path: str) -> bool:
    """Whether ``path`` is an atlas folder (:func:`sccore.atlas.build_atlas`'s) rather than an ``.h5ad``."""
    from pathlib import Path

    return Path(path).is_dir()


def open_expression(path: str, library_size_key: str | None = None) -> tuple[ad.AnnData, sp.csr_matrix | GeneStore]:
    """The cells of ``path`` and their log-normalised expression, ``log1p(counts / library size * 1e4)``.

    For an ``.h5ad``: its raw counts (:func:`sccore.tasks.base.open_counts`) normalised in memory
    (:func:`sccore.pp.log_normalise`), library sizes from ``obs[library_size_key]`` when given, else as the other
    tasks take them (:func:`sccore.pp.default_params`: ``obs['full_total_umis']`` where the file has it, else each
    cell's total counts). For an atlas folder: ``atlas.h5ad``'s cells and the gene-major store, normalised when
    the atlas was built and read from disk a range of genes at a time (:class:`sccore.atlas.GeneStore`)."""
    import numpy as np

    from ..io import counts_matrix
    from ..pp import default_params, log_normalise
    from ..tokenize import library_sizes

    if is_atlas(path):
        from ..atlas import open_atlas

        require(library_size_key is None, "An atlas's expression was normalised when it was built (with its "
                                          "library sizes): leave out --library-size-key.")
        atlas = open_atlas(path)
        return atlas.adata, atlas.store
    adata = open_counts(path, library_size_key)
    preprocess = default_params(adata)
    counts = counts_matrix(adata)
    sizes = library_sizes(counts, adata.obs, preprocess.library_size_key)
    require(bool(np.all(sizes > 0)), f"{int((sizes <= 0).sum()):,} cell(s) have no counts: remove them from the file "
                                     "(or give --library-size-key, an obs column with each cell's total counts).")
    return adata, log_normalise(counts, sizes, preprocess.target_sum)


def check_column(adata: ad.AnnData, key: str, flag: str) -> None:
    """:class:`sccore.errors.InputError` naming the columns there are unless ``obs`` has the column ``key``."""
    columns = [str(name) for name in adata.obs.columns]
    require(key in adata.obs.columns, f"obs has no column '{key}' ({flag}): choose one of "
                                      f"{', '.join(columns[:20]) or '(none: the file has no obs columns)'}"
                                      f"{', ...' if len(columns) > 20 else ''}.")


@dataclass(frozen=True, kw_only=True)
class MarkersParams(TaskParams):
    """Parameters of :func:`run`: the ``input`` (an ``.h5ad`` of counts or an atlas folder), the ``obs`` column
    whose groups are compared (``groupby``), the test (``method``: :data:`sccore.markers.METHODS`) and the ``obs``
    column of library sizes (``library_size_key``; not for an atlas)."""

    task: ClassVar[str] = "markers"
    input: str
    groupby: str
    output: str = ""
    method: str = "wilcoxon"
    library_size_key: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_method(self.method)


def run(params: MarkersParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> pd.DataFrame:
    """Rank the genes of each group of ``obs[params.groupby]`` against the rest of the cells
    (:func:`sccore.markers.rank_genes` on :func:`open_expression`'s matrix); writes the table (one row per group and
    gene, :data:`sccore.markers.COLUMNS`) to ``params.output`` as CSV and returns it."""
    from ..markers import rank_genes

    output = params.output_path
    adata, expression = open_expression(params.input, params.library_size_key)
    check_column(adata, params.groupby, "--groupby")
    check_stop(should_stop)
    table = rank_genes(expression, adata.var_names, adata.obs[params.groupby], method=params.method)
    check_stop(should_stop)
    progress(0.9, f"writing {len(table):,} rows")  # reported once the input is known good: see sccore.cli._ProgressBar
    write_csv(table, output)
    return table
