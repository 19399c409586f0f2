"""In-silico knockouts: the predicted embedding shift of deleting genes, for the encoder and two baselines.

- ``encoder``: delete the gene's token from the cell's rank list (Geneformer's in-silico deletion), or
  move it to the front ("overexpress"), and embed again.
- ``pca``: set the gene to zero in the log-normalised expression and re-project on the PCA loadings.
- ``linear``: move every other gene by its regression on the knocked-out gene (fitted on reference
  cells), then project: a linear co-expression model.

All three report, per cell, the original and perturbed embeddings, their cosine similarity and the
shift, and on request the predicted change of every gene's log-normalised expression: the encoder
through its expression decoder (:func:`sccore.encode.decode_expression`), PCA by reconstructing the
expression from the perturbed components, the linear model by its regressions. Cells that do not
express a gene are reported, never counted as unaffected. A screen deletes
every expressed gene and tests each gene's shifts against those of deleting random expressed genes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from .errors import InputError

METHODS = ("encoder", "pca", "linear")
STRATEGIES = ("tokens", "decoder", "both")
Progress = Callable[[float, str], None]
SPOT_CHECKED_CELLS = 8  # cells a stored encoder embedding is checked on before a knockout reuses it


def _quiet(fraction: float, message: str) -> None:
    """A progress callback that reports nothing."""


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two equally shaped matrices."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-12)


def suggest_gene(name: str, genes) -> str:
    """An error message for a gene that is not in ``genes``, with close matches when there are any."""
    by_upper = {}
    for gene in map(str, genes):
        by_upper.setdefault(gene.upper(), gene)
    close = [by_upper[g] for g in difflib.get_close_matches(name.upper(), list(by_upper), n=3, cutoff=0.6)]
    case = [g for g in map(str, genes) if g.upper() == name.upper()]
    hint = f" Did you mean {', '.join(case + [c for c in close if c not in case])}?" if case or close else ""
    return f"Gene '{name}' is not in the data.{hint}"


@dataclass
class KnockoutResult:
    """Per-cell outcome of knocking out ``genes`` by ``method`` in the chosen cells.

    ``cells`` are the positions (in the dataset) of the cells that express at least one of the genes;
    ``not_expressed`` the chosen cells that express none, left out of every number.
    """

    genes: list[str]
    method: str
    cells: np.ndarray
    not_expressed: np.ndarray
    original: np.ndarray
    perturbed: np.ndarray
    expression_change: pd.Series | None = None  # mean predicted change of log1p(expression) per gene

    @property
    def shift(self) -> np.ndarray:
        """Perturbed minus original embedding, per cell."""
        return self.perturbed - self.original

    @property
    def cosine(self) -> np.ndarray:
        """Cosine similarity of each cell's perturbed and original embeddings."""
        return cosine(self.original, self.perturbed)

    def expression_table(self) -> pd.DataFrame:
        """``gene, knocked_out, method, predicted_log_change`` for every gene (largest changes first)."""
        if self.expression_change is None:
            raise InputError("This knockout was run without expression changes; ask for them (expression=True).")
        change = self.expression_change.reindex(self.expression_change.abs().sort_values(ascending=False).index)
        return pd.DataFrame({"gene": change.index.astype(str), "knocked_out": ",".join(self.genes),
                             "method": self.method, "predicted_log_change": change.to_numpy(dtype=float)})

    def summary(self) -> dict:
        """One row: gene, method, n_cells, n_not_expressed, mean_cosine, mean_shift (1 - cosine), mean_shift_norm."""
        cos = self.cosine
        return {"gene": ",".join(self.genes), "method": self.method, "n_cells": len(self.cells),
                "n_not_expressed": len(self.not_expressed),
                "mean_cosine": float(cos.mean()) if len(cos) else np.nan,
                "mean_shift": float((1 - cos).mean()) if len(cos) else np.nan,
                "mean_shift_norm": float(np.linalg.norm(self.shift, axis=1).mean()) if len(cos) else np.nan}


