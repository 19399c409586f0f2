"""A model is a folder: ``config.json``, ``model.safetensors``, ``vocab.json`` and ``gene_medians.json``.

Geneformer's layout (a Hugging Face ``BertForMaskedLM`` folder plus its token dictionary and gene
median dictionary, both pickles) loads too, into the same modules. Weights load only through
safetensors or ``torch.load(..., weights_only=True)``; pickled dictionaries are never read from the
configured upload folder (where users' uploads and the models they train live), only from folders an
administrator or the user of a laptop put there (``allow_pickle``).
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..cache import atomic_write
from ..errors import InputError
from ..settings import load_settings
from ..tokenize import CLS, MASK, PAD, SPECIAL_TOKENS, Vocabulary
from .encoder import EncoderConfig, MaskedGeneModel

CONFIG, WEIGHTS, VOCAB, MEDIANS = "config.json", "model.safetensors", "vocab.json", "gene_medians.json"


@dataclass
class LoadedModel:
    """A model ready to embed: the module, its vocabulary, per-token medians and where it came from."""

    model: MaskedGeneModel
    vocabulary: Vocabulary
    medians: np.ndarray  # indexed by token id (specials: 1)
    path: Path
    kind: str  # "sccore" or "geneformer"

    @property
    def config(self) -> EncoderConfig:
        """The model's configuration."""
        return self.model.config


