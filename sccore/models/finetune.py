"""Fine-tuning for annotation, as Geneformer's ``Classifier`` and scEMB do: a classification head on the cell
embedding (its latent space, or the mean of the last layer over the cell's genes), trained with the encoder on
labelled cells.

The label set and the label column are saved in the new model's ``config.json``; the source model folder is
never written to. :func:`sccore.encode.classify` applies the head.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..device import resolve_device
from ..errors import InputError
from ..training import FinetuneConfig
from .encoder import EncoderConfig, MaskedGeneModel
from .store import CONFIG, LoadedModel, load_model, save_model
from .train import length_grouped_batches, pad_batch


def training_labels(obs: pd.DataFrame, label_key: str) -> tuple[np.ndarray, list[str]]:
    """Each labelled cell's label code (``-1`` = no label) and the label set, from ``obs[label_key]``.

    Refuses a missing column, fewer than two labels, and a label carried by a single cell.
    """
    if label_key not in obs.columns:
        raise InputError(f"obs has no column '{label_key}' for --label-key; columns: {', '.join(map(str, obs.columns))}.")
    column = obs[label_key]
    present = column.notna() & (column.astype(str) != "")
    values = column.astype(str)
    counts = values[present].value_counts()
    if len(counts) < 2:
        raise InputError(f"obs['{label_key}'] has fewer than two labels; fine-tuning needs at least two cell types.")
    single = sorted(counts.index[counts < 2])
    if single:
        raise InputError(f"obs['{label_key}'] has labels carried by a single cell ({', '.join(single[:5])}); "
                         "remove those cells or merge the labels, then fine-tune again.")
    labels = sorted(counts.index)
    lookup = {label: i for i, label in enumerate(labels)}
    codes = np.where(present, values.map(lookup).fillna(-1), -1).astype(np.int64)
    return codes, labels


def check_new_folder(out_dir: str | Path, source: str | Path) -> None:
    """:class:`InputError` when ``out_dir`` is the source model's folder or already holds a model: a fine-tuned model
    goes to a new folder, so that nothing trained is overwritten."""
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(source).resolve() or (out_dir / CONFIG).exists():
        raise InputError(f"{out_dir} already holds a model; choose a new folder for the fine-tuned model (--out).")


def finetune(adata: ad.AnnData, model: str | Path | LoadedModel, label_key: str, out_dir: str | Path,
             config: FinetuneConfig = FinetuneConfig(), library_size_key: str | None = None,
             progress: Callable[[float, str], None] = lambda fraction, message: None,
             should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Add a classification head for ``obs[label_key]`` to a model and train it with the encoder; write the new
    model folder ``out_dir`` (a new folder: an existing model is never overwritten).

    Returns the history (steps, training loss and accuracy).
    """
    from ..encode import DatasetTokenizer

    out_dir = Path(out_dir)
    source = model.path if isinstance(model, LoadedModel) else Path(model)
    check_new_folder(out_dir, source)
    codes, labels = training_labels(adata.obs, label_key)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device)
    tokenizer = DatasetTokenizer(adata, loaded, library_size_key)
    rows = np.flatnonzero(codes >= 0)
    cells = tokenizer(rows)
    tuned_config = EncoderConfig(**{**asdict(loaded.config), "label_key": label_key, "labels": labels})
    tuned = MaskedGeneModel(tuned_config)
    missing, _ = tuned.load_state_dict(loaded.model.state_dict(), strict=False)
    if any(not name.startswith("classifier.") for name in missing):
        raise InputError(f"The model {source} could not be extended with a classifier ({missing[:3]}).")
    tuned.to(device).train()
    head = list(tuned.classifier.parameters())
    body = [p for name, p in tuned.named_parameters() if not name.startswith("classifier.")]
    optimizer = torch.optim.AdamW([{"params": body, "lr": config.learning_rate},
                                   {"params": head, "lr": config.head_learning_rate}],
                                  weight_decay=config.weight_decay)
    total = max(1, int(round(config.epochs * math.ceil(len(cells) / config.batch_size))))
    warmup = int(config.warmup_fraction * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (step + 1) / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup)))
    rng = np.random.default_rng(config.seed)
    lengths = np.array([len(cell.tokens) for cell in cells])
    targets = torch.as_tensor(codes[rows], device=device)
    history = {"step": [], "loss": [], "accuracy": []}
    batches: list[np.ndarray] = []
    for step in range(1, total + 1):
        if not batches:
            batches = length_grouped_batches(lengths, config.batch_size, rng)
        batch = batches.pop()
        tokens, attention, bins = pad_batch([cells[i] for i in batch], device)
        hidden = tuned.encoder(tokens, attention, bins if tuned_config.n_bins else None)
        logits = tuned.classifier(tuned.cell_embedding(hidden, tokens, attention))
        loss = F.cross_entropy(logits.float(), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        history["step"].append(step)
        history["loss"].append(float(loss.detach()))
        history["accuracy"].append(float((logits.argmax(1) == targets[batch]).float().mean()))
        progress(step / total, f"step {step}/{total}, loss {history['loss'][-1]:.3f}")
        if should_stop():
            break
    tuned.eval()
    save_model(tuned, loaded.vocabulary, loaded.medians, out_dir,
               extra={"finetuned_from": str(source), "label_key": label_key, "labels": labels,
                      "n_labelled_cells": int(len(rows)), "finetune_config": asdict(config), "history": history,
                      "library_size_key": library_size_key or ""})
    return history
