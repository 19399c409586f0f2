"""The ``cluster`` task: Leiden clusters of an embedding's kNN graph (:func:`sccore.cluster.leiden`), and their
agreement with known labels where the file has them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import anndata as ad

from ..neighbors import IndexParams
from .base import Limits, Progress, ShouldStop, check_stop, never, quiet, require, write_h5ad
from .neighbors import GraphParams


@dataclass(frozen=True, kw_only=True)
class ClusterParams(GraphParams):
    """Parameters of :func:`run`: Leiden at ``resolution`` (seeded by ``seed``; ``n_iterations`` passes: 2, igraph's
    default and scanpy's with its igraph flavour, or -1 until stable, 18 times slower on 271k cells) on the
    neighbours of ``obsm[use_rep]`` (:class:`~sccore.tasks.neighbors.GraphParams`; ``input`` an ``.h5ad`` or an atlas
    folder), written to ``obs[key_added]``; scored against ``obs[labels_key]`` when given."""

    task: ClassVar[str] = "cluster"
    limits: ClassVar[Limits] = {"resolution": (0.001, 100), "seed": (0, 2**32 - 1), "n_iterations": (-1, 1000)}
    resolution: float = 1.0
    key_added: str = "leiden"
    seed: int = 0
    n_iterations: int = 2
    labels_key: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.key_added), "key_added names the obs column of the clusters, e.g. leiden.")
        require(self.n_iterations == -1 or self.n_iterations >= 1,
                f"n_iterations is -1 (until stable) or 1 or more, not {self.n_iterations}.")


def has_graph(adata: ad.AnnData, neighbors_key: str, use_rep: str, n_neighbors: int) -> bool:
    """Whether ``adata`` holds the ``n_neighbors`` neighbours of ``obsm[use_rep]`` under ``neighbors_key``."""
    from ..neighbors import graph_keys

    info = adata.uns.get(neighbors_key)
    stored = info.get("params", {}) if isinstance(info, dict) else {}
    return (graph_keys(neighbors_key)[1] in adata.obsp and stored.get("use_rep") == use_rep
            and int(stored.get("n_neighbors", -1)) == n_neighbors)


def run(params: ClusterParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> ad.AnnData:
    """Read ``params.input`` (an ``.h5ad``, or an atlas folder: its ``atlas.h5ad``), store the neighbours of
    ``obsm[use_rep]`` under :func:`sccore.workflow.graph_key` (unless it already holds them: an atlas holds those of
    its PCA), cluster them (:func:`sccore.cluster.leiden`), add ARI and NMI against ``obs[labels_key]`` to
    ``uns[key_added]`` when given, write the result to ``params.output`` and return it. An atlas also keeps the
    clusters itself (:meth:`sccore.atlas.Atlas.add_annotation`: ``annotations/<key_added>.csv``, read back by
    :func:`sccore.atlas.open_atlas`), so its markers and the dashboard find them."""
    from ..cluster import cluster_agreement, leiden
    from ..io import read_h5ad
    from ..neighbors import neighbors
    from ..workflow import graph_key
    from .markers import check_column, is_atlas

    output = params.output_path
    atlas = None
    if is_atlas(params.input):
        from ..atlas import open_atlas

        atlas = open_atlas(params.input)
        adata = atlas.adata
    else:
        adata = read_h5ad(params.input)
    if params.labels_key:
        check_column(adata, params.labels_key, "--labels-key")
    neighbors_key = graph_key(params.use_rep)
    check_stop(should_stop)
    if not has_graph(adata, neighbors_key, params.use_rep, params.n_neighbors):
        neighbors(adata, params.use_rep, params.n_neighbors, IndexParams(kind=params.index), key_added=neighbors_key)
    check_stop(should_stop)  # progress is reported once the input is known good: see sccore.cli._ProgressBar
    progress(0.5, f"Leiden clustering (resolution {params.resolution:g})")
    leiden(adata, params.resolution, neighbors_key=neighbors_key, key_added=params.key_added, seed=params.seed,
           n_iterations=params.n_iterations)
    if params.labels_key:
        adata.uns[params.key_added]["agreement"] = {
            "labels_key": params.labels_key,
            **cluster_agreement(adata.obs[params.key_added], adata.obs[params.labels_key])}
    check_stop(should_stop)
    progress(0.9, "writing")
    if atlas is not None:
        atlas.add_annotation(params.key_added)
    write_h5ad(adata, output)
    return adata