@dataclass
class LinearPerturber:
    """The two baselines on a processed dataset (log-normalised ``X``, PCA loadings in ``varm``).

    A knockout of gene g in cell c moves its expression by ``dx = -x_cg * w_g`` where ``w_g`` is the
    unit vector of g (``pca``) or g's regression slopes onto every gene (``linear``), and its
    embedding by ``dx @ loadings``. Built once per dataset, it serves any number of knockouts (``matrix``: the
    column-major copy of ``X`` another perturber of the same dataset made, shared instead of copied again).
    """

    adata: ad.AnnData
    method: str
    reference: np.ndarray  # cells the co-expression regressions are fitted on
    key: str = "X_pca"
    matrix: sp.csc_matrix | None = field(default=None, repr=False)
    _directions: dict = field(default_factory=dict, repr=False)
    _reference_matrix: sp.csc_matrix | None = field(default=None, repr=False)

    def __post_init__(self):
        if f"{self.key}_loadings" not in self.adata.varm:
            raise InputError(f"No PCA loadings for '{self.key}': run PCA (sccore.embed.pca) on the dataset first.")
        self.loadings = np.asarray(self.adata.varm[f"{self.key}_loadings"], dtype=np.float64)
        self.genes_used = np.flatnonzero(np.abs(self.loadings).sum(1) > 0)
        if self.matrix is None:
            self.matrix = sp.csc_matrix(self.adata.X, dtype=np.float64)
        self.embedding = np.asarray(self.adata.obsm[self.key], dtype=np.float64)

    def expression(self, gene: int) -> np.ndarray:
        """Log-normalised expression of a gene (dataset column) in every cell."""
        return np.asarray(self.matrix[:, gene].toarray()).ravel()

    def gene_direction(self, gene: int) -> np.ndarray:
        """``w_g``: every gene's change of expression per unit of the gene's expression removed (the unit vector
        of g for ``pca``; g's regression slopes for ``linear``)."""
        if gene not in self._directions:
            slopes = np.zeros(self.loadings.shape[0])
            if self.method == "linear":
                x = self.expression(gene)[self.reference]
                if self._reference_matrix is None:  # the regressions' cells and genes, cut once for every gene
                    self._reference_matrix = self.matrix[self.reference][:, self.genes_used]
                used = self._reference_matrix
                centred_x = x - x.mean()
                variance = float(centred_x @ centred_x)
                if variance > 0:
                    slopes[self.genes_used] = (used.T @ centred_x) / variance
            slopes[gene] = 1.0
            self._directions[gene] = slopes
        return self._directions[gene]

    def direction(self, gene: int) -> np.ndarray:
        """The embedding shift per unit of the gene's expression removed (``w_g @ loadings``)."""
        return self.gene_direction(gene) @ self.loadings

    def expression_change(self, genes: list[int], cells: np.ndarray) -> np.ndarray:
        """The mean predicted change of every gene's log-normalised expression in ``cells`` after zeroing ``genes``:
        PCA's reconstruction from the perturbed components, or the linear model's regressions themselves."""
        change = np.zeros(self.loadings.shape[0])
        for gene in genes:
            removed = self.expression(gene)[cells].mean()
            moved = (self.loadings @ self.direction(gene) if self.method == "pca" else self.gene_direction(gene))
            change -= removed * moved
        return change

    def knockout(self, genes: list[int], cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Original and perturbed embeddings of ``cells`` after zeroing ``genes``."""
        original = self.embedding[cells]
        perturbed = original.copy()
        for gene in genes:
            perturbed -= self.expression(gene)[cells, None] * self.direction(gene)[None, :]
        return original, perturbed


def _gene_positions(adata: ad.AnnData, genes: list[str]) -> list[int]:
    positions = []
    for gene in genes:
        if gene not in adata.var_names:
            raise InputError(suggest_gene(gene, adata.var_names))
        positions.append(int(adata.var_names.get_loc(gene)))
    return positions


def _expressing(adata: ad.AnnData, positions: list[int], cells: np.ndarray) -> np.ndarray:
    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    counts = sp.csr_matrix(counts[cells])[:, positions]  # the chosen cells' rows first: no copy of the whole matrix
    return np.asarray((counts > 0).sum(1)).ravel() > 0


def choose_cells(adata: ad.AnnData, where: dict[str, str] | None) -> np.ndarray:
    """Positions of the cells whose ``obs`` columns equal the given values (all cells when ``where`` is empty)."""
    mask = np.ones(adata.n_obs, dtype=bool)
    for key, value in (where or {}).items():
        if key not in adata.obs.columns:
            raise InputError(f"obs has no column '{key}': choose one of {', '.join(map(str, adata.obs.columns))}.")
        values = adata.obs[key].astype(str)
        if value not in set(values):
            raise InputError(f"obs['{key}'] has no value '{value}': choose one of "
                             f"{', '.join(sorted(set(values))[:20])}.")
        mask &= (values == value).to_numpy()
    if not mask.any():
        raise InputError(f"No cell matches {where}: the population is empty.")
    return np.flatnonzero(mask)


def sample_cells(cells: np.ndarray, max_cells: int, seed: int = 0) -> np.ndarray:
    """``cells``, or a fixed random sample of ``max_cells`` of them (sorted) when there are more (0: no limit).

    The one sampling rule of knockouts and screens: the same ``seed`` always gives the same cells.
    """
    cells = np.asarray(cells)
    if max_cells and len(cells) > max_cells:
        return np.sort(np.random.default_rng(seed).choice(cells, int(max_cells), replace=False))
    return cells


def knockout(adata: ad.AnnData, genes: list[str], cells: np.ndarray | None = None, method: str = "pca",
             model=None, mode: str = "delete", reference: np.ndarray | None = None, batch_size: int = 64,
             library_size_key: str | None = None, progress: Progress = _quiet, expression: bool = False,
             batch: str | None = None, strategy: str = "tokens",
             perturber: LinearPerturber | None = None) -> KnockoutResult:
    """Knock out ``genes`` together in ``cells`` (all cells by default) and embed the result.

    ``adata`` is a processed dataset (``sccore.pp.preprocess`` + PCA for the baselines; raw counts in
    ``layers['counts']`` for the encoder). ``model`` is a loaded model for ``method="encoder"``.
    ``mode`` is ``"delete"`` or, for the encoder, ``"overexpress"`` (move the genes to the front).
    With ``expression`` the result also holds every gene's predicted change of log-normalised expression
    (the encoder's needs a model with a decoder; ``batch`` is the batch its decoder assumes).
    ``strategy`` (encoder deletion): ``"tokens"`` removes the genes' tokens (Geneformer), ``"decoder"`` moves the
    embedding until the decoder predicts no expression of the genes (:func:`sccore.encode.silence_in_embedding`),
    ``"both"`` does the first, then the second. ``perturber``: a baseline's :class:`LinearPerturber` of ``adata``
    (its ``method``, regressions on ``reference``), kept to serve many knockouts; built here when None.
    The encoder's original embeddings are read from ``obsm['X_encoder']`` when it holds this model's embeddings of
    these cells (:func:`stored_originals`), else embedded here: the two agree to float rounding.
    """
    if strategy not in STRATEGIES:
        raise InputError(f"Unknown knockout strategy '{strategy}': use {', '.join(STRATEGIES)}.")
    if method not in METHODS:
        raise InputError(f"Unknown method '{method}': use {', '.join(METHODS)}.")
    if mode not in ("delete", "overexpress"):
        raise InputError(f"Unknown mode '{mode}': use delete or overexpress.")
    if not genes:
        raise InputError("Name at least one gene to knock out.")
    positions = _gene_positions(adata, genes)
    cells = np.arange(adata.n_obs) if cells is None else np.asarray(cells)
    if len(cells) == 0:
        raise InputError("The chosen population is empty; choose other cells.")
    expressing = _expressing(adata, positions, cells)
    if not expressing.any():
        raise InputError(f"{', '.join(genes)} is not expressed in any of the {len(cells):,} chosen cells; "
                         "choose another gene or population.")
    chosen, silent = cells[expressing], cells[~expressing]
    if method == "encoder":
        if model is None:
            raise InputError("The encoder method needs a model (a folder from `python -m sccore train`).")
        original, perturbed = _encoder_knockout(adata, model, genes, chosen, mode, batch_size, library_size_key,
                                                progress, strategy, batch)
        change = decoded_expression_change(model, original, perturbed, batch) if expression else None
    else:
        if mode != "delete":
            raise InputError("The PCA and linear baselines model deletion only; use mode 'delete'.")
        if perturber is None or perturber.method != method:
            perturber = LinearPerturber(adata, method, reference if reference is not None else np.arange(adata.n_obs))
        original, perturbed = perturber.knockout(positions, chosen)
        change = (pd.Series(perturber.expression_change(positions, chosen), index=adata.var_names.astype(str))
                  if expression else None)
    return KnockoutResult(list(genes), method, chosen, silent, original.astype(np.float32),
                          perturbed.astype(np.float32), change)


def decoded_expression_change(model, original: np.ndarray, perturbed: np.ndarray, batch: str | None = None,
                              chunk: int = 2048) -> pd.Series:
    """The mean change of ``log1p`` of the decoder's expected expression (per 10,000 counts) between the
    ``original`` and ``perturbed`` embeddings of the same cells, per vocabulary gene."""
    from .encode import decode_expression

    total = np.zeros(len(model.vocabulary.genes))
    for start in range(0, len(original), chunk):
        before = decode_expression(model, original[start:start + chunk], batch)
        after = decode_expression(model, perturbed[start:start + chunk], batch)
        total += (np.log1p(after) - np.log1p(before)).sum(0)
    return pd.Series(total / max(1, len(original)), index=list(model.vocabulary.genes))


def expression_change_of(adata: ad.AnnData, result: KnockoutResult, model=None, reference: np.ndarray | None = None,
                         batch: str | None = None, perturber: LinearPerturber | None = None) -> pd.Series:
    """Every gene's predicted change of log-expression for a knockout already run without it (``result``, from
    :func:`knockout` on ``adata``), as ``knockout(..., expression=True)`` computes it: the encoder's through the
    decoder of ``model`` (``batch``: the batch it assumes; :class:`InputError` for a model without one), a baseline's
    from its regressions fitted on ``reference`` (default: every cell; ``perturber``: its kept :class:`LinearPerturber`,
    as for :func:`knockout`)."""
    if result.method == "encoder":
        return decoded_expression_change(model, result.original, result.perturbed, batch)
    if perturber is None or perturber.method != result.method:
        reference = reference if reference is not None else np.arange(adata.n_obs)
        perturber = LinearPerturber(adata, result.method, reference)
    return pd.Series(perturber.expression_change(_gene_positions(adata, result.genes), result.cells),
                     index=adata.var_names.astype(str))


def top_expression_changes(table: pd.DataFrame, n: int = 10, leave_out: tuple[str, ...] = ()) -> pd.DataFrame:
    """The ``n`` genes predicted to go up most and the ``n`` to go down most (``predicted_log_change`` > 0 and < 0)
    of :meth:`KnockoutResult.expression_table`'s ``table``, without the genes ``leave_out`` (e.g. the knocked-out
    gene itself); largest increase first, largest decrease last."""
    kept = table[~table["gene"].isin(leave_out)].sort_values("predicted_log_change", ascending=False)
    up, down = kept[kept["predicted_log_change"] > 0].head(n), kept[kept["predicted_log_change"] < 0].tail(n)
    return pd.concat([up, down], ignore_index=True)


def stored_originals(adata: ad.AnnData, model, tokenizer, cells: np.ndarray, batch_size: int = 64,
                     n_checked: int = SPOT_CHECKED_CELLS) -> np.ndarray | None:
    """The rows of ``cells`` in ``obsm['X_encoder']`` when they are ``model``'s cell embeddings of these cells, as the
    dashboard's analysis holds them (None otherwise: no such embedding, another model, pooling, device precision or
    tokenization): ``n_checked`` of the cells (a fixed sample) are embedded again through ``tokenizer`` (a
    :class:`sccore.encode.DatasetTokenizer` of ``adata`` and ``model``) and must agree to rounding
    (:func:`rounding_tolerance`; batches of other cells change the last bits). A knockout then embeds only the
    perturbed cells."""
    from .encode import embed_tokens, embedding_width

    stored = adata.obsm.get("X_encoder")
    if stored is None or np.shape(stored) != (adata.n_obs, embedding_width(model, "cell")) or len(cells) == 0:
        return None
    checked = sample_cells(cells, n_checked)
    again = embed_tokens(model, tokenizer(checked), batch_size=batch_size)
    kept = np.asarray(stored[checked], dtype=np.float32)
    difference = np.linalg.norm(again - kept, axis=1) / np.maximum(np.linalg.norm(again, axis=1), 1e-12)
    return np.asarray(stored[cells], dtype=np.float32) if difference.max() <= rounding_tolerance(model) else None


def rounding_tolerance(model) -> float:
    """The relative difference between two embeddings of one cell by ``model`` that batching alone can cause (other
    cells, other padding): bf16's rounding where the model's device computes in bf16
    (:func:`sccore.encode.bf16_supported`, as ``precision="auto"`` does), float32's otherwise. Another model, pooling
    or tokenization differs far more."""
    from .encode import bf16_supported

    return 2e-2 if bf16_supported(next(model.model.parameters()).device) else 1e-4


def _encoder_knockout(adata, model, genes, cells, mode, batch_size, library_size_key, progress, strategy="tokens",
                      batch=None):
    from .encode import DatasetTokenizer, embed_tokens, silence_in_embedding
    from .tokenize import TokenizedCell

    tokenizer = DatasetTokenizer(adata, model, library_size_key)
    token_ids = {model.vocabulary.index.get(gene, -1) for gene in genes}
    if token_ids == {-1}:
        raise InputError(f"{', '.join(genes)} is not in the model's vocabulary; choose another gene or model.")
    if strategy != "tokens" and mode != "delete":
        raise InputError("Only deletion can be done through the decoder; use strategy 'tokens' to overexpress.")
    stored = stored_originals(adata, model, tokenizer, cells, batch_size)
    if strategy == "decoder":
        original = stored if stored is not None else embed_tokens(model, tokenizer(cells), batch_size=batch_size)
        return original, silence_in_embedding(model, original, [t for t in token_ids if t >= 0], batch)
    originals, perturbed = [], []
    chunk = 1024
    for start in range(0, len(cells), chunk):
        rows = cells[start:start + chunk]
        tokenized = tokenizer(rows)
        changed = []
        for cell in tokenized:
            hit = np.isin(cell.tokens, list(token_ids))
            if mode == "delete":
                changed.append(TokenizedCell(cell.tokens[~hit], cell.bins[~hit]))
            else:
                first = 1 if model.config.add_cls else 0
                keep = ~hit
                keep[:first] = True
                front = [t for t in token_ids if t >= 0]
                tokens = np.concatenate([cell.tokens[:first], front, cell.tokens[keep][first:]])
                bins = np.concatenate([cell.bins[:first], np.full(len(front), model.config.n_bins),
                                       cell.bins[keep][first:]])[:model.config.max_length]
                changed.append(TokenizedCell(tokens[:model.config.max_length].astype(np.int64), bins.astype(np.int64)))
        if stored is None:
            both = embed_tokens(model, tokenized + changed, batch_size=batch_size)
            originals.append(both[:len(tokenized)])
            perturbed.append(both[len(tokenized):])
        else:
            originals.append(stored[start:start + chunk])
            perturbed.append(embed_tokens(model, changed, batch_size=batch_size))
        progress(min(1.0, (start + chunk) / len(cells)), f"knocked out in {min(start + chunk, len(cells)):,} cells")
    original, perturbed = np.concatenate(originals), np.concatenate(perturbed)
    if strategy == "both":
        perturbed = silence_in_embedding(model, perturbed, [t for t in token_ids if t >= 0], batch)
    return original, perturbed


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (FDR); NaN stays NaN."""
    p_values = np.asarray(p_values, dtype=float)
    out = np.full_like(p_values, np.nan)
    finite = np.isfinite(p_values)
    if finite.any():
        out[finite] = stats.false_discovery_control(p_values[finite], method="bh")
    return out


