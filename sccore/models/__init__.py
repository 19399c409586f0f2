"""Transformer cell encoders: the torch modules, masked-gene pretraining, and model folders."""

from .encoder import PRESETS, CellEncoder, EncoderConfig, MaskedGeneModel, preset
from .finetune import FinetuneConfig, finetune
from .store import LoadedModel, load_model, save_model
from .train import TrainConfig, train

__all__ = ["PRESETS", "CellEncoder", "EncoderConfig", "MaskedGeneModel", "preset", "LoadedModel", "load_model",
           "save_model", "TrainConfig", "train", "FinetuneConfig", "finetune"]