def model_fingerprint(folder: str | os.PathLike) -> str:
    """A hash of a model folder's files (config, weights, vocabulary, medians), for cache keys."""
    import hashlib

    digest = hashlib.blake2b(digest_size=12)
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.suffix in (".json", ".safetensors", ".bin", ".pkl") and path.name != "training.json":
            digest.update(path.name.encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def save_model(model: MaskedGeneModel, vocabulary: Vocabulary, medians: np.ndarray, folder: str | os.PathLike,
               extra: dict | None = None) -> None:
    """Write a model folder; each file is written atomically. ``extra`` goes into ``training.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(state, tmp), suffix=".safetensors")
    atomic_write(folder / CONFIG, model.config.to_json)
    vocabulary.save(folder / VOCAB)
    medians_by_gene = {gene: float(medians[token]) for gene, token in vocabulary.index.items()}
    atomic_write(folder / MEDIANS, lambda tmp: Path(tmp).write_text(json.dumps(medians_by_gene)))
    if extra is not None:
        atomic_write(folder / "training.json", lambda tmp: Path(tmp).write_text(json.dumps(extra, indent=1)))


def load_model(folder: str | os.PathLike, device: torch.device | str = "cpu",
               allow_pickle: bool | None = None) -> LoadedModel:
    """Load a model folder written by :func:`save_model`, or a Geneformer checkpoint folder.

    ``allow_pickle`` says whether Geneformer's pickled dictionaries may be read; by default they may, except
    from inside the configured upload folder (see :mod:`sccore.settings`).
    """
    folder = Path(folder)
    if allow_pickle is None:
        allow_pickle = not folder.resolve().is_relative_to(load_settings().upload_dir.resolve())
    if not (folder / CONFIG).exists():
        raise InputError(f"{folder} is not a model folder (no config.json). Train one with "
                         "`python -m sccore train` or point to a Geneformer checkpoint folder.")
    try:
        loaded = _load_folder(folder, allow_pickle)
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError, pickle.UnpicklingError,
            SafetensorError) as error:
        raise InputError(f"The model folder {folder.name} could not be loaded ({type(error).__name__}: "
                         f"{str(error)[:200]}). The checkpoint is damaged or incomplete: copy it again or train a "
                         "new model.") from error
    loaded.model.to(device).eval()
    return loaded


def _load_folder(folder: Path, allow_pickle: bool) -> LoadedModel:
    """Load a model folder of either kind (see :func:`load_model`)."""
    payload = json.loads((folder / CONFIG).read_text())
    if payload.get("model_type") == "bert":
        return _load_geneformer(folder, payload, allow_pickle)
    config = EncoderConfig.from_json(folder / CONFIG)
    model = _build_model(config, _read_weights(folder, allow_pickle), folder)
    vocabulary = Vocabulary.load(folder / VOCAB)
    if len(vocabulary) != config.vocab_size:
        raise InputError(f"{folder / VOCAB} lists {len(vocabulary):,} tokens but config.json says vocab_size "
                         f"{config.vocab_size:,}. The checkpoint is damaged or mixed up.")
    by_gene = json.loads((folder / MEDIANS).read_text())
    medians = np.ones(len(vocabulary))
    for gene, token in vocabulary.index.items():
        medians[token] = by_gene.get(gene, 1.0)
    return LoadedModel(model, vocabulary, medians, folder, "sccore")


def _read_weights(folder: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if (folder / WEIGHTS).exists():
        return load_file(str(folder / WEIGHTS))
    if (folder / "pytorch_model.bin").exists():
        if not allow_pickle:
            raise InputError(f"{folder.name} holds its weights as a pickle (pytorch_model.bin), never read from an "
                             "upload. Save them as model.safetensors instead.")
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise InputError(f"{folder} holds no weights (model.safetensors or pytorch_model.bin).")


def _build_model(config: EncoderConfig, state: dict[str, torch.Tensor], folder: Path) -> MaskedGeneModel:
    """The model ``config`` describes, with the weights ``state``; their shapes are compared first on torch's
    ``meta`` device, so a config declaring a huge model beside small weights allocates nothing."""
    with torch.device("meta"):
        expected = {name: tuple(tensor.shape) for name, tensor in MaskedGeneModel(config).state_dict().items()}
    wrong = [f"{name} {tuple(state[name].shape)} != {shape}" for name, shape in expected.items()
             if name in state and tuple(state[name].shape) != shape]
    missing = [name for name in expected if name not in state]
    if wrong or missing:
        raise InputError(f"The weights in {folder} do not fit its config.json "
                         f"({'; '.join((wrong + missing)[:3])}). The checkpoint is damaged or mixed up.")
    model = MaskedGeneModel(config)
    model.load_state_dict(state)
    return model


def _pickle_dictionary(folder: Path, patterns: tuple[str, ...], allow_pickle: bool) -> dict:
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if not allow_pickle:
                raise InputError(f"{folder.name} holds pickled dictionaries ({path.name}): they are read only "
                                 "from the model folder, never from an upload (pickles can run code). Ask the "
                                 "administrator to put the checkpoint in the model folder.")
            with open(path, "rb") as handle:
                return pickle.load(handle)  # noqa: S301 - a configured model folder, see module docstring
    raise InputError(f"{folder} lacks Geneformer's {patterns[0]} dictionary.")


def _load_geneformer(folder: Path, payload: dict, allow_pickle: bool) -> LoadedModel:
    """A Hugging Face BERT masked-LM folder with Geneformer's token and gene median dictionaries."""
    token_dictionary = _pickle_dictionary(folder, ("token_dictionary*.pkl",), allow_pickle)
    gene_medians = _pickle_dictionary(folder, ("gene_median_dictionary*.pkl", "*median*.pkl"), allow_pickle)
    # Re-index: our specials first (pad 0, mask 1, cls 2), then Geneformer's genes in their id order.
    specials = {"<pad>": PAD, "<mask>": MASK, "<cls>": CLS}
    genes = sorted((token for token in token_dictionary if token not in specials), key=token_dictionary.get)
    vocabulary = Vocabulary(genes=list(genes), gene_ids=list(genes))
    old_ids = [token_dictionary.get(special, None) for special in ("<pad>", "<mask>", "<cls>")]
    order = [old if old is not None else 0 for old in old_ids] + [token_dictionary[gene] for gene in genes]
    config = EncoderConfig(
        vocab_size=len(order), n_layers=payload["num_hidden_layers"], d_model=payload["hidden_size"],
        n_heads=payload["num_attention_heads"], d_ff=payload["intermediate_size"],
        max_length=payload["max_position_embeddings"], dropout=0.0,
        layer_norm_eps=payload.get("layer_norm_eps", 1e-12), name=f"geneformer:{folder.name}")
    if payload.get("hidden_act", "gelu") != "gelu":
        raise InputError(f"Unsupported activation '{payload['hidden_act']}' in {folder / CONFIG}.")
    state = _read_weights(folder, allow_pickle)
    model = _build_model(config, _rename_bert(state, config.n_layers, torch.tensor(order)), folder)
    medians = np.ones(len(vocabulary))
    for gene, token in vocabulary.index.items():
        medians[token] = float(gene_medians.get(gene, 1.0))
    return LoadedModel(model, vocabulary, medians, folder, "geneformer")


def _rename_bert(state: dict[str, torch.Tensor], n_layers: int, order: torch.Tensor) -> dict[str, torch.Tensor]:
    """Hugging Face BERT parameter names to this package's, re-indexing the vocabulary by ``order``."""
    state = {name.removeprefix("bert."): tensor for name, tensor in state.items()}
    positions = state["embeddings.position_embeddings.weight"]
    if "embeddings.token_type_embeddings.weight" in state:  # token type 0 is added to every token
        positions = positions + state["embeddings.token_type_embeddings.weight"][0]
    renamed = {
        "encoder.gene_embeddings.weight": state["embeddings.word_embeddings.weight"][order],
        "encoder.position_embeddings.weight": positions,
        "encoder.embedding_norm.weight": state["embeddings.LayerNorm.weight"],
        "encoder.embedding_norm.bias": state["embeddings.LayerNorm.bias"],
        "head_transform.weight": state["cls.predictions.transform.dense.weight"],
        "head_transform.bias": state["cls.predictions.transform.dense.bias"],
        "head_norm.weight": state["cls.predictions.transform.LayerNorm.weight"],
        "head_norm.bias": state["cls.predictions.transform.LayerNorm.bias"],
        "head_bias": state.get("cls.predictions.bias", state.get("cls.predictions.decoder.bias"))[order],
    }
    pairs = {"attention.self.query": "attention.query", "attention.self.key": "attention.key",
             "attention.self.value": "attention.value", "attention.output.dense": "attention.output",
             "attention.output.LayerNorm": "attention_norm", "intermediate.dense": "intermediate",
             "output.dense": "feed_forward_output", "output.LayerNorm": "output_norm"}
    for layer in range(n_layers):
        for theirs, ours in pairs.items():
            for kind in ("weight", "bias"):
                renamed[f"encoder.layers.{layer}.{ours}.{kind}"] = state[f"encoder.layer.{layer}.{theirs}.{kind}"]
    return renamed


__all__ = ["LoadedModel", "load_model", "save_model", "SPECIAL_TOKENS"]