@dataclass(frozen=True)
class Goal:
    """A start and a goal state: mean embeddings of two groups of cells (e.g. stimulated -> control)."""

    start_mean: np.ndarray
    goal_mean: np.ndarray

    @property
    def direction(self) -> np.ndarray:
        """From the start state's mean embedding to the goal's."""
        return self.goal_mean - self.start_mean


def goal_from_groups(embedding: np.ndarray, start: np.ndarray, goal: np.ndarray) -> Goal:
    """The goal built from two groups of cells (positions) of an embedding; refuses identical or empty groups."""
    if len(start) == 0 or len(goal) == 0:
        raise InputError("The start and goal states each need at least one cell.")
    if np.array_equal(np.sort(start), np.sort(goal)):
        raise InputError("The goal state is the same as the start state; choose a different goal.")
    return Goal(embedding[start].mean(0), embedding[goal].mean(0))


def method_embedding(adata: ad.AnnData, method: str, model=None, library_size_key: str | None = None,
                     cells: np.ndarray | None = None) -> np.ndarray:
    """The cells' embedding in ``method``'s space: ``obsm['X_pca']`` for the baselines, the encoder's for
    ``"encoder"`` (computed for ``cells`` only); float64."""
    from .encode import embed_cells

    if method != "encoder":
        embedding = np.asarray(adata.obsm["X_pca"], dtype=np.float64)
        return embedding if cells is None else embedding[cells]
    subset = adata if cells is None else adata[cells]
    return embed_cells(subset, model, library_size_key=library_size_key).astype(np.float64)


