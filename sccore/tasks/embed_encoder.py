"""The ``embed --method encoder`` task (job kind ``embed``): the cells' embedding by an encoder's model folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import anndata as ad

from ..training import POOLINGS
from .base import Limits, Progress, ShouldStop, TaskParams, never, open_counts, quiet, require, stoppable, write_h5ad

@dataclass(frozen=True, kw_only=True)
class EmbedEncoderParams(TaskParams):
    """Parameters of :func:`run`: the raw counts ``input``, the ``model`` folder, the ``output`` file (empty in a job:
    the cache), how the token outputs are pooled and where the counts' library sizes and gene IDs are."""

    task: ClassVar[str] = "embed"
    limits: ClassVar[Limits] = {"layer": (-64, 64), "batch_size": (1, 4096)}
    input: str
    model: str
    output: str = ""
    pooling: str = "cell"
    layer: int = -1
    batch_size: int = 64
    device: str = "auto"
    library_size_key: str | None = None
    gene_id_key: str | None = None
    key_added: str = "X_encoder"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.pooling in POOLINGS, f"pooling is one of {', '.join(POOLINGS)}, not '{self.pooling}'.")
        require(bool(self.key_added), "key_added names the obsm key to write, e.g. X_encoder.")


def run(params: EmbedEncoderParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> ad.AnnData:
    """Embed ``params.input``'s cells with ``params.model`` into ``obsm[key_added]`` (the model's identity in
    ``uns[key_added]``); writes the cells to ``params.output`` and returns them."""
    from ..encode import encoder

    output = params.output_path
    adata = open_counts(params.input, params.library_size_key)
    encoder(adata, params.model, key_added=params.key_added, pooling=params.pooling, layer=params.layer,
            batch_size=params.batch_size, device=params.device, library_size_key=params.library_size_key,
            gene_id_key=params.gene_id_key, progress=stoppable(progress, should_stop))
    write_h5ad(adata, output)
    return adata
