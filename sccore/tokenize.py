"""Cells as token sequences: Geneformer's rank-value encoding, with optional scGPT-style expression bins.

A cell becomes its expressed genes ordered by ``counts / library size * 1e4 / median``, where the
median is the gene's non-zero median over the training corpus (stored with the model), so that
housekeeping genes sink and genes that distinguish the cell rise. Zeros are dropped and the list is
truncated to the model's input size. With ``n_bins > 0`` each token also carries the bin (1..n_bins)
of its value within the cell.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .cache import atomic_write
from .errors import InputError

PAD, MASK, CLS = "<pad>", "<mask>", "<cls>"
SPECIAL_TOKENS = (PAD, MASK, CLS)
PAD_ID, MASK_ID, CLS_ID = 0, 1, 2


@dataclass
class Vocabulary:
    """Gene symbols (and optional Ensembl IDs) of a model, after the special tokens pad, mask and cls."""

    genes: list[str]
    gene_ids: list[str] | None = None

    def __post_init__(self):
        self.index = {gene: i + len(SPECIAL_TOKENS) for i, gene in enumerate(self.genes)}
        self.id_index = ({gid: i + len(SPECIAL_TOKENS) for i, gid in enumerate(self.gene_ids) if gid}
                         if self.gene_ids else {})

    def __len__(self) -> int:
        return len(self.genes) + len(SPECIAL_TOKENS)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON, atomically."""
        payload = {"special_tokens": list(SPECIAL_TOKENS), "genes": self.genes, "gene_ids": self.gene_ids}
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read what :meth:`save` wrote."""
        payload = json.loads(Path(path).read_text())
        return cls(payload["genes"], payload.get("gene_ids"))


def library_sizes(counts: sp.csr_matrix, obs: pd.DataFrame, library_size_key: str | None) -> np.ndarray:
    """Each cell's total counts: ``obs[library_size_key]`` when given, else the row sums."""
    if library_size_key:
        return pd.to_numeric(obs[library_size_key]).to_numpy(dtype=np.float64)
    return np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()


def nonzero_medians(counts: sp.csr_matrix, sizes: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """Each gene's median of ``counts / size * target_sum`` over the cells that express it (1 if none do)."""
    normalised = sp.csc_matrix(sp.diags(target_sum / np.maximum(sizes, 1e-12)) @ sp.csr_matrix(counts, dtype=np.float64))
    medians = np.ones(normalised.shape[1])
    for gene in range(normalised.shape[1]):
        values = normalised.data[normalised.indptr[gene]:normalised.indptr[gene + 1]]
        values = values[values > 0]
        if values.size:
            medians[gene] = np.median(values)
    return medians


def match_genes(var: pd.DataFrame, vocabulary: Vocabulary, gene_id_key: str | None = None,
                min_fraction: float = 0.05, min_genes: int = 20) -> tuple[np.ndarray, dict]:
    """Map the dataset's genes to vocabulary ids (``-1`` where absent), by symbol or by an Ensembl-ID column.

    Returns the ids and a report (matched, dataset genes, vocabulary genes, by). Raises
    :class:`InputError` when fewer than ``max(min_genes, min_fraction * vocabulary genes)`` match.
    """
    if gene_id_key:
        if gene_id_key not in var.columns:
            raise InputError(f"var has no column '{gene_id_key}' with gene IDs; columns: {', '.join(var.columns)}.")
        if not vocabulary.id_index:
            raise InputError("This model's vocabulary has no gene IDs; match by gene symbol instead.")
        keys, lookup, by = var[gene_id_key].astype(str).str.split(".").str[0], vocabulary.id_index, "gene ID"
    else:
        keys, lookup, by = pd.Series(var.index.astype(str)), vocabulary.index, "symbol"
    ids = np.array([lookup.get(key, -1) for key in keys], dtype=np.int64)
    matched = int((ids >= 0).sum())
    report = {"matched": matched, "dataset_genes": len(ids), "vocabulary_genes": len(vocabulary.genes), "by": by}
    needed = max(min_genes, int(np.ceil(min_fraction * len(vocabulary.genes))))
    if matched < needed:
        hint = ("" if gene_id_key else " If var holds Ensembl IDs in a column, match by that column instead.")
        raise InputError(f"Only {matched} of the dataset's {len(ids)} genes are in the model's vocabulary of "
                         f"{len(vocabulary.genes)} genes (by {by}); at least {needed} are needed.{hint}")
    return ids, report


@dataclass(frozen=True)
class TokenizedCell:
    """One cell as tokens: vocabulary ids by decreasing normalised expression, and their bins (0 = none)."""

    tokens: np.ndarray
    bins: np.ndarray


def tokenize(counts: sp.csr_matrix, sizes: np.ndarray, gene_to_token: np.ndarray, medians: np.ndarray,
             max_length: int, n_bins: int = 0, add_cls: bool = False, target_sum: float = 1e4) -> list[TokenizedCell]:
    """Rank-value encode each row of ``counts`` (cells x dataset genes).

    ``gene_to_token`` maps dataset columns to vocabulary ids (``-1`` = not in the vocabulary);
    ``medians`` is indexed by vocabulary id. Ties keep the vocabulary order, so results are stable.
    """
    counts = sp.csr_matrix(counts)
    known = gene_to_token >= 0
    scale = np.zeros(len(gene_to_token))
    scale[known] = 1.0 / medians[gene_to_token[known]]
    room = max_length - (1 if add_cls else 0)
    cells = []
    for row in range(counts.shape[0]):
        start, end = counts.indptr[row], counts.indptr[row + 1]
        columns, values = counts.indices[start:end], counts.data[start:end].astype(np.float64)
        keep = known[columns] & (values > 0)
        columns, values = columns[keep], values[keep] * target_sum / max(sizes[row], 1e-12) * scale[columns[keep]]
        tokens = gene_to_token[columns]
        order = np.lexsort((tokens, -values))[:room]
        tokens, values = tokens[order], values[order]
        bins = expression_bins(values, n_bins) if n_bins else np.zeros(len(tokens), dtype=np.int64)
        if add_cls:
            tokens, bins = np.concatenate([[CLS_ID], tokens]), np.concatenate([[0], bins])
        cells.append(TokenizedCell(tokens.astype(np.int64), bins.astype(np.int64)))
    return cells


def expression_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """scGPT-style per-cell bins: each value's quantile bin (1..n_bins) among the cell's non-zero values."""
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1])
    return (np.digitize(values, edges, right=True) + 1).astype(np.int64)