def goal_for(adata: ad.AnnData, method: str, model, start: np.ndarray, goal_where: dict[str, str] | None,
             library_size_key: str | None = None, embedding: np.ndarray | None = None) -> "Goal | None":
    """The goal state from the ``start`` cells to the cells matching ``goal_where`` in ``method``'s space (what
    ``python -m sccore screen --goal`` scores against): in ``embedding`` (every cell's, in that space) when the caller
    holds it, else in :func:`method_embedding` of the cells needed; None without ``goal_where``."""
    if not goal_where:
        return None
    goal_cells = choose_cells(adata, goal_where)
    if embedding is not None:
        return goal_from_groups(np.asarray(embedding, dtype=np.float64), start, goal_cells)
    needed = np.union1d(start, goal_cells)
    embedding = method_embedding(adata, method, model, library_size_key, needed)
    return goal_from_groups(embedding, np.searchsorted(needed, start), np.searchsorted(needed, goal_cells))


def goal_scores(original: np.ndarray, perturbed: np.ndarray, goal: Goal) -> dict:
    """``goal_alignment``: cosine of the mean shift with the start->goal direction;
    ``goal_cosine_gain``: mean rise in cosine similarity to the goal's mean embedding."""
    shift = (perturbed - original).mean(0)
    alignment = float(cosine(shift[None], goal.direction[None])[0])
    target = np.broadcast_to(goal.goal_mean, original.shape)
    gain = float((cosine(perturbed, target) - cosine(original, target)).mean())
    return {"goal_alignment": alignment, "goal_cosine_gain": gain}


