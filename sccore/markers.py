"""Marker genes and differential expression, computed as ``scanpy.tl.rank_genes_groups`` does.

- :func:`rank_genes`: every group of cells against the rest of the labelled cells (marker genes).
- :func:`differential_expression`: one set of cells (A) against another (B).
- :func:`top_genes`, :func:`expression_by_group` and :func:`sample_by_group`: what a dot plot and a heat map of the
  top markers draw.

Both take log-normalised expression (``log1p`` of counts scaled to a total, natural logarithm) as a cells x genes
matrix, sparse or dense, and test every gene:

- ``wilcoxon``: the Mann-Whitney U test with the normal approximation and tie correction (scanpy's
  ``tie_correct=True``): the ``score`` is the z-score of the group's rank sum, ranks taken over the compared cells.
- ``t-test``: Welch's t-test (unequal variances, Welch-Satterthwaite degrees of freedom); the ``score`` is t.

The ``logfoldchange`` is log2 of the ratio of the mean expression (``expm1`` of the mean log expression, plus 1e-9)
in the group to that in the rest, the ``pvalue`` is two-sided, the ``fdr`` is Benjamini-Hochberg within the group,
and ``pct_in``/``pct_out`` are the fractions of cells that express the gene (value > 0) in the group and the rest.

The expression is read a range of genes at a time (at most :data:`GENES_PER_CHUNK` genes and
:data:`ENTRIES_PER_CHUNK` stored values), from an in-memory matrix or from an atlas's gene-major store on disk
(:class:`sccore.atlas.GeneStore`, which is never loaded whole), and nothing is made dense. Each gene is ranked once
for every group (:mod:`sccore._rank_kernel`): only its non-zero values are sorted and the zeros, which all tie, take
their shared mid-rank, which gives exactly the ranks (and the tie correction) of the whole column.

:func:`analysis_markers` and :func:`analysis_de` run them on a :class:`sccore.workflow.Analysis`, in memory
(``adata.X``) or an atlas's (its gene store), as the dashboard holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from .errors import InputError
from .perturb import benjamini_hochberg

if TYPE_CHECKING:
    from .workflow import Analysis

COLUMNS = ["group", "gene", "score", "logfoldchange", "pvalue", "fdr", "pct_in", "pct_out"]
METHODS = ("wilcoxon", "t-test")
GENES_PER_CHUNK = 256
ENTRIES_PER_CHUNK = 2**24  # stored values read at once (an atlas's values and cell positions: 128 MiB)
PSEUDO_EXPRESSION = 1e-9  # scanpy's: keeps the fold change of genes unexpressed on one side finite


def rank_genes(matrix, genes: Sequence[str], groups, *, method: str = "wilcoxon",
               groups_to_test: Sequence[str] | None = None) -> pd.DataFrame:
    """Marker genes: each group (sorted by name, or those in ``groups_to_test``) against the rest of the labelled
    cells; cells whose label is missing (NaN/None) are left out. One row per group and gene (:data:`COLUMNS`),
    sorted by group and then by descending score."""
    _check_method(method)
    _check_genes(matrix, genes)
    labels = np.asarray(groups, dtype=object)
    if labels.ndim != 1 or len(labels) != matrix.shape[0]:
        raise InputError(f"There are {len(labels)} group labels for {matrix.shape[0]} cells: "
                         "give one label per cell (row of the matrix).")
    labelled = np.asarray(pd.notna(labels), dtype=bool)
    names = np.array([str(label) for label in labels[labelled]], dtype=object)
    group_names, sizes = np.unique(names, return_counts=True)
    if len(group_names) < 2:
        raise InputError("This is a column with one group: choose a column with two or more groups (or a higher "
                         "clustering resolution), or compare two sets of cells with differential expression.")
    single = [str(name) for name, size in zip(group_names, sizes) if size < 2]
    if single:
        raise InputError(f"Group(s) {', '.join(single)} have only one cell: merge them with another group "
                         "or drop their cells.")
    tested = list(group_names) if groups_to_test is None else [str(name) for name in groups_to_test]
    unknown = sorted(set(tested) - set(group_names))
    if unknown:
        raise InputError(f"No cells are labelled {', '.join(unknown)}: choose among {', '.join(group_names)}.")
    codes = np.full(len(labels), -1, dtype=np.int64)
    codes[labelled] = np.searchsorted(group_names, names)
    positions = [int(np.searchsorted(group_names, name)) for name in sorted(set(tested))]
    return _compare(_gene_source(matrix), genes, codes, [str(name) for name in group_names], positions, method)


def differential_expression(matrix, genes: Sequence[str], in_a, in_b, method: str = "wilcoxon") -> pd.DataFrame:
    """Differential expression of the cells in A against those in B (boolean masks or positions over the cells,
    disjoint, at least 2 cells each): the columns of :func:`rank_genes`, with ``group`` "A"."""
    _check_method(method)
    _check_genes(matrix, genes)
    cells_a = _positions(in_a, matrix.shape[0], "A")
    cells_b = _positions(in_b, matrix.shape[0], "B")
    if np.array_equal(cells_a, cells_b):
        raise InputError(f"A and B are the same {len(cells_a):,} cells: choose other cells for one of them (e.g. "
                         "another annotation value, or the other cells).")
    shared = np.intersect1d(cells_a, cells_b)
    if len(shared):
        raise InputError(f"{len(shared)} cell(s) are in both A and B: remove them from one of the two sets.")
    codes = np.full(matrix.shape[0], -1, dtype=np.int64)
    codes[cells_a], codes[cells_b] = 0, 1
    return _compare(_gene_source(matrix), genes, codes, ["A", "B"], [0], method)


def analysis_markers(analysis: Analysis, groupby: str, method: str = "wilcoxon",
                     groups_to_test: Sequence[str] | None = None) -> pd.DataFrame:
    """:func:`rank_genes` of the groups of ``analysis.adata.obs[groupby]`` on the analysis's log-normalised
    expression: ``adata.X`` in memory, the gene-major store on disk for an atlas
    (:meth:`sccore.atlas.Atlas.analysis`)."""
    adata = analysis.adata
    if groupby not in adata.obs.columns:
        raise InputError(f"obs has no column '{groupby}': choose one of {', '.join(map(str, adata.obs.columns))}.")
    return rank_genes(analysis_expression(analysis), adata.var_names, adata.obs[groupby], method=method,
                      groups_to_test=groups_to_test)


def analysis_de(analysis: Analysis, in_a, in_b, method: str = "wilcoxon") -> pd.DataFrame:
    """:func:`differential_expression` of the cells in A against those in B (masks or positions over
    ``analysis.adata``'s cells) on the analysis's log-normalised expression, in memory or an atlas's on disk."""
    return differential_expression(analysis_expression(analysis), analysis.adata.var_names, in_a, in_b, method=method)


def analysis_expression(analysis: Analysis):
    """The log-normalised expression of ``analysis`` as :func:`rank_genes` and :func:`differential_expression` read
    it: an atlas's gene store on disk (its ``expression_reader``), else ``adata.X``."""
    from .atlas import GeneStore

    reader = analysis.expression_reader
    return reader if isinstance(reader, GeneStore) else analysis.adata.X


def _gene_source(matrix):
    """``matrix`` as a source of gene ranges: an atlas's gene store as it is, anything else :class:`_InMemory`."""
    return matrix if hasattr(matrix, "segments") else _InMemory(matrix)


def top_genes(table: pd.DataFrame, n: int) -> dict[str, list[str]]:
    """The ``n`` best-scoring genes of each group of a :func:`rank_genes` table (rows sorted by descending score
    within a group), by group in the table's order."""
    if n < 1:
        raise InputError(f"Ask for 1 or more top genes per group, not {n}.")
    by_group = table.groupby("group", sort=False, observed=True)
    return {str(group): list(rows["gene"].head(n)) for group, rows in by_group}


def group_order(groups) -> list[str]:
    """The groups of ``groups`` (one label per cell) as text: a categorical's categories that have cells in their
    order, else the labels sorted; missing labels left out."""
    labels = pd.Series(groups)
    if isinstance(labels.dtype, pd.CategoricalDtype):
        present = set(labels.dropna().astype(str))
        return [str(name) for name in labels.cat.categories if str(name) in present]
    return sorted({str(label) for label in labels.dropna()})


def expression_by_group(matrix, genes: Sequence[str], groups, selected: Sequence[str]) -> tuple[pd.DataFrame,
                                                                                                 pd.DataFrame]:
    """Each group's mean log expression of the genes ``selected`` (names among ``genes``) and the fraction of its
    cells that express them (value > 0): two tables, groups (:func:`group_order`) x selected genes, as a dot plot
    draws them. Cells with a missing label are left out."""
    _check_genes(matrix, genes)
    positions = pd.Index([str(gene) for gene in genes]).get_indexer([str(gene) for gene in selected])
    if (positions < 0).any():
        missing = [str(gene) for gene, position in zip(selected, positions) if position < 0]
        raise InputError(f"Gene(s) {', '.join(missing[:10])} are not in the matrix: choose genes it holds.")
    labels = pd.Series(np.asarray(groups, dtype=object))
    if len(labels) != matrix.shape[0]:
        raise InputError(f"There are {len(labels)} group labels for {matrix.shape[0]} cells: give one per cell.")
    order = group_order(groups)
    names = labels.where(labels.isna(), labels.astype(str)).to_numpy()
    values = matrix[:, positions]
    values = np.asarray(values.toarray() if sp.issparse(values) else values, dtype=np.float64)
    means, fractions = [], []
    for name in order:
        rows = values[names == name]
        means.append(rows.mean(0))
        fractions.append((rows > 0).mean(0))
    columns = [str(gene) for gene in selected]
    return (pd.DataFrame(means, index=order, columns=columns), pd.DataFrame(fractions, index=order, columns=columns))


def sample_by_group(groups, per_group: int, seed: int = 0) -> np.ndarray:
    """Positions of at most ``per_group`` cells of each group (drawn without replacement, seeded), grouped in
    :func:`group_order` and ascending within a group: the cells a heat map of many cells shows."""
    labels = pd.Series(np.asarray(groups, dtype=object))
    names = labels.where(labels.isna(), labels.astype(str)).to_numpy()
    rng = np.random.default_rng(seed)
    chosen = []
    for name in group_order(groups):
        members = np.flatnonzero(names == name)
        chosen.append(np.sort(rng.choice(members, min(per_group, len(members)), replace=False)))
    return np.concatenate(chosen) if chosen else np.array([], dtype=np.int64)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}: choose one of {', '.join(METHODS)}.")


