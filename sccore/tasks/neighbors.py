"""The ``neighbors`` task: the kNN graph of an embedding, stored as ``scanpy.pp.neighbors`` stores it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import anndata as ad

from ..neighbors import INDEX_KINDS, IndexParams
from ..umap import UMAPParams
from .base import Limits, Progress, ShouldStop, TaskParams, check_stop, never, quiet, require, write_h5ad


@dataclass(frozen=True, kw_only=True)
class GraphParams(TaskParams):
    """What the neighbours and UMAP tasks share: ``n_neighbors`` per cell (itself included, as scanpy counts them)
    of ``obsm[use_rep]`` in ``input``, found by a FAISS index of ``index`` kind; the result goes to ``output``."""

    limits: ClassVar[Limits] = {"n_neighbors": (2, 1000)}
    input: str
    output: str = ""
    use_rep: str = "X_pca"
    n_neighbors: int = UMAPParams.n_neighbors
    index: str = IndexParams.kind

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.index in INDEX_KINDS, f"index is one of {', '.join(INDEX_KINDS)}, not '{self.index}'.")


@dataclass(frozen=True, kw_only=True)
class NeighborsTaskParams(GraphParams):
    """Parameters of :func:`run`: the neighbours (:class:`GraphParams`) stored under ``key_added``."""

    task: ClassVar[str] = "neighbors"
    key_added: str = "neighbors"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.key_added), "key_added names the uns key of the neighbours, e.g. neighbors.")


def run(params: NeighborsTaskParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> ad.AnnData:
    """Read ``params.input``, store the neighbours of ``obsm[use_rep]`` (``obsp['<key_added>_distances']``,
    ``obsp['<key_added>_connectivities']``, ``uns[key_added]``), write it to ``params.output`` and return it."""
    from ..io import read_h5ad
    from ..neighbors import neighbors

    output = params.output_path
    adata = read_h5ad(params.input)
    check_stop(should_stop)
    progress(0.1, f"{params.n_neighbors} nearest neighbours of every cell (FAISS)")
    neighbors(adata, params.use_rep, params.n_neighbors, IndexParams(kind=params.index), key_added=params.key_added)
    progress(0.9, "writing")
    write_h5ad(adata, output)
    return adata