def _screen_genes(adata: ad.AnnData, cells: np.ndarray, top: int | None, vocabulary=None) -> np.ndarray:
    """Dataset columns of the genes expressed in ``cells`` (in the model's vocabulary), most often expressed first."""
    counts = sp.csr_matrix(adata.layers["counts"] if "counts" in adata.layers else adata.X)[cells]
    n_expressing = np.asarray((counts > 0).sum(0)).ravel()
    candidates = np.flatnonzero(n_expressing > 0)
    if vocabulary is not None:
        candidates = np.array([g for g in candidates if adata.var_names[g] in vocabulary.index], dtype=np.int64)
    if len(candidates) == 0:
        raise InputError("No gene is expressed in the chosen cells (and known to the model); choose other cells.")
    ranked = candidates[np.argsort(-n_expressing[candidates], kind="stable")]
    return ranked[:top] if top else ranked


def _baseline_deletions(adata, method, cells, genes, n_null, rng, reference):
    """For each cell: (row, deleted gene columns, original embedding, perturbed embeddings), baselines."""
    perturber = LinearPerturber(adata, method, reference)
    screened = set(map(int, genes))
    lognorm = sp.csr_matrix(adata.X)
    for row, cell in enumerate(cells):
        expressed = lognorm.indices[lognorm.indptr[cell]:lognorm.indptr[cell + 1]]
        values = lognorm.data[lognorm.indptr[cell]:lognorm.indptr[cell + 1]]
        keep = values > 0
        expressed, values = expressed[keep], values[keep]
        if len(expressed) == 0:
            continue
        picks = np.array([i for i, g in enumerate(expressed) if int(g) in screened], dtype=np.int64)
        null = rng.choice(len(expressed), size=min(n_null, len(expressed)), replace=False)
        chosen = np.concatenate([picks, null])
        directions = np.stack([perturber.direction(int(expressed[i])) for i in chosen])
        original = perturber.embedding[cell]
        perturbed = original[None, :] - values[chosen, None] * directions
        yield row, expressed[chosen], len(picks), original, perturbed


def _encoder_deletions(adata, model, cells, genes, n_null, rng, library_size_key, batch_size):
    """For each cell: (row, deleted gene columns, original embedding, perturbed embeddings), encoder."""
    from .encode import DatasetTokenizer, embed_tokens
    from .tokenize import TokenizedCell

    tokenizer = DatasetTokenizer(adata, model, library_size_key)
    for row, columns, n_screened, cell, chosen in _deletion_choices(tokenizer, model, cells, genes, n_null, rng):
        variants = [cell] + [TokenizedCell(np.delete(cell.tokens, p), np.delete(cell.bins, p)) for p in chosen]
        embedded = embed_tokens(model, variants, batch_size=batch_size).astype(np.float64)
        yield row, columns, n_screened, embedded[0], embedded[1:]


def _deletion_choices(tokenizer, model, cells, genes, n_null, rng, chunk: int = 256):
    """For each cell: (row, gene columns, n screened, tokenized cell, token positions to delete)."""
    column_of_token = {int(t): i for i, t in enumerate(tokenizer.gene_to_token) if t >= 0}
    screened_tokens = {int(tokenizer.gene_to_token[g]) for g in genes}
    first = 1 if model.config.add_cls else 0
    for start in range(0, len(cells), chunk):
        rows = np.arange(start, min(start + chunk, len(cells)))
        for row, cell in zip(rows, tokenizer(cells[rows])):
            positions = np.arange(first, len(cell.tokens))
            if len(positions) == 0:
                continue
            picks = positions[[int(cell.tokens[p]) in screened_tokens for p in positions]]
            null = rng.choice(positions, size=min(n_null, len(positions)), replace=False)
            chosen = np.concatenate([picks, null]).astype(np.int64)
            columns = np.array([column_of_token[int(cell.tokens[p])] for p in chosen], dtype=np.int64)
            yield row, columns, len(picks), cell, chosen


