"""The ``de`` task: differential expression of one set of cells (A) against another (B), each chosen by an
``obs`` value (:func:`sccore.markers.differential_expression`), on log-normalised counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

from .base import Progress, ShouldStop, TaskParams, check_stop, never, quiet, require, write_csv
from .markers import check_method, open_expression

if TYPE_CHECKING:
    import anndata as ad
    import numpy as np


def parse_selection(name: str, text: str) -> tuple[str, str]:
    """A set of cells written ``KEY=VALUE`` (the cells whose ``obs[KEY]``, as text, is ``VALUE``) as (KEY, VALUE)."""
    key, _, value = text.partition("=")
    require("=" in text and bool(key), f"{name} selects cells as KEY=VALUE, not '{text}': write KEY=VALUE, e.g. "
                                       "condition=stimulated.")
    return key, value


def select_cells(adata: ad.AnnData, name: str, text: str) -> np.ndarray:
    """The positions of the cells that ``text`` (``KEY=VALUE``, :func:`parse_selection`) selects in ``adata``
    (:func:`sccore.perturb.choose_cells`: an unknown column or a value no cell has is refused, naming the choices)."""
    from ..perturb import choose_cells

    return choose_cells(adata, dict([parse_selection(name, text)]))


@dataclass(frozen=True, kw_only=True)
class DEParams(TaskParams):
    """Parameters of :func:`run`: the ``input`` (an ``.h5ad`` of counts or an atlas folder), the cells of set A
    (``a``) and of set B (``b``), each ``KEY=VALUE`` (the cells whose ``obs[KEY]``, as text, is VALUE), the test
    (``method``: :data:`sccore.markers.METHODS`) and the ``obs`` column of library sizes (``library_size_key``; not
    for an atlas)."""

    task: ClassVar[str] = "de"
    input: str
    a: str
    b: str
    output: str = ""
    method: str = "wilcoxon"
    library_size_key: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_selection("a", self.a)
        parse_selection("b", self.b)
        check_method(self.method)


def run(params: DEParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> pd.DataFrame:
    """Test every gene in the cells of A against those of B (:func:`sccore.markers.differential_expression` on
    :func:`sccore.tasks.markers.open_expression`'s matrix); writes the table (one row per gene, group "A", sorted by
    descending score: the genes up in A first) to ``params.output`` as CSV and returns it."""
    from ..markers import differential_expression

    output = params.output_path
    adata, expression = open_expression(params.input, params.library_size_key)
    in_a, in_b = select_cells(adata, "a", params.a), select_cells(adata, "b", params.b)
    check_stop(should_stop)
    table = differential_expression(expression, adata.var_names, in_a, in_b, method=params.method)
    check_stop(should_stop)
    progress(0.9, f"writing {len(table):,} rows")  # reported once the input is known good: see sccore.cli._ProgressBar
    write_csv(table, output)
    return table
