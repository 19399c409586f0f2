"""A BERT-style encoder over gene tokens (Geneformer's layout), with optional expression-bin embeddings,
and the heads of its pretraining objectives.

The module layout follows Hugging Face's ``BertForMaskedLM`` (post-layer-norm blocks, learned
position embeddings, a tied masked-LM head) so that Geneformer checkpoints load into it by renaming.
Attention uses ``torch.nn.functional.scaled_dot_product_attention``; ``attention="eager"`` keeps
the textbook path as a baseline for benchmarks.

Besides Geneformer's masked-gene objective, a model can learn (weights in :class:`EncoderConfig`):

* GEP (scGPT): the log-normalised expression of each masked gene, from its hidden state;
* GEPC / MVC (scGPT), with scVI's count likelihood: every vocabulary gene's counts from the cell
  embedding alone (the mean of the last layer over the cell's genes, or with ``latent_dim`` > 0 its
  projection to a small latent space, as scVI's latent), through an
  :class:`ExpressionDecoder` whose per-gene queries come from the gene token embeddings, with a
  negative binomial (or Poisson) likelihood that knows the cell's library size, optionally
  conditioned on the cell's batch (so that the embedding need not carry what only the batch explains);
* a contrastive term (InfoNCE) between the embeddings of two binomially down-sampled views of a cell.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..training import LIKELIHOODS


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
    # pretraining objectives: loss weights, 0 = off (see the module docstring)
    mlm_weight: float = 1.0  # Geneformer: the identity of masked gene tokens
    gep_weight: float = 0.0  # scGPT GEP: masked genes' log-normalised expression
    gepc_weight: float = 0.0  # scGPT GEPC/MVC: every gene's counts from the cell embedding (adds a decoder)
    likelihood: str = "nb"  # of the counts under GEPC: "nb" (negative binomial) or "poisson"
    contrastive_weight: float = 0.0  # InfoNCE between two down-sampled views of each cell
    contrastive_temperature: float = 0.1
    cell_pooling: str = "mean"  # the cell embedding the objectives train: "mean" over genes, or the "cls" token
    latent_dim: int = 0  # > 0: the cell embedding is a projection of the standardised pooled state to this many dims
    batch_key: str = ""  # obs column the decoder is conditioned on ("" = none)
    batch_categories: list[str] = field(default_factory=list)
    # fine-tuned for annotation (``sccore.models.finetune``): a classification head over these labels
    label_key: str = ""
    labels: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise InputError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}).")
        if self.likelihood not in LIKELIHOODS:
            raise InputError(f"Unknown likelihood '{self.likelihood}': use {' or '.join(LIKELIHOODS)}.")
        weights = (self.mlm_weight, self.gep_weight, self.gepc_weight, self.contrastive_weight)
        if min(weights) < 0 or not any(weights):
            raise InputError("The objective weights must be >= 0 and at least one > 0 (mlm, gep, gepc, contrastive).")
        if self.cell_pooling not in ("mean", "cls") or (self.cell_pooling == "cls" and not self.add_cls):
            raise InputError("cell_pooling is 'mean', or 'cls' for a model with add_cls=True.")
        if self.batch_key and not self.gepc_weight:
            raise InputError("A batch key conditions the expression decoder: set gepc_weight > 0 to use it.")
        if self.latent_dim < 0:
            raise InputError(f"latent_dim must be >= 0 (0 = the pooled state itself), not {self.latent_dim}.")
        if self.latent_dim and not (self.gepc_weight or self.contrastive_weight):
            raise InputError("Only GEPC or the contrastive term trains a latent space: give one a weight > 0, or set "
                             "the latent size to 0 (--latent-dim 0) to train on masked genes alone.")
        self.batch_categories = [str(c) for c in self.batch_categories]
        self.labels = [str(label) for label in self.labels]

    @property
    def has_decoder(self) -> bool:
        """Whether the model maps cell embeddings to expected expression (trained with GEPC)."""
        return self.gepc_weight > 0

    @property
    def embedding_dim(self) -> int:
        """The width of the cell embedding (:meth:`MaskedGeneModel.cell_embedding`): ``latent_dim`` or ``d_model``."""
        return self.latent_dim or self.d_model

    def to_json(self, path: str | Path) -> None:
        """Write ``config.json``."""
        Path(path).write_text(json.dumps({"model_type": "sccore-encoder", **asdict(self)}, indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> "EncoderConfig":
        """Read ``config.json``, ignoring keys this version does not know."""
        payload = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


# Both presets learn every gene's counts from a 32-dimensional latent cell embedding (GEPC, negative binomial; no
# masked-gene term, which teaches the encoder to fill a deleted gene in from its context): on Kang 2018 this beat
# masked genes + GEPC and GEPC without a latent space on the inner criterion (benchmarks/RESULTS.md, "what we
# tried"), and the decoder gives knockouts' predicted expression changes.
OBJECTIVE = dict(mlm_weight=0.0, gepc_weight=1.0, likelihood="nb", latent_dim=32)
PRESETS = {
    # trains and embeds on a 2-core CPU in minutes; one layer: with three, the latent space trained in the same time
    # scored lower on the inner criterion (benchmarks/RESULTS.md)
    # (no dropout: on CPUs attention with dropout falls back to a kernel about 3x slower, for no gain here)
    "small": dict(n_layers=1, d_model=128, n_heads=4, d_ff=256, max_length=512, dropout=0.0, n_bins=51, name="small",
                  **OBJECTIVE),
    # Geneformer V1's size
    "v1": dict(n_layers=6, d_model=256, n_heads=4, d_ff=512, max_length=2048, dropout=0.02, name="v1", **OBJECTIVE),
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


N_SPECIAL = 3  # pad, mask, cls: gene tokens start here


def standardise(norm: nn.BatchNorm1d, cells: torch.Tensor) -> torch.Tensor:
    """``norm`` (a BatchNorm without affine terms) of a batch of cell vectors; in training a batch of one cell,
    which has no spread, uses the running statistics."""
    if norm.training and len(cells) < 2:
        return F.batch_norm(cells, norm.running_mean, norm.running_var, training=False, eps=norm.eps)
    return norm(cells)


def mean_pool(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The cell embedding: the mean of ``hidden`` (batch x length x d) over the tokens ``weights`` selects."""
    weights = weights.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class ExpressionDecoder(nn.Module):
    """Expected expression of every vocabulary gene from a cell embedding (scGPT's MVC, scVI's likelihood).

    Gene ``g``'s logit is ``query(gene_embedding_g) · (W z + batch_b) + bias_g``; a softmax over genes
    gives each gene's share ``rho`` of the cell's counts, whose mean is ``library * rho``; the negative
    binomial has one inverse dispersion per gene. Without a latent space the decoder standardises the
    pooled states first (a latent is already a projection of standardised states).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        d = config.d_model
        n_genes = config.vocab_size - N_SPECIAL
        self.gene_query = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        # cells' mean-pooled states differ by little beside what they share: standardise each dimension (over
        # the batch in training, with running statistics after) so that the decoder, and its gradient, see them
        self.standardise = None if config.latent_dim else nn.BatchNorm1d(d, affine=False)
        self.cell_projection = nn.Linear(config.embedding_dim, d)
        self.batch_embeddings = nn.Embedding(len(config.batch_categories), d) if config.batch_categories else None
        self.gene_bias = nn.Parameter(torch.zeros(n_genes))
        self.log_inverse_dispersion = nn.Parameter(torch.zeros(n_genes))

    def forward(self, cell_embedding: torch.Tensor, gene_embeddings: torch.Tensor,
                batch_index: torch.Tensor | None = None) -> torch.Tensor:
        """Log of each gene's share of the counts (cells x vocabulary genes); rows sum to 1 after ``exp``."""
        cell = cell_embedding.float()
        cell = self.cell_projection(cell if self.standardise is None else standardise(self.standardise, cell))
        if self.batch_embeddings is not None and batch_index is not None:
            cell = cell + self.batch_embeddings(batch_index)
        queries = self.gene_query(gene_embeddings[N_SPECIAL:].float())
        return torch.log_softmax(cell @ queries.T + self.gene_bias, dim=-1)

    def negative_log_likelihood(self, log_share: torch.Tensor, counts: torch.Tensor, library: torch.Tensor,
                                likelihood: str) -> torch.Tensor:
        """Mean over cells of the counts' negative log-likelihood, divided by the number of genes."""
        log_mean = log_share + library.clamp(min=1).log()[:, None]
        if likelihood == "poisson":
            log_prob = counts * log_mean - log_mean.exp() - torch.lgamma(counts + 1)
        else:
            log_theta = self.log_inverse_dispersion.clamp(-8, 8)
            theta = log_theta.exp()
            log_theta_mu = torch.logaddexp(log_theta, log_mean)
            log_prob = (torch.lgamma(counts + theta) - torch.lgamma(theta) - torch.lgamma(counts + 1)
                        + theta * (log_theta - log_theta_mu) + counts * (log_mean - log_theta_mu))
        return -log_prob.mean()


