"""The ``umap`` task (job kind ``umap``): an embedding's neighbours, then its UMAP on those neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import anndata as ad

from ..neighbors import IndexParams
from ..umap import UMAPParams
from .base import Limits, Progress, ShouldStop, check_stop, never, quiet, require, write_h5ad
from .neighbors import GraphParams


@dataclass(frozen=True, kw_only=True)
class UMAPTaskParams(GraphParams):
    """Parameters of :func:`run`: the layout of ``obsm[use_rep]`` into ``obsm[key_added]`` on its neighbours
    (:class:`~sccore.tasks.neighbors.GraphParams`), stored under ``neighbors_key``."""

    task: ClassVar[str] = "umap"
    limits: ClassVar[Limits] = {"n_neighbors": (2, 1000), "min_dist": (0, 10), "seed": (0, 2**32 - 1)}
    key_added: str = "X_umap"
    min_dist: float = UMAPParams.min_dist
    seed: int = UMAPParams.random_state
    neighbors_key: str = "neighbors"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.key_added and self.neighbors_key), "key_added and neighbors_key name where to write.")


def run(params: UMAPTaskParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> ad.AnnData:
    """Read ``params.input``, store its neighbours and lay it out (:func:`sccore.workflow.neighbors_and_umap`), write
    it to ``params.output`` and return it."""
    from dataclasses import replace

    from ..io import read_h5ad
    from ..workflow import PipelineParams, neighbors_and_umap

    output = params.output_path
    adata = read_h5ad(params.input)
    check_stop(should_stop)
    pipeline = PipelineParams(index=IndexParams(kind=params.index), n_neighbors=params.n_neighbors,
                              umap=replace(UMAPParams(), n_neighbors=params.n_neighbors, min_dist=params.min_dist,
                                           random_state=params.seed))
    neighbors_and_umap(adata, params.use_rep, pipeline, neighbors_key=params.neighbors_key,
                       key_added=params.key_added, progress=lambda fraction, message: progress(0.9 * fraction, message))
    check_stop(should_stop)
    progress(0.95, "writing")
    write_h5ad(adata, output)
    return adata
