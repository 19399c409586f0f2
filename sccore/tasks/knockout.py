"""The ``knockout`` task: in-silico knockout (or overexpression) of genes in chosen cells, one CSV row per gene."""

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
    (``{obs column: value}``; empty: every cell), scored against the ``goal`` cells when it names some."""

    task: ClassVar[str] = "knockout"
    genes: tuple[str, ...]
    together: bool = False
    where: dict[str, str] = field(default_factory=dict)
    goal: dict[str, str] = field(default_factory=dict)
    mode: str = "delete"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.genes), "Name the genes to knock out (--genes G1,G2).")
        require(self.mode in MODES, f"mode is one of {', '.join(MODES)}, not '{self.mode}'.")


def run(params: KnockoutParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> pd.DataFrame:
    """Knock out each gene (or all together) and write one row per knockout (the CSV columns of
    :meth:`sccore.perturb.KnockoutResult.summary`, with the goal's columns when there is a goal) to
    ``params.output``; returns the table."""
    from ..perturb import choose_cells, goal_for, goal_scores, knockout

    output = params.output_path
    opened = open_for_perturbation(params)
    cells = choose_cells(opened.adata, params.where)
    goal = goal_for(opened.adata, opened.method, opened.model, cells, params.goal, opened.preprocess.library_size_key)
    groups = [list(params.genes)] if params.together else [[gene] for gene in params.genes]
    rows = []
    for position, group in enumerate(groups):
        check_stop(should_stop)
        progress(position / len(groups), f"knocking out {','.join(group)}")
        result = knockout(opened.adata, group, cells, opened.method, model=opened.model, mode=params.mode,
                          library_size_key=opened.preprocess.library_size_key)
        row = result.summary()
        if goal is not None:
            row.update(goal_scores(result.original, result.perturbed, goal))
        rows.append(row)
    table = pd.DataFrame(rows)
    write_csv(table, output)
    return table
