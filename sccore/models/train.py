"""Pretraining: the objectives the model's config weighs (masked genes and masked expression, with 15 % of gene
tokens hidden when one of them is on; every gene's counts from the cell embedding; two down-sampled views), AdamW
with linear warm-up and decay, length-grouped batches with dynamic padding, gradient accumulation, a validation
loss, bf16 autocast on CUDA, seeded and resumable, checkpoints written atomically.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ..cache import atomic_write
from ..device import resolve_device
from ..errors import InputError
from ..io import counts_matrix
from ..tokenize import MASK_ID, PAD_ID, TokenizedCell, Vocabulary, library_sizes, nonzero_medians, tokenize
from ..training import TrainConfig
from .encoder import EncoderConfig, MaskedGeneModel, preset
from .store import save_model

STATE = "trainer_state.pt"


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


@dataclass
class Corpus:
    """What training reads: the vocabulary (genes expressed in the data), per-token non-zero medians, the
    tokenized cells, their counts over the vocabulary's genes (cells x genes, in vocabulary order) and the
    library sizes used for tokenizing."""

    vocabulary: Vocabulary
    medians: np.ndarray
    cells: list[TokenizedCell]
    counts: sp.csr_matrix
    sizes: np.ndarray


def training_corpus(adata: ad.AnnData, max_length: int, n_bins: int, add_cls: bool,
                    library_size_key: str | None = None) -> Corpus:
    """Tokenize ``adata``'s counts for training (see :class:`Corpus`)."""
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
    return Corpus(vocabulary, medians, cells, sp.csr_matrix(counts[:, expressed], dtype=np.float32), sizes)


def build_corpus(adata: ad.AnnData, max_length: int, n_bins: int, add_cls: bool,
                 library_size_key: str | None = None) -> tuple[Vocabulary, np.ndarray, list[TokenizedCell]]:
    """The vocabulary (genes expressed in the data), per-token non-zero medians, and the tokenized cells."""
    corpus = training_corpus(adata, max_length, n_bins, add_cls, library_size_key)
    return corpus.vocabulary, corpus.medians, corpus.cells


def batch_codes(obs: pd.DataFrame, batch_key: str) -> tuple[np.ndarray, list[str]]:
    """Each cell's batch code and the categories, from ``obs[batch_key]``; refuses a missing column."""
    if batch_key not in obs.columns:
        raise InputError(f"obs has no column '{batch_key}' for --batch-key; columns: {', '.join(map(str, obs.columns))}.")
    values = obs[batch_key].astype(str)
    categories = sorted(values.unique())
    if len(categories) < 2:
        raise InputError(f"obs['{batch_key}'] has a single batch ({categories[0]}): there is nothing to correct; "
                         "train without --batch-key.")
    lookup = {c: i for i, c in enumerate(categories)}
    return values.map(lookup).to_numpy(np.int64), categories


