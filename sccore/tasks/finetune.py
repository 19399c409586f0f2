"""The ``finetune`` task (job kind ``finetune``): a classification head for a cell annotation added to a model and
trained with its encoder (:func:`sccore.models.finetune`), written to a new model folder."""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..training import FinetuneConfig
from .base import Limits, Progress, ShouldStop, TaskParams, never, open_counts, quiet, require, stoppable


@dataclass(frozen=True, kw_only=True)
class FinetuneParams(TaskParams):
    """Parameters of :func:`run`: the raw counts ``input`` with the labels ``obs[label_key]``, the ``model`` folder to
    start from (never written to), the new model folder ``out`` (empty in a job: the cache) and the optimisation
    (defaults and bounds: :class:`sccore.training.FinetuneConfig`'s)."""

    task: ClassVar[str] = "finetune"
    limits: ClassVar[Limits] = {"epochs": (0.001, 1000), "batch_size": (1, 4096), "learning_rate": (1e-8, 1.0),
                                "head_learning_rate": (1e-8, 1.0), "seed": (0, 2**32 - 1)}
    output_field: ClassVar[str] = "out"
    input: str
    model: str
    label_key: str
    out: str = ""
    epochs: float = FinetuneConfig.epochs
    batch_size: int = FinetuneConfig.batch_size
    learning_rate: float = FinetuneConfig.learning_rate
    head_learning_rate: float = FinetuneConfig.head_learning_rate
    library_size_key: str | None = None
    seed: int = FinetuneConfig.seed
    device: str = FinetuneConfig.device

    def __post_init__(self) -> None:
        super().__post_init__()
        self.finetune_config()  # its bounds

    def finetune_config(self) -> FinetuneConfig:
        """These settings as :func:`sccore.models.finetune` takes them."""
        return FinetuneConfig(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                              head_learning_rate=self.head_learning_rate, seed=self.seed, device=self.device)


def run(params: FinetuneParams, progress: Progress = quiet, should_stop: ShouldStop = never) -> dict:
    """Fine-tune ``params.model`` on ``params.input``'s labels into the new folder ``params.out`` (written whole at the
    end: a stopped or failed run leaves nothing there); returns the history (steps, loss, accuracy)."""
    from ..models.finetune import check_new_folder, finetune

    out = Path(params.output_path)
    check_new_folder(out, params.model)
    require(not out.exists() or (out.is_dir() and not any(out.iterdir())),
            f"{out} already exists and is not an empty folder; choose a new folder for the fine-tuned model (--out).")
    adata = open_counts(params.input, params.library_size_key)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"  # removed as jobs remove stale temporaries
    building.mkdir()
    try:  # a stop request raises Cancelled from the progress report, before the model is saved
        history = finetune(adata, params.model, params.label_key, building, params.finetune_config(),
                           library_size_key=params.library_size_key, progress=stoppable(progress, should_stop))
        building.replace(out)
    finally:
        if building.exists():
            shutil.rmtree(building)
    return history

