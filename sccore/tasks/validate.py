"""The ``validate-knockout`` task: in-silico knockouts of a CRISPR screen's targets against its real knockouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd

from .base import Limits, Progress, ShouldStop, never, quiet, require, stoppable, write_csv
from .knockout import check_strategy
from .perturbation import PerturbationParams, open_for_perturbation


@dataclass(frozen=True, kw_only=True)
class ValidateParams(PerturbationParams):
    """Parameters of :func:`run`: the obs column naming each cell's target (``perturbation_key``), its ``control``
    value, the cells kept first (``where``), the fewest knockout cells a target needs and the encoder's deletion
    ``strategy`` (:data:`sccore.perturb.STRATEGIES`)."""

    task: ClassVar[str] = "validate-knockout"
    limits: ClassVar[Limits] = {"min_knockout_cells": (1, 1_000_000)}
    perturbation_key: str = "perturbation"
    control: str = "control"
    where: dict[str, str] = field(default_factory=dict)
    min_knockout_cells: int = 10
    strategy: str = "tokens"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_strategy(self.strategy)


def run(params: ValidateParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> pd.DataFrame:
    """Knock out each measured target in the control cells and compare with the real knockout cells; writes one
    row per target (target, method, n_cells, cosine, predicted_norm, observed_norm, pearson_delta, rmse_delta:
    :func:`sccore.perturb.validate_knockouts`) to ``params.output`` and returns the table."""
    from ..encode import require_decoder
    from ..perturb import choose_cells, method_embedding, validate_knockouts

    output = params.output_path
    opened = open_for_perturbation(params)
    if params.strategy != "tokens" and opened.method == "encoder":
        require_decoder(opened.model)  # else every target's knockout would fail, and be reported as NaN
    adata = opened.adata[choose_cells(opened.adata, params.where)].copy() if params.where else opened.adata
    library_size_key = opened.preprocess.library_size_key
    embedding = method_embedding(adata, opened.method, opened.model, library_size_key)
    table = validate_knockouts(adata, opened.method, embedding, params.perturbation_key, params.control,
                               model=opened.model, min_cells=params.min_knockout_cells,
                               library_size_key=library_size_key, progress=stoppable(progress, should_stop),
                               strategy=params.strategy)
    write_csv(table, output)
    return table