def deletion_basis(adata: ad.AnnData, model, cells: np.ndarray, rank: int = 32, goal: "Goal | None" = None,
                   n_cells: int = 8, n_deletions: int = 64, library_size_key: str | None = None, seed: int = 0,
                   batch_size: int = 64) -> tuple[np.ndarray, float]:
    """Orthonormal directions (rank x d_model) that hold most of the encoder's deletion shifts in ``cells``.

    Exact deletions of ``n_deletions`` random expressed genes in ``n_cells`` random cells give sample
    shifts; their top singular directions (after the goal direction, when a goal is given) form the
    basis. Returns it with the fraction of the sample shifts' squared norm it captures.
    """
    from .encode import DatasetTokenizer, embed_tokens
    from .tokenize import TokenizedCell

    rng = np.random.default_rng(seed)
    tokenizer = DatasetTokenizer(adata, model, library_size_key)
    sample = rng.choice(cells, size=min(n_cells, len(cells)), replace=False)
    first = 1 if model.config.add_cls else 0
    shifts = []
    for cell in tokenizer(np.sort(sample)):
        positions = np.arange(first, len(cell.tokens))
        chosen = rng.choice(positions, size=min(n_deletions, len(positions)), replace=False)
        variants = [cell] + [TokenizedCell(np.delete(cell.tokens, p), np.delete(cell.bins, p)) for p in chosen]
        embedded = embed_tokens(model, variants, batch_size=batch_size).astype(np.float64)
        shifts.append(embedded[1:] - embedded[0])
    shifts = np.concatenate(shifts)
    _, _, right = np.linalg.svd(shifts, full_matrices=False)
    leading = [goal.direction / np.linalg.norm(goal.direction)] if goal is not None else []
    basis, _ = np.linalg.qr(np.vstack(leading + [right[:rank]]).T)
    basis = basis[:, :min(rank, basis.shape[1])].T
    captured = float(((shifts @ basis.T) ** 2).sum() / (shifts ** 2).sum())
    return basis.astype(np.float32), captured


def _first_order_deletions(adata, model, cells, genes, n_null, rng, library_size_key, batch_size, basis):
    """Like :func:`_encoder_deletions`, with shifts estimated from gradients (see ``presence_gradients``)."""
    from .encode import DatasetTokenizer, presence_gradients

    tokenizer = DatasetTokenizer(adata, model, library_size_key)
    pending = []

    def flush():
        embeddings, estimates = presence_gradients(model, [item[3] for item in pending], basis, batch_size=batch_size)
        for (row, columns, n_screened, _, chosen), original, estimate in zip(pending, embeddings, estimates):
            original = original.astype(np.float64)
            yield row, columns, n_screened, original, original[None] + estimate[:, chosen].T @ basis
        pending.clear()

    for choice in _deletion_choices(tokenizer, model, cells, genes, n_null, rng):
        pending.append(choice)
        if len(pending) == 64:
            yield from flush()
    if pending:
        yield from flush()


def _aggregate(pairs, adata, genes, method, n_cells, goal, progress, should_stop) -> pd.DataFrame:
    """The screen's table from per-cell deletions (see :func:`screen`)."""
    slot = {int(g): i for i, g in enumerate(genes)}
    shifts: list[list[float]] = [[] for _ in genes]
    norms = np.zeros(len(genes))
    shift_sums: np.ndarray | None = None
    gains = np.zeros(len(genes))
    null_shifts: list[float] = []
    n_done = 0
    for row, columns, n_screened, original, perturbed in pairs:
        cos = cosine(np.broadcast_to(original, perturbed.shape), perturbed)
        null_shifts.extend((1 - cos[n_screened:]).tolist())
        if shift_sums is None:
            shift_sums = np.zeros((len(genes), len(original)))
        if goal is not None:
            target = np.broadcast_to(goal.goal_mean, perturbed.shape)
            cell_gain = cosine(perturbed, target) - cosine(np.broadcast_to(original, perturbed.shape), target)
        for j in range(n_screened):
            s = slot[int(columns[j])]
            shifts[s].append(1 - cos[j])
            norms[s] += np.linalg.norm(perturbed[j] - original)
            shift_sums[s] += perturbed[j] - original
            if goal is not None:
                gains[s] += cell_gain[j]
        n_done = row + 1
        progress(n_done / n_cells, f"screened {n_done:,} of {n_cells:,} cells")
        if should_stop():
            break
    counts = np.array([len(values) for values in shifts])
    null = np.asarray(null_shifts)
    p_values = np.array([stats.mannwhitneyu(values, null, alternative="greater").pvalue
                         if len(values) and len(null) else np.nan for values in shifts])
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame({
            "gene": adata.var_names[genes].astype(str), "method": method, "n_cells": counts,
            "mean_cosine": [1 - np.mean(v) if v else np.nan for v in shifts],
            "mean_shift": [np.mean(v) if v else np.nan for v in shifts],
            "mean_shift_norm": norms / counts, "p_value": p_values, "fdr": benjamini_hochberg(p_values)})
    if goal is not None and shift_sums is not None:
        mean_shifts = shift_sums / np.maximum(counts, 1)[:, None]
        table["goal_alignment"] = cosine(mean_shifts, np.broadcast_to(goal.direction, mean_shifts.shape))
        table["goal_cosine_gain"] = gains / np.maximum(counts, 1)
    table = table[table["n_cells"] > 0]
    table.attrs["null_mean_shift"] = float(null.mean()) if len(null) else float("nan")
    table.attrs["n_cells_screened"] = int(n_done)
    return table


ESTIMATES = ("exact", "first-order")


def rank_exact_first(table: pd.DataFrame, score: str) -> pd.DataFrame:
    """Rows ranked by ``score`` (highest first), exactly computed rows above first-order estimates: the
    estimates only choose which genes to compute exactly, their values are not comparable with exact ones."""
    approximate = table["estimate"].eq("first-order") if "estimate" in table else pd.Series(False, table.index)
    ranked = table.assign(_approximate=approximate).sort_values(["_approximate", score], ascending=[True, False],
                                                               kind="stable")
    return ranked.drop(columns="_approximate").reset_index(drop=True)


