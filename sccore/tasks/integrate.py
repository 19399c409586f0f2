"""The ``integrate`` task (job kind ``integrate``): batch integration of an embedding with Harmony
(:func:`sccore.integrate.harmony`), after the ``embed --method pca`` task's PCA when the file has none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import anndata as ad

from ..embed import PCAParams
from ..integrate import METHODS, HarmonyParams
from .base import Limits, Progress, QualityControl, ShouldStop, check_stop, never, quiet, require, write_h5ad


@dataclass(frozen=True, kw_only=True)
class IntegrateParams(QualityControl):
    """Parameters of :func:`run`: the batches of ``obs[batch_key]`` integrated in ``obsm[use_rep]`` by ``method``
    (Harmony: ``theta``, ``max_iter``, ``seed``), written to ``obsm[key_added]`` (``""``: ``<use_rep>_harmony``).
    A file without ``X_pca`` is filtered and embedded first as ``embed --method pca`` does (``n_comps`` and the
    quality-control fields)."""

    task: ClassVar[str] = "integrate"
    limits: ClassVar[Limits] = {"theta": (0, 100), "max_iter": (1, 1000)}
    input: str
    batch_key: str
    output: str = ""
    method: str = "harmony"
    use_rep: str = "X_pca"
    key_added: str = ""
    n_comps: int = PCAParams.n_comps
    theta: float = HarmonyParams.theta
    max_iter: int = HarmonyParams.max_iter
    seed: int = HarmonyParams.seed

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.method in METHODS, f"method is one of {', '.join(METHODS)}, not '{self.method}'.")
        require(bool(self.use_rep), "use_rep names the obsm embedding to integrate, e.g. X_pca.")
        self.harmony_params()

    def harmony_params(self) -> HarmonyParams:
        """Harmony's parameters (checked there)."""
        return HarmonyParams(theta=self.theta, max_iter=self.max_iter, seed=self.seed)


def embedded(params: IntegrateParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> ad.AnnData:
    """``params.input`` with ``obsm[use_rep]``: as it is when it has one, else (for ``X_pca``) its raw counts filtered
    and embedded by the ``embed --method pca`` task (:func:`sccore.tasks.embed_pca.compute`). The batch key is
    checked first, so a bad one is refused before any work."""
    from ..integrate import check_batches, check_embedding
    from ..io import read_h5ad, standardise
    from . import embed_pca

    adata = read_h5ad(params.input)
    check_batches(adata, params.batch_key)
    if params.use_rep != "X_pca" or params.use_rep in adata.obsm:
        check_embedding(adata, params.use_rep)
        return adata
    pca_params = embed_pca.EmbedPCAParams(
        input=params.input, n_comps=params.n_comps, min_genes=params.min_genes, max_pct_mito=params.max_pct_mito,
        min_cells=params.min_cells, n_top_genes=params.n_top_genes, library_size_key=params.library_size_key)
    raw = standardise(adata, params.library_size_key)
    return embed_pca.compute(raw, pca_params, lambda fraction, message: progress(0.6 * fraction, message), should_stop)


def run(params: IntegrateParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> ad.AnnData:
    """Integrate ``params.input``'s batches (:func:`embedded`, then :func:`sccore.integrate.harmony`), write the file
    with ``obsm[key_added]`` and ``uns[key_added]`` to ``params.output`` and return it."""
    from ..integrate import harmony

    output = params.output_path
    adata = embedded(params, progress, should_stop)
    check_stop(should_stop)
    progress(0.7, f"Harmony on {params.use_rep} over the batches of {params.batch_key}")
    harmony(adata, params.batch_key, params.use_rep, params.key_added or None, params.harmony_params())
    check_stop(should_stop)
    progress(0.9, "writing")
    write_h5ad(adata, output)
    return adata
