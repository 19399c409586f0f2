"""The ``metrics`` task (job kind ``metrics``): scIB integration metrics of the embeddings in a file's ``obsm``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import anndata as ad
import pandas as pd

from ..metrics import MetricsParams
from ..neighbors import IndexParams
from .base import Limits, Progress, ShouldStop, TaskParams, check_stop, never, quiet, require, stoppable, write_csv
from .neighbors import INDEX_KINDS


@dataclass(frozen=True, kw_only=True)
class MetricsTaskParams(TaskParams):
    """Parameters of :func:`run`: the ``embeddings`` (obsm keys) scored for ``label_key`` (cell types) and
    ``batch_key``, against the ``unintegrated_key`` embedding; silhouettes on at most ``max_silhouette_cells``."""

    task: ClassVar[str] = "metrics"
    limits: ClassVar[Limits] = {"max_silhouette_cells": (2, 1_000_000), "seed": (0, 2**32 - 1)}
    input: str
    label_key: str
    batch_key: str
    output: str = ""
    embeddings: tuple[str, ...] = ("X_pca",)
    unintegrated_key: str = "X_pca"
    max_silhouette_cells: int = MetricsParams.max_silhouette_cells
    seed: int = MetricsParams.seed
    index: str = IndexParams.kind

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.embeddings), "Name the embeddings to score (obsm keys), e.g. X_pca,X_encoder.")
        require(self.index in INDEX_KINDS, f"index is one of {', '.join(INDEX_KINDS)}, not '{self.index}'.")


def compute(adata: ad.AnnData, params: MetricsTaskParams, progress: Progress = quiet,
            should_stop: ShouldStop = never) -> pd.DataFrame:
    """Score each embedding of ``adata`` (:func:`sccore.metrics.benchmark_embeddings`): one row per embedding (index
    ``embedding``; notes on cells left out in ``attrs['notes']``). :func:`run` and the Metrics page call it."""
    from ..metrics import benchmark_embeddings, check_inputs

    embeddings = list(params.embeddings)
    check_inputs(adata, params.label_key, params.batch_key, embeddings, params.unintegrated_key)
    check_stop(should_stop)
    metrics_params = MetricsParams(max_silhouette_cells=params.max_silhouette_cells, seed=params.seed,
                                   index=IndexParams(kind=params.index))
    return benchmark_embeddings(adata, params.label_key, params.batch_key, embeddings, params.unintegrated_key,
                                metrics_params, progress=stoppable(progress, should_stop))


def run(params: MetricsTaskParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> pd.DataFrame:
    """Score the embeddings of ``params.input`` (:func:`compute`); writes one CSV row per embedding to
    ``params.output`` and returns the table."""
    from ..io import read_h5ad

    output = params.output_path
    table = compute(read_h5ad(params.input), params, progress, should_stop)
    write_csv(table.reset_index(), output)
    return table
