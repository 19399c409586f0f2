"""Where a knockout moves the cells: arrows on a UMAP and the mean shift of each group of cells.

Both read a :class:`sccore.perturb.KnockoutResult`. An arrow starts at the cell's own UMAP position and
moves by the difference between where the UMAP places its perturbed and its original embedding
(``place``, e.g. ``sccore.umap.transform`` without stochastic refinement, so that the same embedding is
always placed the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .perturb import KnockoutResult, sample_cells

MAX_ARROWS = 300


@dataclass(frozen=True)
class Arrows:
    """Arrows of a sample of knocked-out cells: their positions in the dataset, where each arrow starts and ends
    in the layout, each cell's cosine (original vs perturbed embedding), and how many cells the knockout moved."""

    cells: np.ndarray
    start: np.ndarray
    end: np.ndarray
    cosine: np.ndarray
    n_moved: int

    @property
    def median_length(self) -> float:
        """The median arrow length, in layout units."""
        return float(np.median(np.linalg.norm(self.end - self.start, axis=1))) if len(self.cells) else 0.0


def umap_arrows(result: KnockoutResult, layout: np.ndarray, place: Callable[[np.ndarray], np.ndarray],
                max_arrows: int = MAX_ARROWS, seed: int = 0,
                place_original: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> Arrows:
    """Arrows for at most ``max_arrows`` of the knocked-out cells (``sccore.perturb.sample_cells``).

    ``layout`` holds every cell's 2-D position; ``place`` maps embeddings (rows) to layout positions. Each arrow
    starts at the cell's position in ``layout`` and ends at start + place(perturbed) - place(original).
    ``place_original(cells, rows)`` places the cells' original embeddings instead of ``place``, e.g. from positions
    kept per cell across knockouts (it must agree with ``place``).
    """
    sample = sample_cells(np.arange(len(result.cells)), max_arrows, seed)
    cells = result.cells[sample]
    originals = (place_original or (lambda _, rows: place(rows)))(cells, result.original[sample])
    start = np.asarray(layout)[cells]
    end = start + np.asarray(place(result.perturbed[sample])) - np.asarray(originals)
    return Arrows(cells=cells, start=start, end=end, cosine=result.cosine[sample], n_moved=len(result.cells))


def group_shifts(result: KnockoutResult, groups: pd.Series) -> pd.DataFrame:
    """The mean shift (1 - cosine) of the knocked-out cells in each group of ``groups`` (an ``obs`` column), its
    standard error and the number of cells: columns ``mean``, ``sem``, ``count`` by group, largest mean first."""
    frame = pd.DataFrame({"group": groups.iloc[result.cells].astype(str).to_numpy(), "shift": 1 - result.cosine})
    return frame.groupby("group")["shift"].agg(["mean", "sem", "count"]).sort_values("mean", ascending=False)