def screen(adata: ad.AnnData, cells: np.ndarray, method: str = "pca", model=None, top: int | None = None,
           goal: Goal | None = None, n_null: int = 5, reference: np.ndarray | None = None, batch_size: int = 64,
           library_size_key: str | None = None, seed: int = 0, estimate: str = "exact", exact_top: int = 50,
           basis_rank: int = 32, progress: Progress = _quiet,
           should_stop: Callable[[], bool] = lambda: False) -> pd.DataFrame:
    """Delete, one at a time, every gene expressed in ``cells`` (or the ``top`` most often expressed) and rank them.

    One row per gene: gene, method, n_cells (cells expressing it), mean_cosine, mean_shift (1 - cosine),
    mean_shift_norm, p_value and fdr (one-sided rank-sum test of the gene's per-cell shifts against
    those of deleting ``n_null`` random expressed genes per cell, Benjamini-Hochberg), and with a
    ``goal`` also goal_alignment and goal_cosine_gain (see :func:`goal_scores`). Sorted by shift, or
    by goal alignment when a goal is given. ``should_stop`` lets a caller cancel between cells.

    ``estimate="first-order"`` (encoder only) ranks every gene from gradients in a ``basis_rank``-
    dimensional basis of deletion shifts (:func:`deletion_basis`, ``presence_gradients``), then
    recomputes the ``exact_top`` best-ranked genes by exact deletion; the ``estimate`` column says
    which rows are exact, and they are ranked above the estimates (:func:`rank_exact_first`). Much
    faster with long inputs (``v1``: 2,048 tokens per cell).
    """
    if method not in METHODS:
        raise InputError(f"Unknown method '{method}': use {', '.join(METHODS)}.")
    if estimate not in ESTIMATES:
        raise InputError(f"Unknown estimate '{estimate}': use {' or '.join(ESTIMATES)}.")
    if estimate != "exact" and method != "encoder":
        raise InputError("The first-order estimate is for the encoder; the baselines are exact and fast already.")
    cells = np.asarray(cells)
    if len(cells) == 0:
        raise InputError("The chosen population is empty; choose other cells.")
    rng = np.random.default_rng(seed)
    order = "goal_alignment" if goal is not None else "mean_shift"
    if method != "encoder":
        genes = _screen_genes(adata, cells, top)
        pairs = _baseline_deletions(adata, method, cells, genes, n_null, rng,
                                    reference if reference is not None else np.arange(adata.n_obs))
        table = _aggregate(pairs, adata, genes, method, len(cells), goal, progress, should_stop)
        return table.sort_values(order, ascending=False, kind="stable").reset_index(drop=True)
    if model is None:
        raise InputError("The encoder method needs a model (a folder from `python -m sccore train`).")
    genes = _screen_genes(adata, cells, top, model.vocabulary)
    if estimate == "exact":
        pairs = _encoder_deletions(adata, model, cells, genes, n_null, rng, library_size_key, batch_size)
        table = _aggregate(pairs, adata, genes, method, len(cells), goal, progress, should_stop)
        table["estimate"] = "exact"
        return table.sort_values(order, ascending=False, kind="stable").reset_index(drop=True)
    basis, captured = deletion_basis(adata, model, cells, basis_rank, goal, library_size_key=library_size_key,
                                     seed=seed, batch_size=batch_size)
    pairs = _first_order_deletions(adata, model, cells, genes, n_null, rng, library_size_key, batch_size, basis)
    approximate = _aggregate(pairs, adata, genes, method, len(cells), goal,
                             lambda f, m: progress(0.5 * f, f"first-order: {m}"), should_stop)
    approximate = approximate.sort_values(order, ascending=False, kind="stable").reset_index(drop=True)
    approximate["estimate"] = "first-order"
    attrs = dict(approximate.attrs)
    best = approximate["gene"].head(exact_top)
    if len(best) and not should_stop():
        best_columns = adata.var_names.get_indexer(best)
        pairs = _encoder_deletions(adata, model, cells, best_columns, n_null, rng, library_size_key, batch_size)
        exact = _aggregate(pairs, adata, best_columns, method, len(cells), goal,
                           lambda f, m: progress(0.5 + 0.5 * f, f"exact, top {len(best)}: {m}"), should_stop)
        exact["estimate"] = "exact"
        approximate = pd.concat([exact, approximate[~approximate["gene"].isin(exact["gene"])]], ignore_index=True)
    table = rank_exact_first(approximate, order)
    table.attrs.update(attrs, basis_rank=len(basis), basis_captured=captured, exact_top=len(best))
    return table


