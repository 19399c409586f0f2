"""The ``train`` task (job kind ``train``): masked-gene pretraining of a transformer encoder into a model folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Progress, ShouldStop, TaskParams, never, open_counts, quiet, require, stoppable

CONFIGS = ("small", "v1")


@dataclass(frozen=True, kw_only=True)
class TrainParams(TaskParams):
    """Parameters of :func:`run`: the raw counts ``input``, the model folder ``out`` (empty in a job: the cache), the
    model size and the optimisation; ``resume`` continues a run ``out`` holds (a job always resumes)."""

    task: ClassVar[str] = "train"
    output_field: ClassVar[str] = "out"
    input: str
    out: str = ""
    config: str = "small"
    epochs: float = 10.0
    batch_size: int = 32
    grad_accum: int = 1
    learning_rate: float = 1e-3
    n_bins: int = 0
    cls: bool = False
    library_size_key: str | None = None
    seed: int = 0
    device: str = "auto"
    resume: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.config in CONFIGS, f"config is one of {', '.join(CONFIGS)}, not '{self.config}'.")
        require(self.epochs > 0, f"epochs must be more than 0, not {self.epochs}.")
        require(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be 1 or more.")
        require(self.learning_rate > 0, f"learning_rate must be more than 0, not {self.learning_rate}.")
        require(self.n_bins >= 0, f"n_bins is 0 (rank encoding only) or more, not {self.n_bins}.")


def run(params: TrainParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> dict:
    """Train a model on ``params.input`` into ``params.out`` (resumed from its checkpoint with ``resume``); returns the
    loss history."""
    from ..models import TrainConfig, preset, train

    out = params.output_path
    adata = open_counts(params.input, params.library_size_key)
    config = TrainConfig(epochs=params.epochs, batch_size=params.batch_size, grad_accum=params.grad_accum,
                         learning_rate=params.learning_rate, seed=params.seed, device=params.device)
    model_config = preset(params.config, vocab_size=3, n_bins=params.n_bins, add_cls=params.cls)
    return train(adata, out, model_config, config, library_size_key=params.library_size_key, resume=params.resume,
                 progress=stoppable(progress, should_stop))
