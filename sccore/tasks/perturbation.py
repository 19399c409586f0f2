"""What the knockout, screen and validate-knockout tasks share: their input, method and filters, and the
processed dataset they perturb."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad

from ..embed import PCAParams
from ..pp import PreprocessParams
from .base import QualityControl, open_counts, require

BASELINES = ("pca", "linear")


@dataclass(frozen=True, kw_only=True)
class PerturbationParams(QualityControl):
    """The raw counts ``input``, the ``output`` CSV, the ``model`` (a model folder: the encoder, or a baseline: pca,
    linear), its ``device`` and the PCA that the baselines project with."""

    input: str
    model: str
    output: str = ""
    device: str = "auto"
    n_comps: int = PCAParams.n_comps

    @property
    def method(self) -> str:
        """``pca``, ``linear`` or ``encoder``."""
        return self.model if self.model in BASELINES else "encoder"


@dataclass
class Perturbable:
    """The processed dataset with its PCA, the method, the loaded encoder (``None`` for a baseline) and the
    preprocessing used."""

    adata: ad.AnnData
    method: str
    model: object
    preprocess: PreprocessParams


def open_for_perturbation(params: PerturbationParams) -> Perturbable:
    """Filter and normalise ``params.input``, compute its PCA, and load the encoder when ``params.model`` is one."""
    from ..device import resolve_device
    from ..embed import pca
    from ..models import load_model
    from ..pp import preprocess

    raw = open_counts(params.input, params.library_size_key)
    preprocess_params = params.preprocess_params(raw)
    adata = preprocess(raw, preprocess_params)
    pca(adata, PCAParams(n_comps=params.n_comps))
    model = load_model(params.model, resolve_device(params.device)) if params.method == "encoder" else None
    return Perturbable(adata, params.method, model, preprocess_params)
