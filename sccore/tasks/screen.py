"""The ``screen`` task (job kind ``screen``): an in-silico knockout screen, one CSV row per gene.

The command line's ``screen``, the ``screen`` job and the Knockout page's background screens all run :func:`run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd

from .base import Progress, ShouldStop, check_stop, never, quiet, require, stoppable, write_csv
from .perturbation import PerturbationParams, open_for_perturbation

GOAL_STARTS = ("cells", "population")
ESTIMATES = ("exact", "first-order")


@dataclass(frozen=True, kw_only=True)
class ScreenParams(PerturbationParams):
    """Parameters of :func:`run`: the ``where`` cells (``{obs column: value}``; empty: every cell), at most
    ``max_cells`` of them (0: all; :func:`sccore.perturb.sample_cells` with ``seed``), the ``top`` most often
    expressed genes (None: every expressed gene), and a ``goal`` whose start is the screened cells
    (``goal_start="cells"``, as ``screen --goal``) or every ``where`` cell (``"population"``, as the Knockout page)."""

    task: ClassVar[str] = "screen"
    model: str = "pca"
    where: dict[str, str] = field(default_factory=dict)
    goal: dict[str, str] = field(default_factory=dict)
    goal_start: str = "cells"
    top: int | None = None
    max_cells: int = 0
    seed: int = 0
    estimate: str = "exact"
    exact_top: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.goal_start in GOAL_STARTS, f"goal_start is cells (the screened cells, as `python -m sccore "
                                                f"screen --goal`) or population (every cell of where, as the Knockout "
                                                f"page), not '{self.goal_start}'.")
        require(self.estimate in ESTIMATES, f"estimate is one of {', '.join(ESTIMATES)}, not '{self.estimate}'.")
        require(self.top is None or self.top >= 1, f"top must be 1 or more (or left out: every gene), not {self.top}.")
        require(self.max_cells >= 0, f"max_cells is 0 (every cell) or more, not {self.max_cells}.")
        require(self.exact_top >= 1, f"exact_top must be 1 or more, not {self.exact_top}.")


def run(params: ScreenParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> pd.DataFrame:
    """Screen the genes of the chosen cells (:func:`sccore.perturb.screen`) and write the ranked table to
    ``params.output``; returns it."""
    from ..perturb import choose_cells, goal_for, sample_cells, screen

    output = params.output_path
    progress(0.0, "quality control, normalisation and PCA")
    opened = open_for_perturbation(params)
    check_stop(should_stop)
    population = choose_cells(opened.adata, params.where)
    cells = sample_cells(population, params.max_cells, params.seed)
    start = cells if params.goal_start == "cells" else population
    goal = goal_for(opened.adata, opened.method, opened.model, start, params.goal, opened.preprocess.library_size_key)
    table = screen(opened.adata, cells, opened.method, model=opened.model, top=params.top, goal=goal,
                   library_size_key=opened.preprocess.library_size_key, seed=params.seed, estimate=params.estimate,
                   exact_top=params.exact_top, progress=stoppable(progress, should_stop), should_stop=should_stop)
    check_stop(should_stop)
    write_csv(table, output)
    return table
