"""Masked-gene pretraining: 15 % of tokens hidden, AdamW with linear warm-up and decay,
length-grouped batches with dynamic padding, gradient accumulation, a validation loss, bf16 autocast
on CUDA, seeded and resumable, checkpoints written atomically.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import anndata as ad
import numpy as np
import torch

from ..cache import atomic_write
from ..device import resolve_device
from ..errors import InputError
from ..io import counts_matrix
from ..tokenize import MASK_ID, PAD_ID, TokenizedCell, Vocabulary, library_sizes, nonzero_medians, tokenize
from .encoder import EncoderConfig, MaskedGeneModel, preset
from .store import save_model

STATE = "trainer_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`train`."""

    epochs: float = 10.0
    batch_size: int = 32
    grad_accum: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    mask_fraction: float = 0.15
    val_fraction: float = 0.05
    eval_every: int = 50
    seed: int = 0
    device: str = "auto"


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                           group_factor: int = 50) -> list[np.ndarray]:
    """Shuffled batches of cells with similar lengths, so padding wastes little compute."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * group_factor):
        group = order[start:start + batch_size * group_factor]
        group = group[np.argsort(-lengths[group], kind="stable")]
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pad_batch(cells: list[TokenizedCell], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens, attention mask and bins of ``cells``, padded to the longest cell (dynamic padding)."""
    length = max(1, max(len(cell.tokens) for cell in cells))
    tokens = np.full((len(cells), length), PAD_ID, dtype=np.int64)
    bins = np.zeros((len(cells), length), dtype=np.int64)
    for row, cell in enumerate(cells):
        tokens[row, :len(cell.tokens)] = cell.tokens
        bins[row, :len(cell.bins)] = cell.bins
    tokens_tensor = torch.from_numpy(tokens).to(device)
    return tokens_tensor, tokens_tensor != PAD_ID, torch.from_numpy(bins).to(device)