class BatchTargets:
    """Assembles the inputs and targets of the objectives for a batch of corpus cells."""

    def __init__(self, corpus: Corpus, config: EncoderConfig, codes: np.ndarray | None, device: torch.device):
        self.corpus, self.config, self.codes, self.device = corpus, config, codes, device
        self.gene_to_token = np.arange(corpus.counts.shape[1]) + 3

    def __call__(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Padded tokens, attention, bins, and (as the config needs) counts, library sizes, values and batches."""
        tokens, attention, bins = pad_batch([self.corpus.cells[i] for i in rows], self.device)
        out = {"tokens": tokens, "attention": attention, "bins": bins}
        if self.config.gepc_weight or self.config.gep_weight:
            counts = torch.from_numpy(self.corpus.counts[rows].toarray()).to(self.device)
            out["counts"], out["library"] = counts, counts.sum(1)
            if self.config.gep_weight:
                sizes = torch.as_tensor(self.corpus.sizes[rows], dtype=torch.float32, device=self.device)
                genes = (tokens - 3).clamp(min=0)
                out["values"] = torch.log1p(counts.gather(1, genes) / sizes.clamp(min=1)[:, None] * 1e4)
        if self.codes is not None:
            out["batch_index"] = torch.as_tensor(self.codes[rows], device=self.device)
        return out

    def downsampled_view(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """Tokens, attention and bins of a binomially down-sampled copy of each cell (keep 50-100 % of its counts)."""
        counts = self.corpus.counts[rows].astype(np.int64)
        keep = rng.uniform(0.5, 1.0, len(rows))
        sampled = counts.copy()
        sampled.data = rng.binomial(counts.data, np.repeat(keep, np.diff(counts.indptr)))
        sampled.eliminate_zeros()
        cells = tokenize(sampled, self.corpus.sizes[rows] * keep, self.gene_to_token, self.corpus.medians,
                         self.config.max_length, self.config.n_bins, self.config.add_cls)
        return pad_batch(cells, self.device)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between two views (row i of ``a`` and of ``b`` are the same cell)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def step_losses(model: MaskedGeneModel, targets: BatchTargets, rows: np.ndarray, mask_fraction: float,
                generator: torch.Generator, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
    """Every objective's loss on the cells ``rows`` (masked as in BERT), with ``total`` the weighted sum.

    ``rng`` draws the down-sampled view of the contrastive term (None: no contrastive term, as in validation).
    """
    config = model.config
    batch = targets(rows)
    if not (config.mlm_weight or config.gep_weight):  # nothing predicts hidden genes: keep the cells whole, as the
        mask_fraction = 0.0  # embedding sees them (hidden tokens the decoder's input never sees after training)
    inputs, labels = mask_tokens(batch["tokens"], batch["attention"], config.vocab_size, mask_fraction, generator)
    bins = batch["bins"].masked_fill(labels != -100, 0)  # a masked gene's expression bin would give it away
    losses = model.losses(inputs, batch["attention"], bins if config.n_bins else None, labels,
                          values=batch.get("values"), counts=batch.get("counts"), library=batch.get("library"),
                          batch_index=batch.get("batch_index"))
    if config.contrastive_weight and rng is not None and len(rows) > 1:
        first = model.cell_embedding(model.encoder(batch["tokens"], batch["attention"],
                                                   batch["bins"] if config.n_bins else None),
                                     batch["tokens"], batch["attention"])
        tokens, attention, view_bins = targets.downsampled_view(rows, rng)
        second = model.cell_embedding(model.encoder(tokens, attention, view_bins if config.n_bins else None),
                                      tokens, attention)
        losses["contrastive"] = info_nce(first, second, config.contrastive_temperature)
        losses["total"] = losses["total"] + config.contrastive_weight * losses["contrastive"]
    return losses


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _evaluate(model: MaskedGeneModel, targets: BatchTargets, rows: np.ndarray, config: TrainConfig,
              device: torch.device, autocast: bool) -> dict[str, float]:
    """Each objective's validation loss (mean over cells; ``total`` weighted as in training, without the
    contrastive term, which needs random views)."""
    generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    sums: dict[str, float] = {}
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for start in range(0, len(rows), config.batch_size):
            batch_rows = rows[start:start + config.batch_size]
            for name, loss in step_losses(model, targets, batch_rows, config.mask_fraction, generator, None).items():
                sums[name] = sums.get(name, 0.0) + float(loss) * len(batch_rows)
    model.train()
    return {name: total / max(1, len(rows)) for name, total in sums.items()}


def train(adata: ad.AnnData, out_dir: str | Path, model_config: str | EncoderConfig = "small",
          config: TrainConfig = TrainConfig(), library_size_key: str | None = None, n_bins: int | None = None,
          resume: bool = True, progress: Callable[[float, str], None] = lambda fraction, message: None,
          batch_key: str | None = None, should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Pretrain a model on ``adata``'s counts with the objectives its config weighs; write the folder ``out_dir``.

    ``batch_key`` (an obs column) conditions the expression decoder on the batch; its categories are saved
    in the model's config. Returns the history (steps, train and validation losses, per objective too).
    With ``resume`` a folder holding a ``trainer_state.pt`` from an interrupted run continues from its last
    checkpoint. ``should_stop`` is polled after every step: the run then checkpoints and returns early.
    """
    out_dir = Path(out_dir)
    device = resolve_device(config.device)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    codes, categories = batch_codes(adata.obs, batch_key) if batch_key else (None, [])
    conditioning = {"batch_key": batch_key or "", "batch_categories": categories}
    if isinstance(model_config, str):
        probe = preset(model_config, vocab_size=3, **({} if n_bins is None else {"n_bins": n_bins}), **conditioning)
    else:
        if n_bins is not None and n_bins != model_config.n_bins:
            raise InputError(f"n_bins={n_bins} disagrees with the model config's n_bins={model_config.n_bins}; "
                             "set it in the config.")
        probe = EncoderConfig(**{**asdict(model_config), **(conditioning if batch_key else {})})
    corpus = training_corpus(adata, probe.max_length, probe.n_bins, probe.add_cls, library_size_key)
    encoder_config = EncoderConfig(**{**asdict(probe), "vocab_size": len(corpus.vocabulary)})
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(corpus.cells))
    n_val = max(1, int(round(config.val_fraction * len(corpus.cells)))) if len(corpus.cells) >= 20 else 0
    val_rows, train_rows = order[:n_val], order[n_val:]
    lengths = np.array([len(corpus.cells[i].tokens) for i in train_rows])
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size / config.grad_accum)
    total_steps = max(1, int(round(config.epochs * steps_per_epoch)))
    model = MaskedGeneModel(encoder_config).to(device)
    targets = BatchTargets(corpus, encoder_config, codes, device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.learning_rate)
    warmup = int(config.warmup_fraction * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _schedule(step, total_steps, warmup))
    history = {"step": [], "train_loss": [], "val_step": [], "val_loss": [], "train_losses": {}, "val_losses": {}}
    step = 0
    generator = torch.Generator(device=device).manual_seed(config.seed)
    if resume and (out_dir / STATE).exists():
        state = torch.load(out_dir / STATE, map_location="cpu", weights_only=True)
        if state["encoder_config"] != asdict(encoder_config) or state["n_cells"] != len(corpus.cells):
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
    running: dict[str, list[float]] = {}

    def checkpoint() -> None:
        extra = {"history": history, "train_config": asdict(config), "n_train_cells": len(train_rows),
                 "n_val_cells": len(val_rows), "library_size_key": library_size_key or "", "steps": step,
                 "total_steps": total_steps, "device": str(device)}
        save_model(model, corpus.vocabulary, corpus.medians, out_dir, extra=extra)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "step": step, "history": history, "generator": generator.get_state(), "rng": rng.bit_generator.state,
                 "encoder_config": asdict(encoder_config), "n_cells": len(corpus.cells)}
        atomic_write(out_dir / STATE, lambda tmp: torch.save(state, tmp), suffix=".pt")

    while step < total_steps:
        optimizer.zero_grad(set_to_none=True)
        step_sums: dict[str, float] = {}
        for _ in range(config.grad_accum):
            if not epoch_batches:
                epoch_batches = length_grouped_batches(lengths, config.batch_size, rng)
            rows = train_rows[epoch_batches.pop()]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                losses = step_losses(model, targets, rows, config.mask_fraction, generator, rng)
            if "total" not in losses or not torch.is_tensor(losses["total"]):
                continue
            (losses["total"] / config.grad_accum).backward()
            for name, loss in losses.items():
                step_sums[name] = step_sums.get(name, 0.0) + float(loss.detach()) / config.grad_accum
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        for name, value in step_sums.items():
            running.setdefault(name, []).append(value)
        if step % 10 == 0 or step == total_steps:
            history["step"].append(step)
            history["train_loss"].append(float(np.mean(running.get("total", [np.nan]))))
            for name, values in running.items():
                if name != "total":
                    history["train_losses"].setdefault(name, []).append(float(np.mean(values)))
            running = {}
        stopping = should_stop()
        if len(val_rows) and (step % config.eval_every == 0 or step == total_steps or stopping):
            evaluated = _evaluate(model, targets, val_rows, config, device, autocast)
            history["val_step"].append(step)
            history["val_loss"].append(evaluated["total"])
            for name, value in evaluated.items():
                if name != "total":
                    history["val_losses"].setdefault(name, []).append(value)
            checkpoint()
        progress(step / total_steps, f"step {step}/{total_steps}, loss {step_sums.get('total', float('nan')):.3f}")
        if stopping:
            break
    checkpoint()
    return history
