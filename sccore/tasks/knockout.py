"""The ``knockout`` task: in-silico knockout (or overexpression) of genes in chosen cells, one CSV row per gene, and on
request every gene's predicted expression change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd

from .base import Progress, ShouldStop, check_stop, never, quiet, require, write_csv
from .perturbation import PerturbationParams, open_for_perturbation

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


def run(params: KnockoutParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> pd.DataFrame:
    """Knock out each gene (or all together) and write one row per knockout (the CSV columns of
    :meth:`sccore.perturb.KnockoutResult.summary`, with the goal's columns when there is a goal) to
    ``params.output``; returns the table. With ``expression_output``, also write every gene's predicted change of
    log-expression after each knockout there (:meth:`sccore.perturb.KnockoutResult.expression_table`'s columns: gene,
    knocked_out, method, predicted_log_change); an encoder without an expression decoder is refused first."""
    from ..encode import require_decoder
    from ..perturb import choose_cells, goal_for, goal_scores, knockout

    output = params.output_path
    opened = open_for_perturbation(params)
    if (params.expression_output or params.strategy != "tokens") and opened.method == "encoder":
        require_decoder(opened.model)
    cells = choose_cells(opened.adata, params.where)
    goal = goal_for(opened.adata, opened.method, opened.model, cells, params.goal, opened.preprocess.library_size_key)
    groups = [list(params.genes)] if params.together else [[gene] for gene in params.genes]
    rows, changes = [], []
    for position, group in enumerate(groups):
        check_stop(should_stop)
        progress(position / len(groups), f"knocking out {','.join(group)}")
        result = knockout(opened.adata, group, cells, opened.method, model=opened.model, mode=params.mode,
                          library_size_key=opened.preprocess.library_size_key,
                          expression=bool(params.expression_output), batch=params.decoder_batch,
                          strategy=params.strategy)
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
