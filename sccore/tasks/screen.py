"""The ``screen`` task (job kind ``screen``): an in-silico knockout screen, one CSV row per gene.

The command line's ``screen`` and the ``screen`` job (the Knockout page's background screens) run :func:`run`; the
Knockout page's screens in the browser session run its in-memory core, :func:`compute`, on the page's dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import anndata as ad
import numpy as np
import pandas as pd

from .base import Limits, Progress, ShouldStop, check_stop, never, quiet, require, stoppable, write_csv
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
    limits: ClassVar[Limits] = {"top": (1, 50_000), "max_cells": (0, 10_000_000), "exact_top": (1, 50_000)}
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


def screened_cells(adata: ad.AnnData, params: ScreenParams) -> tuple[np.ndarray, np.ndarray]:
    """The ``where`` population of the processed ``adata`` and its sample of at most ``max_cells`` (``seed``), the
    cells screened."""
    from ..perturb import choose_cells, sample_cells

    population = choose_cells(adata, params.where)
    return population, sample_cells(population, params.max_cells, params.seed)


def compute(adata: ad.AnnData, params: ScreenParams, model=None, library_size_key: str | None = None,
            embedding: np.ndarray | None = None, progress: Progress = quiet,
            should_stop: ShouldStop = never) -> pd.DataFrame:
    """The screen of ``params`` on ``adata``, already processed (with its PCA; ``model``: the loaded encoder for an
    encoder screen): its cells (:func:`screened_cells`), the goal in the method's space (``embedding``: every cell's,
    where the caller holds it; else computed for the cells it needs) and :func:`sccore.perturb.screen`, which stops
    early, with the cells screened so far, when ``should_stop()`` says so. :func:`run` and the Knockout page call it."""
    from ..perturb import goal_for, screen

    population, cells = screened_cells(adata, params)
    start = cells if params.goal_start == "cells" else population
    goal = goal_for(adata, params.method, model, start, params.goal, library_size_key, embedding)
    return screen(adata, cells, params.method, model=model, top=params.top, goal=goal,
                  library_size_key=library_size_key, seed=params.seed, estimate=params.estimate,
                  exact_top=params.exact_top, progress=progress, should_stop=should_stop)


def run(params: ScreenParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> pd.DataFrame:
    """Screen the genes of the chosen cells of ``params.input`` (:func:`compute`) and write the ranked table to
    ``params.output``; returns it."""
    output = params.output_path
    progress(0.0, "quality control, normalisation and PCA")
    opened = open_for_perturbation(params)
    check_stop(should_stop)
    table = compute(opened.adata, params, opened.model, opened.preprocess.library_size_key,
                    progress=stoppable(progress, should_stop), should_stop=should_stop)
    check_stop(should_stop)
    write_csv(table, output)
    return table
