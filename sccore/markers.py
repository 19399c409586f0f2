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
Genes are tested in chunks of :data:`GENES_PER_CHUNK`, the only part of a sparse matrix ever made dense.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from .errors import InputError
from .perturb import benjamini_hochberg

COLUMNS = ["group", "gene", "score", "logfoldchange", "pvalue", "fdr", "pct_in", "pct_out"]
METHODS = ("wilcoxon", "t-test")
GENES_PER_CHUNK = 256
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
    tested = sorted(set(tested))
    membership = names[:, None] == np.array(tested, dtype=object)[None, :]
    cells = matrix if labelled.all() else matrix[np.flatnonzero(labelled)]
    return _compare(cells, genes, membership, tested, method)


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
    rows = np.concatenate([cells_a, cells_b])
    membership = np.arange(len(rows))[:, None] < len(cells_a)
    return _compare(matrix[rows], genes, membership, ["A"], method)


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


def _compare(matrix, genes: Sequence[str], membership: np.ndarray, group_names: list[str],
             method: str) -> pd.DataFrame:
    """Test each group (a column of the cells x groups boolean ``membership``) against the other cells."""
    cells = sp.csc_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix)
    n_cells, n_genes = cells.shape
    weights = membership.astype(np.float64)
    n_in = weights.sum(0)[:, None]
    n_out = n_cells - n_in
    sum_in, square_in, expressed_in = (np.zeros((len(group_names), n_genes)) for _ in range(3))
    sum_all, square_all, expressed_all = (np.zeros(n_genes) for _ in range(3))
    rank_sum_in, tie_correction = np.zeros((len(group_names), n_genes)), np.ones(n_genes)
    for left in range(0, n_genes, GENES_PER_CHUNK):
        chunk = slice(left, min(left + GENES_PER_CHUNK, n_genes))
        values = cells[:, chunk]
        values = values.toarray() if sp.issparse(values) else values
        values = np.asarray(values, dtype=np.float64)
        sum_in[:, chunk], sum_all[chunk] = weights.T @ values, values.sum(0)
        square_in[:, chunk], square_all[chunk] = weights.T @ values**2, (values**2).sum(0)
        expressed = (values > 0).astype(np.float64)
        expressed_in[:, chunk], expressed_all[chunk] = weights.T @ expressed, expressed.sum(0)
        if method == "wilcoxon":
            rank_sum_in[:, chunk] = weights.T @ stats.rankdata(values, axis=0)
            tie_correction[chunk] = _tie_correction(values)
    mean_in, mean_out = sum_in / n_in, (sum_all - sum_in) / n_out
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "wilcoxon":
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
    for index, name in enumerate(group_names):
        order = np.argsort(-scores[index], kind="stable")
        tables.append(pd.DataFrame({
            "group": name, "gene": genes[order], "score": scores[index, order],
            "logfoldchange": fold_changes[index, order], "pvalue": p_values[index, order],
            "fdr": benjamini_hochberg(p_values[index])[order],
            "pct_in": expressed_in[index, order] / n_in[index, 0],
            "pct_out": (expressed_all - expressed_in[index])[order] / n_out[index, 0]}))
    return pd.concat(tables, ignore_index=True)[COLUMNS]


def _tie_correction(values: np.ndarray) -> np.ndarray:
    """Per column, 1 - sum(t^3 - t) / (n^3 - n) over the sizes t of the groups of tied values (scipy's
    ``tiecorrect``), for all columns at once."""
    n_cells = values.shape[0]
    ordered = np.sort(values, axis=0).T
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run_starts = np.flatnonzero(starts.ravel())
    run_lengths = np.diff(np.append(run_starts, ordered.size)).astype(np.float64)
    ties = np.bincount(run_starts // n_cells, weights=run_lengths**3 - run_lengths, minlength=ordered.shape[0])
    return 1.0 - ties / (n_cells**3 - n_cells)
