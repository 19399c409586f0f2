"""The ``train`` task (job kind ``train``): pretraining of a transformer encoder into a model folder, with the
objectives its configuration weighs (masked genes, masked expression, every gene's counts from the cell embedding,
a contrastive term) and optionally a decoder conditioned on the batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..training import LIKELIHOODS, TrainConfig
from .base import Limits, Progress, ShouldStop, TaskParams, never, open_counts, quiet, require, stoppable

CONFIGS = ("small", "v1")
# model settings a run may override (None: the preset's): the objectives' weights, the latent space's size and the
# expression bins of the input
MODEL_SETTINGS = ("mlm_weight", "gep_weight", "gepc_weight", "likelihood", "contrastive_weight", "latent_dim", "n_bins")


@dataclass(frozen=True, kw_only=True)
class TrainParams(TaskParams):
    """Parameters of :func:`run`: the raw counts ``input``, the model folder ``out`` (empty in a job: the cache), the
    model size, its objectives, latent size and input bins (:data:`MODEL_SETTINGS`, ``None``: the preset's, i.e.
    :class:`sccore.models.EncoderConfig`'s), the obs column the decoder is conditioned on (``batch_key``), and the
    optimisation (defaults: :class:`sccore.training.TrainConfig`'s); ``resume`` continues a run ``out`` holds (a job
    always resumes)."""

    task: ClassVar[str] = "train"
    limits: ClassVar[Limits] = {"epochs": (0.001, 1000), "batch_size": (1, 4096), "grad_accum": (1, 1024),
                                "learning_rate": (1e-8, 1.0), "n_bins": (0, 1024), "mlm_weight": (0, 1000),
                                "gep_weight": (0, 1000), "gepc_weight": (0, 1000), "contrastive_weight": (0, 1000),
                                "latent_dim": (0, 4096), "seed": (0, 2**32 - 1)}
    output_field: ClassVar[str] = "out"
    input: str
    out: str = ""
    config: str = "small"
    epochs: float = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    grad_accum: int = TrainConfig.grad_accum
    learning_rate: float = TrainConfig.learning_rate
    n_bins: int | None = None
    cls: bool = False
    mlm_weight: float | None = None
    gep_weight: float | None = None
    gepc_weight: float | None = None
    likelihood: str | None = None
    contrastive_weight: float | None = None
    latent_dim: int | None = None
    batch_key: str | None = None
    library_size_key: str | None = None
    seed: int = TrainConfig.seed
    device: str = TrainConfig.device
    resume: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.config in CONFIGS, f"config is one of {', '.join(CONFIGS)}, not '{self.config}'.")
        require(self.likelihood is None or self.likelihood in LIKELIHOODS,
                f"likelihood is one of {', '.join(LIKELIHOODS)}, not '{self.likelihood}'.")

    @property
    def model_settings(self) -> dict:
        """The model settings given (those left ``None`` keep the preset's)."""
        return {name: getattr(self, name) for name in MODEL_SETTINGS if getattr(self, name) is not None}


def run(params: TrainParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> dict:
    """Train a model on ``params.input`` into ``params.out`` (resumed from its checkpoint with ``resume``); returns the
    loss history."""
    from ..models import preset, train

    out = params.output_path
    model_config = preset(params.config, vocab_size=3, add_cls=params.cls, **params.model_settings)
    adata = open_counts(params.input, params.library_size_key)
    config = TrainConfig(epochs=params.epochs, batch_size=params.batch_size, grad_accum=params.grad_accum,
                         learning_rate=params.learning_rate, seed=params.seed, device=params.device)
    return train(adata, out, model_config, config, library_size_key=params.library_size_key, resume=params.resume,
                 progress=stoppable(progress, should_stop), batch_key=params.batch_key)