def mask_tokens(tokens: torch.Tensor, attention: torch.Tensor, vocab_size: int, fraction: float,
                generator: torch.Generator, first_gene: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of gene tokens: of the chosen ``fraction``, 80 % become <mask>, 10 % a random gene, 10 % stay."""
    is_gene = attention & (tokens >= first_gene)
    chosen = (torch.rand(tokens.shape, generator=generator, device=tokens.device) < fraction) & is_gene
    labels = torch.where(chosen, tokens, torch.full_like(tokens, -100))
    draw = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    inputs = tokens.clone()
    inputs[chosen & (draw < 0.8)] = MASK_ID
    random_genes = torch.randint(first_gene, vocab_size, tokens.shape, generator=generator, device=tokens.device)
    swap = chosen & (draw >= 0.8) & (draw < 0.9)
    inputs[swap] = random_genes[swap]
    return inputs, labels


def build_corpus(adata: ad.AnnData, max_length: int, n_bins: int, add_cls: bool,
                 library_size_key: str | None = None) -> tuple[Vocabulary, np.ndarray, list[TokenizedCell]]:
    """The vocabulary (genes expressed in the data), per-token non-zero medians, and the tokenized cells."""
    counts = counts_matrix(adata)
    sizes = library_sizes(counts, adata.obs, library_size_key)
    expressed = np.flatnonzero(np.diff(counts.tocsc().indptr) > 0)
    if len(expressed) < 10:
        raise InputError("Fewer than 10 genes are expressed in this dataset; it cannot train a model.")
    vocabulary = Vocabulary(genes=[str(g) for g in adata.var_names[expressed]],
                            gene_ids=([str(g) for g in adata.var["gene_ids"].iloc[expressed]]
                                      if "gene_ids" in adata.var else None))
    gene_to_token = np.full(adata.n_vars, -1, dtype=np.int64)
    gene_to_token[expressed] = np.arange(len(expressed)) + 3
    medians = np.ones(len(vocabulary))
    medians[3:] = nonzero_medians(counts[:, expressed], sizes)
    cells = tokenize(counts, sizes, gene_to_token, medians, max_length, n_bins, add_cls)
    return vocabulary, medians, cells


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _evaluate(model: MaskedGeneModel, cells: list[TokenizedCell], config: TrainConfig, device: torch.device,
              autocast: bool) -> float:
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    losses, weights = [], []
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for start in range(0, len(cells), config.batch_size):
            tokens, attention, bins = pad_batch(cells[start:start + config.batch_size], device)
            inputs, labels = mask_tokens(tokens, attention, model.config.vocab_size, config.mask_fraction, generator)
            bins = bins.masked_fill(labels != -100, 0)
            n = int((labels != -100).sum())
            if n:
                losses.append(float(model(inputs, attention, bins, labels)) * n)
                weights.append(n)
    model.train()
    return sum(losses) / max(1, sum(weights))


def train(adata: ad.AnnData, out_dir: str | Path, model_config: str | EncoderConfig = "small",
          config: TrainConfig = TrainConfig(), library_size_key: str | None = None, n_bins: int = 0,
          resume: bool = True, progress: Callable[[float, str], None] = lambda fraction, message: None) -> dict:
    """Pretrain a masked-gene model on ``adata``'s counts and write the model folder to ``out_dir``.

    Returns the history (steps, train and validation losses). With ``resume`` a folder holding a
    ``trainer_state.pt`` from an interrupted run continues from its last checkpoint.
    """
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if isinstance(model_config, str):
        probe = preset(model_config, vocab_size=3, n_bins=n_bins)
    else:
        if n_bins and n_bins != model_config.n_bins:
            raise InputError(f"n_bins={n_bins} disagrees with the model config's n_bins={model_config.n_bins}; "
                             "set it in the config.")
        probe = model_config
    vocabulary, medians, cells = build_corpus(adata, probe.max_length, probe.n_bins, probe.add_cls, library_size_key)
    encoder_config = (preset(model_config, len(vocabulary), n_bins=n_bins) if isinstance(model_config, str)
                      else EncoderConfig(**{**asdict(model_config), "vocab_size": len(vocabulary)}))
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(cells))
    n_val = max(1, int(round(config.val_fraction * len(cells)))) if len(cells) >= 20 else 0
    val_cells = [cells[i] for i in order[:n_val]]
    train_cells = [cells[i] for i in order[n_val:]]
    lengths = np.array([len(c.tokens) for c in train_cells])
    steps_per_epoch = math.ceil(len(train_cells) / config.batch_size / config.grad_accum)
    total_steps = max(1, int(round(config.epochs * steps_per_epoch)))
    model = MaskedGeneModel(encoder_config).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.learning_rate)
    warmup = int(config.warmup_fraction * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _schedule(step, total_steps, warmup))
    history = {"step": [], "train_loss": [], "val_step": [], "val_loss": []}
    step = 0
    generator = torch.Generator(device=device).manual_seed(config.seed)
    if resume and (out_dir / STATE).exists():
        state = torch.load(out_dir / STATE, map_location="cpu", weights_only=True)
        if state["encoder_config"] != asdict(encoder_config) or state["n_cells"] != len(cells):
            raise InputError(f"{out_dir} holds a run with another model or dataset; choose an empty folder "
                             "or pass --no-resume.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = state["step"], state["history"]
        generator.set_state(state["generator"])
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
    autocast = device.type == "cuda"
    model.train()
    epoch_batches: list[np.ndarray] = []
    running = []

    def checkpoint() -> None:
        extra = {"history": history, "train_config": asdict(config), "n_train_cells": len(train_cells),
                 "n_val_cells": len(val_cells), "library_size_key": library_size_key or "", "steps": step,
                 "total_steps": total_steps, "device": str(device)}
        save_model(model, vocabulary, medians, out_dir, extra=extra)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "step": step, "history": history, "generator": generator.get_state(), "rng": rng.bit_generator.state,
                 "encoder_config": asdict(encoder_config), "n_cells": len(cells)}
        atomic_write(out_dir / STATE, lambda tmp: torch.save(state, tmp), suffix=".pt")

    while step < total_steps:
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for _ in range(config.grad_accum):
            if not epoch_batches:
                epoch_batches = length_grouped_batches(lengths, config.batch_size, rng)
            batch = [train_cells[i] for i in epoch_batches.pop()]
            tokens, attention, bins = pad_batch(batch, device)
            inputs, labels = mask_tokens(tokens, attention, encoder_config.vocab_size, config.mask_fraction, generator)
            if not (labels != -100).any():
                continue
            bins = bins.masked_fill(labels != -100, 0)  # a masked gene's expression bin would give it away
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = model(inputs, attention, bins, labels) / config.grad_accum
            loss.backward()
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        running.append(loss_sum)
        if step % 10 == 0 or step == total_steps:
            history["step"].append(step)
            history["train_loss"].append(float(np.mean(running)))
            running = []
        if val_cells and (step % config.eval_every == 0 or step == total_steps):
            history["val_step"].append(step)
            history["val_loss"].append(_evaluate(model, val_cells, config, device, autocast))
            checkpoint()
        progress(step / total_steps, f"step {step}/{total_steps}, loss {loss_sum:.3f}")
    checkpoint()
    return history
