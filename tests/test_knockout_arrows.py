"""The Knockout page's placements of original embeddings: kept per cell across knockouts, equal to placing them."""

import numpy as np

from sccore.workflow import analyse
from tests.conftest import make_counts


def test_originals_are_placed_once_per_cell_and_agree_with_placing_them_together(monkeypatch):
    from dashboard import cached

    analysis = analyse(make_counts(n_cells=200, n_genes=300))
    own = np.asarray(analysis.adata.obsm["X_pca"])
    placed = []
    transform = cached._transform
    monkeypatch.setattr(cached, "_transform", lambda a, rep, rows, optimize: placed.append(len(rows))
                        or transform(a, rep, rows, optimize))
    first, second = np.array([5, 1, 9, 30]), np.array([9, 30, 77])
    together = transform(analysis, "X_pca", own[np.r_[first, 77]], optimize=False)
    np.testing.assert_allclose(cached.placed_originals(analysis, "X_pca", first, own[first]), together[:4], atol=1e-5)
    np.testing.assert_allclose(cached.placed_originals(analysis, "X_pca", second, own[second]),
                               together[[2, 3, 4]], atol=1e-5)
    assert placed == [4, 1]  # the second knockout placed only the one cell not placed before
    moved = own[second] + 0.5  # rows that are not the cells' own (e.g. in Harmony's space): placed as they are
    np.testing.assert_allclose(cached.placed_originals(analysis, "X_pca", second, moved),
                               transform(analysis, "X_pca", moved, optimize=False), atol=1e-5)