class MaskedGeneModel(nn.Module):
    """The encoder with a masked-gene prediction head tied to the gene embeddings, and the optional heads of
    the other objectives (see :class:`EncoderConfig`)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.encoder = CellEncoder(config)
        self.head_transform = nn.Linear(config.d_model, config.d_model)
        self.head_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.head_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.expression_head = nn.Linear(config.d_model, 1) if config.gep_weight else None
        self.cell_head = (nn.Sequential(nn.BatchNorm1d(config.d_model, affine=False),
                                        nn.Linear(config.d_model, config.latent_dim)) if config.latent_dim else None)
        self.decoder = ExpressionDecoder(config) if config.has_decoder else None
        self.classifier = nn.Linear(config.embedding_dim, len(config.labels)) if config.labels else None
        self.apply(self._init_weights)
        for head in (self.cell_head, self.decoder):  # PyTorch's own scale: BERT's 0.02 left a chain of small
            for module in (head.modules() if head is not None else ()):  # matrices that learned slowly
                if isinstance(module, nn.Linear):
                    module.reset_parameters()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def masked_gene_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy of predicting ``labels`` (``-100`` = not masked) at the masked positions."""
        selected = labels != -100
        transformed = self.head_norm(F.gelu(self.head_transform(hidden[selected])))
        logits = transformed @ self.encoder.gene_embeddings.weight.T + self.head_bias
        return F.cross_entropy(logits.float(), labels[selected])

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor, bins: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """The masked-gene loss alone (Geneformer's objective); :meth:`losses` gives every objective's."""
        return self.masked_gene_loss(self.encoder(tokens, attention_mask, bins), labels)

    def cell_embedding(self, hidden: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The cell embedding the objectives train (``pooling="cell"`` in :mod:`sccore.encode`): the cls token's
        state (``cell_pooling="cls"``) or the mean of ``hidden`` over the cell's gene tokens (pad and cls
        excluded), projected to the latent space when the model has one (``latent_dim``)."""
        if self.config.cell_pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask & (tokens != 0)
            if self.config.add_cls:
                weights = weights.clone()
                weights[:, 0] = False
            pooled = mean_pool(hidden, weights)
        return self.latent(pooled)

    def latent(self, pooled: torch.Tensor) -> torch.Tensor:
        """The latent cell embedding of pooled states (cells x d_model); the states themselves without a latent."""
        if self.cell_head is None:
            return pooled
        norm, projection = self.cell_head
        return projection(standardise(norm, pooled.float()))

    def losses(self, tokens: torch.Tensor, attention_mask: torch.Tensor, bins: torch.Tensor | None,
               labels: torch.Tensor, values: torch.Tensor | None = None, counts: torch.Tensor | None = None,
               library: torch.Tensor | None = None, batch_index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each active objective's loss on one batch (unweighted), plus ``total`` (weighted sum).

        ``labels``: masked gene ids (``-100`` elsewhere); ``values``: every position's log-normalised
        expression (for GEP); ``counts`` (cells x vocabulary genes) and ``library`` (cells): the raw counts
        the decoder reconstructs (GEPC); ``batch_index``: each cell's batch code.
        """
        config = self.config
        hidden = self.encoder(tokens, attention_mask, bins)
        out: dict[str, torch.Tensor] = {}
        selected = labels != -100
        if config.mlm_weight and selected.any():
            out["mlm"] = self.masked_gene_loss(hidden, labels)
        if self.expression_head is not None and values is not None and selected.any():
            predicted = self.expression_head(hidden[selected]).squeeze(-1).float()
            out["gep"] = F.mse_loss(predicted, values[selected].float())
        if self.decoder is not None and counts is not None:
            log_share = self.decoder(self.cell_embedding(hidden, tokens, attention_mask),
                                     self.encoder.gene_embeddings.weight, batch_index)
            out["gepc"] = self.decoder.negative_log_likelihood(log_share, counts, library, config.likelihood)
        weights = {"mlm": config.mlm_weight, "gep": config.gep_weight, "gepc": config.gepc_weight}
        out["total"] = sum(weights[name] * loss for name, loss in out.items())
        return out
