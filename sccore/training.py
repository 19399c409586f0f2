"""The optimisation settings of pretraining (:func:`sccore.models.train`) and fine-tuning
(:func:`sccore.models.finetune`), and the count likelihoods a model's expression objective can use.

Torch-free, so that the task layer (:mod:`sccore.tasks`), the command line and the jobs read these defaults
without importing torch; ``sccore.models`` re-exports both classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

LIKELIHOODS = ("nb", "poisson")  # of the counts under the GEPC objective: negative binomial or Poisson
# how cell embeddings are pooled (:mod:`sccore.encode`): the model's cell embedding (its latent when it has one),
# the mean over genes of one layer, of all layers, or the cls token
POOLINGS = ("cell", "mean", "all-layers", "cls")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`sccore.models.train`."""

    epochs: float = 10.0
    batch_size: int = 32
    grad_accum: int = 1
    learning_rate: float = 3e-3  # the best of 3e-4, 1e-3 and 3e-3 on Kang 2018 (benchmarks/RESULTS.md)
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    mask_fraction: float = 0.15
    val_fraction: float = 0.05
    eval_every: int = 50
    seed: int = 0
    device: str = "auto"


@dataclass(frozen=True)
class FinetuneConfig:
    """Optimisation settings of :func:`sccore.models.finetune`."""

    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 3e-4
    head_learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if not 0 < self.epochs <= 1000:
            raise InputError(f"epochs must be in (0, 1000], not {self.epochs}.")
        if not 1 <= self.batch_size <= 4096:
            raise InputError(f"batch_size must be in 1..4096, not {self.batch_size}.")
