"""The compiled part of :mod:`sccore.markers`: per gene and group, the sums, sums of squares, counts of expressing
and of non-zero cells, and the rank sums of the non-zero values, ranked once per gene over every compared cell.

Log-normalised expression is mostly zeros, and zeros all tie: only the non-zero values of a gene are sorted, and
the zeros' shared mid-rank is added by the caller (``below_zero`` counts the negative values ranked before them),
which gives exactly the ranks of the whole column. Imported on first use (numba compiles it once and caches it
under ``NUMBA_CACHE_DIR``)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def gene_statistics(values, cells, starts, offsets, codes, first, with_ranks, packed, sums, squares, expressed,
                    nonzero, rank_sums, ties, below_zero):  # pragma: no cover - compiled
    """Add the statistics of genes ``first + j`` (``j`` a column of ``starts``) to the output arrays (groups x
    genes; ``ties`` and ``below_zero`` per gene). Gene ``j``'s values are, for each segment ``b``, ``values[p]`` of
    cell ``offsets[b] + cells[p]`` for ``p`` in ``starts[b, j]:starts[b, j + 1]``; a cell counts in group
    ``codes[cell]`` and not at all when that is -1. With ``with_ranks``, ``rank_sums`` gets each group's sum of the
    non-zero values' ranks (ties at their mid-rank, zeros counted before the positive values), ``ties`` the sum of
    t^3 - t over the tied non-zero values and ``below_zero`` the number of negative values; ``packed`` when every
    value is exactly a float32 (:func:`_rank_packed`)."""
    n_segments, n_genes = starts.shape[0], starts.shape[1] - 1
    n_used = 0
    for cell in range(len(codes)):
        if codes[cell] >= 0:
            n_used += 1
    for j in numba.prange(n_genes):
        gene = first + j
        length = 0
        for b in range(n_segments):
            length += starts[b, j + 1] - starts[b, j]
        kept = np.empty(length, dtype=np.float64)
        groups = np.empty(length, dtype=np.int64)
        m = 0
        for b in range(n_segments):
            for p in range(starts[b, j], starts[b, j + 1]):
                group = codes[offsets[b] + cells[p]]
                value = np.float64(values[p])
                if group < 0 or value == 0.0:
                    continue
                kept[m] = value
                groups[m] = group
                m += 1
                sums[group, gene] += value
                squares[group, gene] += value * value
                nonzero[group, gene] += 1.0
                if value > 0.0:
                    expressed[group, gene] += 1.0
        if not with_ranks or m == 0:
            continue
        zeros = n_used - m
        if packed:
            below_zero[gene] = _rank_packed(kept[:m], groups[:m], zeros, gene, rank_sums, ties)
        else:
            below_zero[gene] = _rank_sorted(kept[:m], groups[:m], zeros, gene, rank_sums, ties)


@numba.njit(cache=True)
def _rank_sorted(kept, groups, zeros, gene, rank_sums, ties):  # pragma: no cover - compiled
    """Add each non-zero value's mid-rank (the ``zeros`` counted before the positive values) to its group's rank
    sum and the tied runs' t^3 - t to ``ties``, by an indirect sort; returns the number of negative values."""
    m = len(kept)
    order = np.argsort(kept)
    negatives = 0
    i = 0
    while i < m:
        value = kept[order[i]]
        k = i + 1
        while k < m and kept[order[k]] == value:
            k += 1
        run = k - i
        rank = i + (run + 1) / 2.0 + (zeros if value > 0.0 else 0)
        for q in range(i, k):
            rank_sums[groups[order[q]], gene] += rank
        ties[gene] += float(run) ** 3 - run
        if value < 0.0:
            negatives += run
        i = k
    return negatives


@numba.njit(cache=True)
def _rank_packed(kept, groups, zeros, gene, rank_sums, ties):  # pragma: no cover - compiled
    """:func:`_rank_sorted` for values that are exactly float32 (an atlas's store): each value's float32 bits,
    made to sort as the numbers do, and its group packed into one integer, sorted directly (about twice as fast)."""
    m = len(kept)
    bits = kept.astype(np.float32).view(np.uint32)
    keys = np.empty(m, dtype=np.uint64)
    sign, low = np.uint32(0x80000000), np.uint64(0xFFFFFFFF)
    for i in range(m):
        ordered = ~bits[i] if bits[i] >= sign else bits[i] | sign  # negative values below positive ones
        keys[i] = (np.uint64(ordered) << np.uint64(32)) | np.uint64(groups[i])
    keys.sort()
    negatives = 0
    i = 0
    while i < m:
        value = keys[i] >> np.uint64(32)
        k = i + 1
        while k < m and keys[k] >> np.uint64(32) == value:
            k += 1
        run = k - i
        positive = value > np.uint64(sign)
        rank = i + (run + 1) / 2.0 + (zeros if positive else 0)
        for q in range(i, k):
            rank_sums[np.int64(keys[q] & low), gene] += rank
        ties[gene] += float(run) ** 3 - run
        if not positive:
            negatives += run
        i = k
    return negatives