def _check_genes(matrix, genes: Sequence[str]) -> None:
    if matrix.ndim != 2 or len(genes) != matrix.shape[1]:
        raise InputError(f"There are {len(genes)} gene names for a matrix of shape {matrix.shape}: "
                         "give one name per gene (column of the cells x genes matrix).")


def _positions(selection, n_cells: int, name: str) -> np.ndarray:
    """The sorted positions of the cells a mask or a list of positions selects; refuses fewer than 2 cells."""
    selection = np.asarray(selection)
    if selection.dtype == bool:
        if selection.shape != (n_cells,):
            raise InputError(f"The mask of set {name} has {selection.size} entries for {n_cells} cells: "
                             "give one entry per cell.")
        positions = np.flatnonzero(selection)
    else:
        positions = np.unique(selection.astype(int).ravel())
        if len(positions) and (positions[0] < 0 or positions[-1] >= n_cells):
            raise InputError(f"Set {name} holds positions outside 0..{n_cells - 1}: give positions of cells.")
    if len(positions) == 0:
        raise InputError(f"Set {name} is empty: select at least 2 cells for it.")
    if len(positions) < 2:
        raise InputError(f"Set {name} has only one cell: select at least 2 cells for it.")
    return positions


class _InMemory:
    """A cells x genes matrix (sparse or dense) read a range of genes at a time, as :class:`sccore.atlas.GeneStore`
    is: one segment of cells (offset 0)."""

    def __init__(self, matrix):
        self.by_gene = sp.csc_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix)

    def entries_per_gene(self) -> np.ndarray:
        """How many values of each gene are stored (every cell's for a dense matrix)."""
        if sp.issparse(self.by_gene):
            return np.diff(self.by_gene.indptr)
        return np.full(self.by_gene.shape[1], self.by_gene.shape[0])

    def segments(self, first: int, stop: int, used: np.ndarray | None = None):
        """The genes ``first:stop`` as (values, cell positions, starts of shape (1, genes + 1), cell offsets)."""
        block = self.by_gene[:, first:stop]
        block = block if sp.issparse(block) else sp.csc_matrix(block)
        return block.data, block.indices, block.indptr[None, :].astype(np.int64), np.zeros(1, dtype=np.int64)


