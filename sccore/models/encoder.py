"""A BERT-style encoder over gene tokens (Geneformer's layout), with optional expression-bin embeddings.

The module layout follows Hugging Face's ``BertForMaskedLM`` (post-layer-norm blocks, learned
position embeddings, a tied masked-LM head) so that Geneformer checkpoints load into it by renaming.
Attention uses ``torch.nn.functional.scaled_dot_product_attention``; ``attention="eager"`` keeps
the textbook path as a baseline for benchmarks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


@dataclass
class EncoderConfig:
    """Everything that defines a model; saved as ``config.json`` beside the weights."""

    vocab_size: int
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 256
    max_length: int = 512
    dropout: float = 0.02
    n_bins: int = 0  # > 0 adds scGPT/scEMB-style expression-bin embeddings
    add_cls: bool = False
    layer_norm_eps: float = 1e-12
    attention: str = "sdpa"  # or "eager"
    name: str = "custom"

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise InputError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}).")

    def to_json(self, path: str | Path) -> None:
        """Write ``config.json``."""
        Path(path).write_text(json.dumps({"model_type": "sccore-encoder", **asdict(self)}, indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> "EncoderConfig":
        """Read ``config.json``, ignoring keys this version does not know."""
        payload = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


PRESETS = {
    # trains and embeds on a 2-core CPU in minutes
    # (no dropout: on CPUs attention with dropout falls back to a kernel about 3x slower, for no gain here)
    "small": dict(n_layers=3, d_model=128, n_heads=4, d_ff=256, max_length=512, dropout=0.0, name="small"),
    # Geneformer V1's size
    "v1": dict(n_layers=6, d_model=256, n_heads=4, d_ff=512, max_length=2048, dropout=0.02, name="v1"),
}


def preset(name: str, vocab_size: int, **overrides) -> EncoderConfig:
    """The named configuration (``small`` or ``v1``) for a vocabulary of ``vocab_size`` tokens."""
    if name not in PRESETS:
        raise InputError(f"Unknown model config '{name}': use {' or '.join(PRESETS)}.")
    return EncoderConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})


class SelfAttention(nn.Module):
    """Multi-head self-attention with BERT's parameter names (query, key, value, output)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.d_model // config.n_heads
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key = nn.Linear(config.d_model, config.d_model)
        self.value = nn.Linear(config.d_model, config.d_model)
        self.output = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.eager = config.attention == "eager"

    def forward(self, hidden: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape

        def heads(projection: nn.Linear) -> torch.Tensor:
            return projection(hidden).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query), heads(self.key), heads(self.value)
        dropout = self.dropout if self.training else 0.0
        if self.eager:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + additive_mask
            weights = F.dropout(scores.softmax(-1), dropout, self.training)
            context = weights @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask, dropout_p=dropout)
        return self.output(context.transpose(1, 2).reshape(batch, length, width))


class EncoderLayer(nn.Module):
    """A post-layer-norm transformer block, as in BERT and Geneformer."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(config.d_model, config.d_ff)
        self.feed_forward_output = nn.Linear(config.d_ff, config.d_model)
        self.output_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.attention_norm(hidden + self.dropout(self.attention(hidden, additive_mask)))
        expanded = self.feed_forward_output(F.gelu(self.intermediate(hidden)))
        return self.output_norm(hidden + self.dropout(expanded))


class CellEncoder(nn.Module):
    """Gene-token (+ position, + optional bin) embeddings followed by ``n_layers`` transformer blocks."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.gene_embeddings = nn.Embedding(config.vocab_size, config.d_model, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_length, config.d_model)
        self.bin_embeddings = nn.Embedding(config.n_bins + 1, config.d_model, padding_idx=0) if config.n_bins else None
        self.embedding_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layers))

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor, bins: torch.Tensor | None = None,
                all_layers: bool = False, presence: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Hidden states of the last layer (batch x length x d_model), or of every layer (embeddings first).

        ``presence`` (batch x length, 1 = present) scales each token's weight as an attention key by
        adding ``log(presence)`` to the attention mask: 0 removes the token from every other token's
        view; differentiating at 1 gives first-order deletion effects.
        """
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = self.gene_embeddings(tokens) + self.position_embeddings(positions)[None]
        if self.bin_embeddings is not None and bins is not None:
            hidden = hidden + self.bin_embeddings(bins)
        hidden = self.dropout(self.embedding_norm(hidden))
        additive_mask = torch.zeros(attention_mask.shape, dtype=hidden.dtype, device=hidden.device)
        additive_mask = additive_mask.masked_fill(~attention_mask.bool(), torch.finfo(hidden.dtype).min)
        if presence is not None:
            additive_mask = additive_mask + presence.log().to(additive_mask.dtype)
        additive_mask = additive_mask[:, None, None, :]
        states = [hidden]
        for layer in self.layers:
            hidden = layer(hidden, additive_mask)
            states.append(hidden)
        return states if all_layers else hidden


class MaskedGeneModel(nn.Module):
    """The encoder with a masked-gene prediction head whose decoder is tied to the gene embeddings."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.encoder = CellEncoder(config)
        self.head_transform = nn.Linear(config.d_model, config.d_model)
        self.head_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.head_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor, bins: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mean cross-entropy of predicting ``labels`` (``-100`` = not masked) at the masked positions."""
        hidden = self.encoder(tokens, attention_mask, bins)
        selected = labels != -100
        transformed = self.head_norm(F.gelu(self.head_transform(hidden[selected])))
        logits = transformed @ self.encoder.gene_embeddings.weight.T + self.head_bias
        return F.cross_entropy(logits.float(), labels[selected])
