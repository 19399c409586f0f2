"""The ``atlas`` task (job kind ``atlas``): the analysis of a file too large for memory, read in chunks, resumable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..atlas import Atlas, AtlasParams
from .base import Limits, Progress, ShouldStop, TaskParams, never, quiet, require, stoppable


@dataclass(frozen=True, kw_only=True)
class AtlasTaskParams(TaskParams):
    """Parameters of :func:`run`: the raw counts ``input``, the atlas folder ``out`` (empty in a job: the cache),
    cells read at a time, the filters (None: the file's defaults, :func:`sccore.pp.default_params`), the recall@15
    the index must reach, and whether to replace an atlas of other inputs in ``out``."""

    task: ClassVar[str] = "atlas"
    limits: ClassVar[Limits] = {"chunk_cells": (10, 10_000_000), "recall": (0.5, 1.0), "min_genes": (0, 100_000),
                                "n_top_genes": (1, 100_000)}
    output_field: ClassVar[str] = "out"
    input: str
    out: str = ""
    chunk_cells: int = AtlasParams.chunk_cells
    min_genes: int | None = None
    n_top_genes: int | None = None
    recall: float = AtlasParams.target_recall
    overwrite: bool = False


def run(params: AtlasTaskParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> Atlas:
    """Build (or finish building) the atlas of ``params.input`` in ``params.out`` and open it
    (:func:`sccore.atlas.build_atlas`; a run stopped midway resumes after its last finished stage)."""
    from ..atlas import atlas_params, build_atlas

    out = params.output_path
    settings = atlas_params(params.input, params.chunk_cells, params.recall, min_genes=params.min_genes,
                            n_top_genes=params.n_top_genes)
    return build_atlas(params.input, out, settings, progress=stoppable(progress, should_stop),
                       overwrite=params.overwrite)