def _screen_targets(adata: ad.AnnData, perturbation_key: str, control: str,
                    min_cells: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each cell's perturbation label, the control cells and the measured targets with >= ``min_cells`` cells."""
    if perturbation_key not in adata.obs.columns:
        raise InputError(f"obs has no column '{perturbation_key}'; columns: {', '.join(map(str, adata.obs.columns))}.")
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    controls = np.flatnonzero(labels == control)
    if len(controls) == 0:
        raise InputError(f"No cell has {perturbation_key} = '{control}'; name the control value with --control.")
    names, sizes = np.unique(labels[labels != control], return_counts=True)
    targets = [str(t) for t, n in zip(names, sizes) if t in adata.var_names and n >= min_cells]
    if not targets:
        raise InputError(f"No knocked-out target is among the measured genes with >= {min_cells} cells.")
    return labels, controls, targets


def observed_expression_changes(adata: ad.AnnData, labels: np.ndarray, control: str,
                                targets: list[str]) -> pd.DataFrame:
    """Mean log-normalised expression (``adata.X``) of each target's knockout cells minus that of the controls:
    targets x genes."""
    matrix = sp.csr_matrix(adata.X, dtype=np.float64)
    control_mean = np.asarray(matrix[labels == control].mean(0)).ravel()
    return pd.DataFrame([np.asarray(matrix[labels == t].mean(0)).ravel() - control_mean for t in targets],
                        index=targets, columns=adata.var_names.astype(str))


def delta_agreement(predicted: pd.Series | np.ndarray | None, observed: pd.Series, target: str) -> dict:
    """``pearson_delta`` (Pearson of predicted vs observed expression change over the genes other than the
    target; NaN for a constant prediction) and ``rmse_delta`` (root mean squared difference) of one target."""
    others = observed.drop(index=target, errors="ignore")
    if predicted is None:
        return {"pearson_delta": np.nan, "rmse_delta": np.nan}
    predicted = (predicted.reindex(others.index).fillna(0.0) if isinstance(predicted, pd.Series)
                 else pd.Series(predicted, index=observed.index).drop(index=target, errors="ignore"))
    x, y = predicted.to_numpy(float), others.to_numpy(float)
    pearson = float(np.corrcoef(x, y)[0, 1]) if np.std(x) > 0 and np.std(y) > 0 else np.nan
    return {"pearson_delta": pearson, "rmse_delta": float(np.sqrt(np.mean((x - y) ** 2)))}


def validate_knockouts(adata: ad.AnnData, method: str, embedding: np.ndarray, perturbation_key: str, control: str,
                       model=None, min_cells: int = 10, library_size_key: str | None = None,
                       progress: Progress = _quiet, strategy: str = "tokens") -> pd.DataFrame:
    """Compare in-silico knockouts in control cells with a real CRISPR screen, in the method's own embedding
    and in gene space (``strategy``: the encoder's, see :func:`knockout`).

    For each target (a value of ``obs[perturbation_key]`` that is a measured gene, with at least
    ``min_cells`` cells): predicted = mean shift of knocking it out in the control cells that express
    it; observed = mean embedding of the real knockout cells minus that of the controls. One row per
    target: target, method, n_cells (real knockout cells), cosine, predicted_norm, observed_norm, and
    pearson_delta / rmse_delta: the predicted against the observed mean change of the other genes'
    log-normalised expression (NaN where the method predicts no expression, e.g. a model without decoder).
    """
    labels, controls, targets = _screen_targets(adata, perturbation_key, control, min_cells)
    observed_changes = observed_expression_changes(adata, labels, control, targets)
    with_expression = method != "encoder" or getattr(getattr(model, "config", None), "has_decoder", False)
    control_mean = embedding[controls].mean(0)
    rows = []
    for i, target in enumerate(targets):
        observed = embedding[labels == target].mean(0) - control_mean
        try:
            result = knockout(adata, [target], controls, method, model=model, reference=controls,
                              library_size_key=library_size_key, expression=with_expression, strategy=strategy)
            predicted, change = result.shift.mean(0), result.expression_change
        except InputError:  # not expressed in any control cell, or not in the model's vocabulary
            predicted, change = np.full_like(observed, np.nan), None
        rows.append({"target": target, "method": method, "n_cells": int((labels == target).sum()),
                     "cosine": float(cosine(predicted[None], observed[None])[0]),
                     "predicted_norm": float(np.linalg.norm(predicted)), "observed_norm": float(np.linalg.norm(observed)),
                     **delta_agreement(change, observed_changes.loc[target], target)})
        progress((i + 1) / len(targets), f"validated {target}")
    return pd.DataFrame(rows)


def expression_baselines(adata: ad.AnnData, perturbation_key: str, control: str,
                         min_cells: int = 10) -> pd.DataFrame:
    """The gene-space baselines of Ahlmann-Eltze et al. (2025) for :func:`validate_knockouts`' targets: ``no-change``
    (predicts no change: Pearson undefined, RMSE = the observed change's size) and ``mean-perturbation`` (predicts
    the mean observed change of the other targets). Rows: target, method, n_cells, pearson_delta, rmse_delta."""
    labels, _, targets = _screen_targets(adata, perturbation_key, control, min_cells)
    observed = observed_expression_changes(adata, labels, control, targets)
    rows = []
    for target in targets:
        others = observed.drop(index=target)
        for method, predicted in (("no-change", np.zeros(observed.shape[1])),
                                  ("mean-perturbation", others.mean(0).to_numpy() if len(others) else None)):
            rows.append({"target": target, "method": method, "n_cells": int((labels == target).sum()),
                         **delta_agreement(predicted, observed.loc[target], target)})
    return pd.DataFrame(rows)


def spearman(table: pd.DataFrame, a: str = "predicted_norm", b: str = "observed_norm") -> float:
    """Spearman correlation of two columns across rows (NaN rows dropped)."""
    finite = table[[a, b]].dropna()
    return float(stats.spearmanr(finite[a], finite[b]).statistic) if len(finite) >= 3 else float("nan")


def default_gene(adata: ad.AnnData) -> str:
    """The gene a knockout starts with: the highly variable gene detected in the most cells (among every gene when
    ``var`` marks none as highly variable). ``adata`` holds raw counts in ``layers['counts']`` or ``X``."""
    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    n_detected = np.asarray((counts > 0).sum(0)).ravel()
    if "highly_variable" in adata.var and adata.var["highly_variable"].any():
        n_detected = np.where(adata.var["highly_variable"].to_numpy(), n_detected, -1)
    return str(adata.var_names[int(np.argmax(n_detected))])
