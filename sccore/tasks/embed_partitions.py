"""The ``embed-partitions`` task: an encoder's embedding of a large file as Dask tasks over partitions, resumable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..partitions import PARTITION_CELLS, PartitionedEmbedding
from .base import Limits, Progress, ShouldStop, TaskParams, never, quiet, require, stoppable
from .embed_encoder import POOLINGS


@dataclass(frozen=True, kw_only=True)
class EmbedPartitionsParams(TaskParams):
    """Parameters of :func:`run`: the raw counts ``input``, the ``model`` folder, the ``output`` folder, cells per
    Dask task, the cluster (``scheduler``; None: the settings' ``scheduler_address``, else a local cluster of
    ``workers`` processes), and the encoder's options on each worker."""

    task: ClassVar[str] = "embed-partitions"
    limits: ClassVar[Limits] = {"partition_cells": (100, 10_000_000), "workers": (1, 64), "torch_threads": (1, 256),
                                "layer": (-64, 64), "batch_size": (1, 4096)}
    input: str
    model: str
    output: str = ""
    partition_cells: int = PARTITION_CELLS
    workers: int = 1
    scheduler: str | None = None
    torch_threads: int = 1
    pooling: str = "cell"
    layer: int = -1
    batch_size: int = 64
    library_size_key: str | None = None
    gene_id_key: str | None = None
    device: str = "auto"
    overwrite: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.pooling in POOLINGS, f"pooling is one of {', '.join(POOLINGS)}, not '{self.pooling}'.")


def run(params: EmbedPartitionsParams, progress: Progress = quiet,
        should_stop: ShouldStop = never) -> PartitionedEmbedding:
    """Embed every cell of ``params.input`` into ``params.output/embedding.npy`` (:func:`sccore.partitions.
    embed_partitions`; finished partitions are kept, so a stopped run resumes)."""
    from ..jobs import close, connect
    from ..partitions import embed_partitions
    from ..settings import load_settings

    output = params.output_path
    scheduler = params.scheduler if params.scheduler is not None else load_settings().scheduler_address
    client = connect(scheduler, n_workers=params.workers)
    try:
        return embed_partitions(params.input, params.model, output, client, partition_cells=params.partition_cells,
                                pooling=params.pooling, layer=params.layer, batch_size=params.batch_size,
                                library_size_key=params.library_size_key, gene_id_key=params.gene_id_key,
                                device=params.device, torch_threads=params.torch_threads,
                                overwrite=params.overwrite, progress=stoppable(progress, should_stop))
    finally:
        close(client)
