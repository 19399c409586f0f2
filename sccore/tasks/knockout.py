"""The ``knockout`` task: in-silico knockout (or overexpression) of genes in chosen cells, one CSV row per gene, and on
request every gene's predicted expression change.

The command line's ``knockout`` runs :func:`run`; the Knockout page's single-gene knockouts run its in-memory core,
:func:`compute`, on the page's dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import anndata as ad
import numpy as np
import pandas as pd

from .base import Progress, ShouldStop, check_stop, never, quiet, require, write_csv
from .perturbation import PerturbationParams, open_for_perturbation

if TYPE_CHECKING:
    from ..perturb import KnockoutResult

MODES = ("delete", "overexpress")


@dataclass(frozen=True, kw_only=True)
class KnockoutParams(PerturbationParams):
    """Parameters of :func:`run`: the ``genes`` (one at a time, or ``together``) knocked out in the ``where`` cells
    (``{obs column: value}``; empty: every cell), scored against the ``goal`` cells when it names some; the encoder's
    deletion ``strategy`` (:data:`sccore.perturb.STRATEGIES`) and the batch its decoder assumes (``decoder_batch``;
    None: the average of the training batches); ``expression_output``: a CSV for every gene's predicted change."""

    task: ClassVar[str] = "knockout"
    genes: tuple[str, ...]
    together: bool = False
    where: dict[str, str] = field(default_factory=dict)
    goal: dict[str, str] = field(default_factory=dict)
    mode: str = "delete"
    strategy: str = "tokens"
    decoder_batch: str | None = None
    expression_output: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.genes), "Name the genes to knock out (--genes G1,G2).")
        require(self.mode in MODES, f"mode is one of {', '.join(MODES)}, not '{self.mode}'.")
        check_strategy(self.strategy)


def check_strategy(strategy: str) -> None:
    """:class:`InputError` unless ``strategy`` is one of :data:`sccore.perturb.STRATEGIES` (imported here, not with
    the module, so that the command line starts without loading the perturbation code)."""
    from ..perturb import STRATEGIES

    require(strategy in STRATEGIES, f"strategy is one of {', '.join(STRATEGIES)}, not '{strategy}'.")


def compute(adata: ad.AnnData, params: KnockoutParams, model=None, library_size_key: str | None = None,
            cells: np.ndarray | None = None, progress: Progress = quiet,
            should_stop: ShouldStop = never, perturber=None) -> Iterator[KnockoutResult]:
    """The knockouts of ``params`` on ``adata``, already processed (with its PCA; ``model``: the loaded encoder for an
    encoder knockout), in ``cells`` (None: the ``where`` cells): each gene alone, or all ``together``, one
    :class:`sccore.perturb.KnockoutResult` each, yielded as it is computed; ``should_stop()`` is checked before each
    (``perturber``: a baseline's ``sccore.perturb.LinearPerturber`` of ``adata``, built here once for all genes unless
    given, as the Knockout page shares one across knockouts and sessions). :func:`run` and the Knockout page call
    it."""
    from ..perturb import LinearPerturber, choose_cells, knockout

    cells = choose_cells(adata, params.where) if cells is None else cells
    if perturber is None and params.method != "encoder":  # one baseline's copy of the data serves every gene
        perturber = LinearPerturber(adata, params.method, np.arange(adata.n_obs))
    groups = [list(params.genes)] if params.together else [[gene] for gene in params.genes]
    for position, group in enumerate(groups):
        check_stop(should_stop)
        progress(position / len(groups), f"knocking out {','.join(group)}")
        yield knockout(adata, group, cells, params.method, model=model, mode=params.mode,
                       library_size_key=library_size_key, expression=bool(params.expression_output),
                       batch=params.decoder_batch, strategy=params.strategy, perturber=perturber)


def run(params: KnockoutParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> pd.DataFrame:
    """Knock out each gene (or all together; :func:`compute`) and write one row per knockout (the CSV columns of
    :meth:`sccore.perturb.KnockoutResult.summary`, with the goal's columns when there is a goal) to
    ``params.output``; returns the table. With ``expression_output``, also write every gene's predicted change of
    log-expression after each knockout there (:meth:`sccore.perturb.KnockoutResult.expression_table`'s columns: gene,
    knocked_out, method, predicted_log_change); an encoder without an expression decoder is refused first."""
    from ..encode import require_decoder
    from ..perturb import choose_cells, goal_for, goal_scores

    output = params.output_path
    opened = open_for_perturbation(params)
    if (params.expression_output or params.strategy != "tokens") and opened.method == "encoder":
        require_decoder(opened.model)
    library_size_key = opened.preprocess.library_size_key
    cells = choose_cells(opened.adata, params.where)
    goal = goal_for(opened.adata, opened.method, opened.model, cells, params.goal, library_size_key)
    rows, changes = [], []
    for result in compute(opened.adata, params, opened.model, library_size_key, cells, progress, should_stop):
        row = result.summary()
        if goal is not None:
            row.update(goal_scores(result.original, result.perturbed, goal))
        rows.append(row)
        if params.expression_output:
            changes.append(result.expression_table())
    table = pd.DataFrame(rows)
    if params.expression_output:
        write_csv(pd.concat(changes, ignore_index=True), params.expression_output)
    write_csv(table, output)
    return table