def _gene_ranges(entries_per_gene: np.ndarray):
    """Consecutive ranges of genes of at most :data:`GENES_PER_CHUNK` genes and :data:`ENTRIES_PER_CHUNK` stored
    values (at least one gene each)."""
    first, n_genes = 0, len(entries_per_gene)
    while first < n_genes:
        room = np.cumsum(entries_per_gene[first:first + GENES_PER_CHUNK]) <= ENTRIES_PER_CHUNK
        stop = first + max(1, int(np.argmin(room)) if not room.all() else len(room))
        yield first, stop
        first = stop


def _compare(source, genes: Sequence[str], codes: np.ndarray, group_names: list[str], tested: list[int],
             method: str) -> pd.DataFrame:
    """Test each group ``g`` in ``tested`` (the cells whose ``codes`` is ``g``; cells coded -1 are left out)
    against the other cells of ``codes >= 0``, reading ``source`` (:class:`_InMemory` or an atlas's gene store) a
    range of genes at a time."""
    from ._rank_kernel import gene_statistics

    n_groups, n_genes = len(group_names), len(genes)
    used = codes >= 0
    n_cells = int(used.sum())
    n_in = np.bincount(codes[used], minlength=n_groups).astype(np.float64)[:, None]
    n_out = n_cells - n_in
    sum_in, square_in, expressed_in, nonzero_in, rank_sum_in = (np.zeros((n_groups, n_genes)) for _ in range(5))
    ties, below_zero = np.zeros(n_genes), np.zeros(n_genes)
    for first, stop in _gene_ranges(source.entries_per_gene()):
        values, cells, starts, offsets = source.segments(first, stop, used)
        gene_statistics(values, cells, starts, offsets, codes, first, method == "wilcoxon",
                        values.dtype == np.float32, sum_in, square_in, expressed_in, nonzero_in, rank_sum_in, ties,
                        below_zero)
    sum_all, square_all, expressed_all = sum_in.sum(0), square_in.sum(0), expressed_in.sum(0)
    mean_in, mean_out = sum_in / n_in, (sum_all - sum_in) / n_out
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "wilcoxon":
            zeros = n_cells - nonzero_in.sum(0)  # every cell not stored, or stored as 0, ties at the zeros' mid-rank
            rank_sum_in += (n_in - nonzero_in) * (below_zero + (zeros + 1) / 2.0)
            tie_correction = 1.0 - (ties + zeros**3 - zeros) / (float(n_cells) ** 3 - n_cells)
            spread = np.sqrt(tie_correction * n_in * n_out * (n_cells + 1) / 12.0)
            scores = (rank_sum_in - n_in * (n_cells + 1) / 2.0) / spread
            scores[np.isnan(scores)] = 0.0  # genes with one value in every cell
            p_values = 2 * stats.norm.sf(np.abs(scores))
        else:
            var_in = np.maximum(square_in - n_in * mean_in**2, 0) / (n_in - 1)
            var_out = np.maximum(square_all - square_in - n_out * mean_out**2, 0) / (n_out - 1)
            scores, p_values = stats.ttest_ind_from_stats(mean_in, np.sqrt(var_in), n_in, mean_out,
                                                          np.sqrt(var_out), n_out, equal_var=False)
            scores[np.isnan(scores)] = 0.0  # equal means and no variance
            p_values[np.isnan(p_values)] = 1.0
        fold_changes = np.log2((np.expm1(mean_in) + PSEUDO_EXPRESSION) / (np.expm1(mean_out) + PSEUDO_EXPRESSION))
    genes = np.asarray(genes, dtype=object)
    tables = []
    for index in tested:
        order = np.argsort(-scores[index], kind="stable")
        tables.append(pd.DataFrame({
            "group": group_names[index], "gene": genes[order], "score": scores[index, order],
            "logfoldchange": fold_changes[index, order], "pvalue": p_values[index, order],
            "fdr": benjamini_hochberg(p_values[index])[order],
            "pct_in": expressed_in[index, order] / n_in[index, 0],
            "pct_out": (expressed_all - expressed_in[index])[order] / n_out[index, 0]}))
    return pd.concat(tables, ignore_index=True)[COLUMNS]
