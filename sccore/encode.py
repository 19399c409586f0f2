"""Cell embeddings from a transformer encoder: the model's cell embedding (``pooling="cell"``: the mean of the
last layer over a cell's genes, projected to the model's latent space when it has one), or the mean of any
layer's outputs over the cell's genes.

Cells are tokenized and embedded in chunks (never all tokens in memory), batched by length, under
``torch.inference_mode`` with bf16 autocast where the device supports it.
"""

from __future__ import annotations

from typing import Callable

import anndata as ad
import numpy as np
import torch

from .device import describe, resolve_device
from .errors import InputError
from .io import counts_matrix
from .models.encoder import mean_pool
from .models.store import LoadedModel, load_model
from .models.train import pad_batch
from .training import POOLINGS
from .tokenize import PAD_ID, TokenizedCell, library_sizes, match_genes, tokenize

CHUNK_CELLS = 2048


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast on ``device`` (CUDA with bf16, or a CPU with AVX-512 BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def is_cell_embedding(model: LoadedModel, pooling: str, layer: int) -> bool:
    """Whether embeddings pooled by ``pooling`` at ``layer`` are ``model``'s cell embeddings (what its decoder and
    classifier read): ``"cell"``, or the mean of the last layer for a model without a latent space or cls pooling."""
    config = model.config
    plain = not config.latent_dim and config.cell_pooling == "mean"
    return pooling == "cell" or (plain and pooling == "mean" and int(layer) in (-1, config.n_layers))


def embedding_width(model: LoadedModel, pooling: str) -> int:
    """The number of dimensions of ``model``'s embeddings under ``pooling``."""
    return model.config.embedding_dim if pooling == "cell" else model.config.d_model


def pool(states: list[torch.Tensor] | torch.Tensor, attention: torch.Tensor, pooling: str, cls: bool) -> torch.Tensor:
    """One vector per cell from hidden states: mean over genes (cls token excluded), over layers too, or cls
    (``pooling="cell"`` needs the model: :meth:`~sccore.models.encoder.MaskedGeneModel.cell_embedding`)."""
    if pooling == "cls":
        if not cls:
            raise InputError("This model has no cls token; use pooling 'mean'.")
        return states[:, 0]
    if pooling == "all-layers":
        states = torch.stack(states[1:]).mean(0)
    weights = attention.clone()
    if cls:
        weights[:, 0] = False
    return mean_pool(states, weights)


NO_DECODER = ("This model has no expression decoder ({why}): it gives embedding shifts only. For predicted "
              "expression changes train a model with `python -m sccore train` (its default objective has one).")


def decoder_batch(model: LoadedModel, batch: str | None = None) -> tuple[int | None, str]:
    """The decoder's batch for ``batch``, and a sentence saying which batch was assumed.

    A model trained without a batch key needs none. For a batch-aware model, a known category is used
    as it is; ``None`` or a batch the model never saw is decoded as the average of the training batches.
    """
    categories = model.config.batch_categories
    if not categories:
        return None, "the model is not batch-aware"
    if batch is not None and str(batch) in categories:
        return categories.index(str(batch)), f"batch '{batch}'"
    unseen = f"'{batch}' is not one of the model's batches, so " if batch is not None else ""
    return None, f"{unseen}the average of the model's {len(categories)} training batches"


def _decoder(model: LoadedModel):
    """The model's expression decoder; :class:`InputError` for a model without one."""
    decoder = getattr(model.model, "decoder", None)
    if decoder is None:
        why = "a Geneformer checkpoint" if model.kind == "geneformer" else "it was trained without GEPC"
        raise InputError(NO_DECODER.format(why=why))
    return decoder


def require_decoder(model: LoadedModel) -> None:
    """:class:`InputError` (:data:`NO_DECODER`) for a model without an expression decoder, e.g. a Geneformer
    checkpoint: asked before any work that ends in predicted expression."""
    _decoder(model)


def expected_expression(model: LoadedModel, cells: torch.Tensor, batch_index: int | None) -> torch.Tensor:
    """Differentiable :func:`decode_expression` of a tensor of cell embeddings (counts per 10,000)."""
    decoder = _decoder(model)
    genes = model.model.encoder.gene_embeddings.weight
    if batch_index is None and decoder.batch_embeddings is not None:  # the average of the training batches
        return torch.stack([decoder(cells, genes, torch.full((len(cells),), b, device=cells.device)).exp()
                            for b in range(decoder.batch_embeddings.num_embeddings)]).mean(0) * 1e4
    index = None if batch_index is None else torch.full((len(cells),), batch_index, device=cells.device)
    return decoder(cells, genes, index).exp() * 1e4


def decode_expression(model: LoadedModel, embeddings: np.ndarray, batch: str | None = None,
                      chunk: int = 4096) -> np.ndarray:
    """Expected expression (counts per 10,000 counts of the vocabulary's genes) of every vocabulary gene, for
    each cell embedding (the model's cell embeddings, ``pooling="cell"``): cells x genes, in vocabulary order.

    Raises :class:`InputError` for a model without a decoder (e.g. a Geneformer checkpoint).
    """
    _decoder(model)
    index, _ = decoder_batch(model, batch)
    device = next(model.model.parameters()).device
    out = np.zeros((len(embeddings), len(model.vocabulary.genes)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(embeddings), chunk):
            cells = torch.as_tensor(embeddings[start:start + chunk], dtype=torch.float32, device=device)
            out[start:start + len(cells)] = expected_expression(model, cells, index).cpu().numpy()
    return out


def silence_in_embedding(model: LoadedModel, embeddings: np.ndarray, token_ids: list[int], batch: str | None = None,
                         steps: int = 8, rate: float = 0.5) -> np.ndarray:
    """Move each cell embedding the least distance that makes the decoder predict no expression of the genes
    ``token_ids`` (vocabulary ids): Gauss-Newton steps on ``sum_g log1p(expected_g)``, each step removing
    ``rate`` of what is left along its gradient. Co-expressed genes move with them as the decoder ties them in
    the embedding: the knockout's downstream change as the model learned it from the data."""
    index, _ = decoder_batch(model, batch)
    device = next(model.model.parameters()).device
    columns = torch.as_tensor([t - 3 for t in token_ids], device=device)
    cells = torch.as_tensor(embeddings, dtype=torch.float32, device=device).clone()
    for _ in range(steps):
        cells.requires_grad_(True)
        with torch.enable_grad():
            remaining = torch.log1p(expected_expression(model, cells, index)[:, columns]).sum(1)
            (gradient,) = torch.autograd.grad(remaining.sum(), cells)
        step = rate * remaining.detach()[:, None] * gradient / (gradient ** 2).sum(1, keepdim=True).clamp(min=1e-12)
        cells = (cells.detach() - step)
    return cells.detach().cpu().numpy()


def check_options(model: LoadedModel, pooling: str, layer: int) -> None:
    """Refuse a pooling or layer that ``model`` does not offer, naming the ones it does."""
    if pooling not in POOLINGS:
        raise InputError(f"Unknown pooling '{pooling}': use {', '.join(POOLINGS)}.")
    n_layers = model.config.n_layers
    if not -n_layers - 1 <= layer <= n_layers:
        raise InputError(f"Layer {layer} does not exist: the model has {n_layers} layers (use 0..{n_layers}).")


def embed_tokens(model: LoadedModel, cells: list[TokenizedCell], pooling: str = "cell", layer: int = -1,
                 batch_size: int = 64, precision: str = "auto") -> np.ndarray:
    """Embed tokenized cells (batched by length, under ``inference_mode``); returns cells x
    :func:`embedding_width` (float32)."""
    check_options(model, pooling, layer)
    config = model.config
    device = next(model.model.parameters()).device
    autocast = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    encoder = model.model.eval().encoder
    out = np.zeros((len(cells), embedding_width(model, pooling)), dtype=np.float32)
    order = np.argsort([-len(cell.tokens) for cell in cells], kind="stable")
    for batch_start in range(0, len(order), batch_size):
        rows = order[batch_start:batch_start + batch_size]
        tokens, attention, bins = pad_batch([cells[i] for i in rows], device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            states = encoder(tokens, attention, bins if config.n_bins else None, all_layers=True)
            if pooling == "cell":
                vectors = model.model.cell_embedding(states[-1], tokens, attention)
            else:
                chosen = states if pooling == "all-layers" else states[layer]
                vectors = pool(chosen, attention & (tokens != PAD_ID), pooling, config.add_cls)
        out[rows] = vectors.float().cpu().numpy()
    return out


def presence_gradients(model: LoadedModel, cells: list[TokenizedCell], directions: np.ndarray,
                       batch_size: int = 64, precision: str = "auto") -> tuple[np.ndarray, list[np.ndarray]]:
    """First-order effects of deleting each token on the cell embedding (``pooling="cell"``), projected on
    ``directions`` (k x :func:`embedding_width`, rows orthonormal).

    Each token gets a presence weight (1 = present) that scales it as an attention key in every layer
    (see :class:`~sccore.models.encoder.CellEncoder`) and in the mean over genes; ``G[j, p]`` is the
    first-order change of ``directions[j] · embedding`` when token ``p``'s presence goes from 1 to 0,
    so deleting token ``p`` moves the embedding by about ``directions.T @ G[:, p]``. Later tokens keep
    their positions (exact deletion moves them up by one: linearising that as well made the estimates
    worse on the demo model) and the step is linearised: this ranks genes cheaply, it does not replace
    exact deletion. Costs about ``3 k`` forward passes per cell against one per token for exact
    deletion. Returns the cells' embeddings (cells x :func:`embedding_width`) and, per cell, its k x length
    matrix of estimated shifts.
    """
    device = next(model.model.parameters()).device
    autocast = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    encoder = model.model.eval().encoder
    n_directions = len(directions)
    basis = torch.as_tensor(directions, dtype=torch.float32, device=device)
    cells_per_batch = max(1, batch_size // n_directions)
    directions_per_pass = min(n_directions, batch_size)  # long cells: a few directions per backward pass
    embeddings = np.zeros((len(cells), embedding_width(model, "cell")), dtype=np.float32)
    gradients = [np.zeros((n_directions, len(cell.tokens)), dtype=np.float32) for cell in cells]
    order = np.argsort([-len(cell.tokens) for cell in cells], kind="stable")
    for batch_start in range(0, len(order), cells_per_batch):
        rows = order[batch_start:batch_start + cells_per_batch]
        cell_tokens, cell_attention, cell_bins = pad_batch([cells[i] for i in rows], device)
        for first_direction in range(0, n_directions, directions_per_pass):
            chunk = basis[first_direction:first_direction + directions_per_pass]
            tokens, attention, bins = (t.repeat_interleave(len(chunk), 0)
                                       for t in (cell_tokens, cell_attention, cell_bins))
            presence = torch.ones(tokens.shape, device=device, requires_grad=True)
            with torch.enable_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                states = encoder(tokens, attention, bins if model.config.n_bins else None,
                                 presence=presence).float()
                weights = attention & (tokens != PAD_ID)
                if model.config.add_cls:
                    weights[:, 0] = False
                weights = weights.float() * presence
                pooled = model.model.latent((states * weights[..., None]).sum(1)
                                            / weights.sum(1, keepdim=True).clamp(min=1)).float()
                projected = (pooled * chunk.repeat(len(rows), 1)).sum()
                (gradient,) = torch.autograd.grad(projected, presence)
            gradient = -gradient.float().view(len(rows), len(chunk), -1).cpu().numpy()
            pooled = pooled.detach().view(len(rows), len(chunk), -1)[:, 0].cpu().numpy()
            for slot, cell in enumerate(rows):
                embeddings[cell] = pooled[slot]
                gradients[cell][first_direction:first_direction + len(chunk)] = \
                    gradient[slot, :, :len(cells[cell].tokens)]
    return embeddings, gradients


class DatasetTokenizer:
    """Tokenizes a dataset's cells for one model: genes matched once, cells on demand (in chunks)."""

    def __init__(self, adata: ad.AnnData, model: LoadedModel, library_size_key: str | None = None,
                 gene_id_key: str | None = None):
        self.model = model
        self.gene_to_token, self.report = match_genes(adata.var, model.vocabulary, gene_id_key)
        self.counts = counts_matrix(adata)
        self.sizes = library_sizes(self.counts, adata.obs, library_size_key)

    def __call__(self, rows: np.ndarray) -> list[TokenizedCell]:
        """The tokenized cells at positions ``rows``."""
        config = self.model.config
        return tokenize(self.counts[rows], self.sizes[rows], self.gene_to_token, self.model.medians,
                        config.max_length, config.n_bins, config.add_cls)


def embed_cells(adata: ad.AnnData, model: LoadedModel, pooling: str = "cell", layer: int = -1,
                batch_size: int = 64, library_size_key: str | None = None, gene_id_key: str | None = None,
                precision: str = "auto", progress: Callable[[float, str], None] = lambda f, m: None) -> np.ndarray:
    """Embed every cell of ``adata`` (raw counts) with a loaded model; returns cells x :func:`embedding_width`
    (float32).

    ``layer`` picks the hidden layer for ``pooling="mean"`` (-1 = last, 0 = embeddings);
    ``precision`` is ``"auto"`` (bf16 where fast), ``"bf16"`` or ``"fp32"``. Cells are tokenized
    and embedded in chunks, so the tokens of all cells are never in memory at once.
    """
    check_options(model, pooling, layer)
    tokenizer = DatasetTokenizer(adata, model, library_size_key, gene_id_key)
    out = np.zeros((adata.n_obs, embedding_width(model, pooling)), dtype=np.float32)
    for start in range(0, adata.n_obs, CHUNK_CELLS):
        rows = np.arange(start, min(start + CHUNK_CELLS, adata.n_obs))
        out[rows] = embed_tokens(model, tokenizer(rows), pooling, layer, batch_size, precision)
        progress(rows[-1] / max(1, adata.n_obs - 1), f"embedded {rows[-1] + 1:,} of {adata.n_obs:,} cells")
    return out


def encoder(adata: ad.AnnData, model: str | LoadedModel, key_added: str = "X_encoder", pooling: str = "cell",
            layer: int = -1, batch_size: int = 64, device: str = "auto", library_size_key: str | None = None,
            gene_id_key: str | None = None, progress: Callable[[float, str], None] = lambda f, m: None) -> None:
    """Embed ``adata``'s cells with a model folder (or a loaded model) into ``obsm[key_added]``.

    The model's identity and the options go to ``uns[key_added]``.
    """
    torch_device = resolve_device(device)
    loaded = load_model(model, torch_device) if not isinstance(model, LoadedModel) else model
    loaded.model.to(torch_device)
    _, report = match_genes(adata.var, loaded.vocabulary, gene_id_key)
    adata.obsm[key_added] = embed_cells(adata, loaded, pooling, layer, batch_size, library_size_key, gene_id_key,
                                        progress=progress)
    adata.uns[key_added] = {"method": "encoder", "model": str(loaded.path), "model_kind": loaded.kind,
                            "model_name": loaded.config.name, "pooling": pooling, "layer": layer,
                            "device": describe(torch_device), "genes_matched": report["matched"],
                            "genes_in_dataset": report["dataset_genes"],
                            "library_size_key": library_size_key or ""}
    if loaded.config.batch_key:  # the encoder never reads the batch; its decoder does
        seen = set(loaded.config.batch_categories)
        present = (sorted(set(adata.obs[loaded.config.batch_key].astype(str)))
                   if loaded.config.batch_key in adata.obs.columns else [])
        adata.uns[key_added].update(batch_key=loaded.config.batch_key,
                                    unseen_batches=[b for b in present if b not in seen],
                                    decoder_batch_for_unseen=decoder_batch(loaded, None)[1])


def classify(adata: ad.AnnData, model: LoadedModel, library_size_key: str | None = None,
             gene_id_key: str | None = None, progress: Callable[[float, str], None] = lambda f, m: None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's label by a fine-tuned model's classifier (``sccore.models.finetune``) and its probability.

    Raises :class:`InputError` for a model without a classifier or a dataset that lacks the model's genes.
    """
    _classifier(model)
    embedding = embed_cells(adata, model, library_size_key=library_size_key, gene_id_key=gene_id_key,
                            progress=progress)
    return classify_embeddings(model, embedding)


def _classifier(model: LoadedModel):
    """The model's classification head; :class:`InputError` for a model without one."""
    classifier = getattr(model.model, "classifier", None)
    if classifier is None:
        raise InputError(f"The model {model.path.name} has no classifier: fine-tune it first with "
                         "`python -m sccore finetune IN.h5ad --model DIR --label-key KEY --out DIR2`.")
    return classifier


def classify_embeddings(model: LoadedModel, embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`classify` of cells already embedded by ``model`` as its classifier reads them (the cell embedding,
    :func:`embed_cells`' default): each cell's label and its probability."""
    classifier = _classifier(model)
    with torch.inference_mode():
        weight = classifier.weight.detach().float().cpu().numpy()
        bias = classifier.bias.detach().float().cpu().numpy()
    logits = embedding @ weight.T + bias
    logits -= logits.max(1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(1, keepdims=True)
    best = probabilities.argmax(1)
    return np.asarray(model.config.labels, dtype=object)[best], probabilities[np.arange(len(best)), best]
