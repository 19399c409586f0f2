"""The ``embed --method pca`` task: quality control, normalisation, highly variable genes and PCA of raw counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import anndata as ad

from ..embed import PCAParams
from .base import Progress, QualityControl, ShouldStop, check_stop, never, open_counts, quiet, require, write_h5ad


@dataclass(frozen=True, kw_only=True)
class EmbedPCAParams(QualityControl):
    """Parameters of :func:`run`: the raw counts ``input``, the ``output`` file, the PCA and the filters."""

    task: ClassVar[str] = "embed (pca)"
    input: str
    output: str = ""
    n_comps: int = PCAParams.n_comps
    key_added: str = "X_pca"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.key_added), "key_added names the obsm key to write, e.g. X_pca.")


def compute(raw: ad.AnnData, params: EmbedPCAParams, progress: Progress = quiet,
            should_stop: ShouldStop = never) -> ad.AnnData:
    """Filter, normalise and embed the standardised raw counts ``raw`` (:func:`sccore.io.standardise`): the processed
    cells with ``obsm[key_added]``. :func:`run` and the ``integrate`` task (for a file without a PCA) call it."""
    from ..embed import pca
    from ..pp import preprocess

    check_stop(should_stop)
    progress(0.1, "quality control, normalisation and highly variable genes")
    processed = preprocess(raw, params.preprocess_params(raw))
    check_stop(should_stop)
    progress(0.6, f"PCA ({params.n_comps} components)")
    pca(processed, PCAParams(n_comps=params.n_comps), key_added=params.key_added)
    return processed


def run(params: EmbedPCAParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> ad.AnnData:
    """Filter, normalise and embed ``params.input``'s cells (:func:`compute`); writes the processed cells with
    ``obsm[key_added]`` to ``params.output`` and returns them."""
    output = params.output_path
    processed = compute(open_counts(params.input, params.library_size_key), params, progress, should_stop)
    progress(0.9, "writing")
    write_h5ad(processed, output)
    return processed
