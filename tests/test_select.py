import numpy as np
import pandas as pd
import pytest

from sccore.select import CellFinder, cells_in_box, cells_in_lasso, cells_in_selection, composition, selection_bounds

COORDS = np.array([[0, 0], [1, 1], [2, 2], [3, 0], [0.5, 0.2]], dtype=np.float32)


def test_box_and_lasso():
    assert cells_in_box(COORDS, [2.5, -0.5], [-1, 1.5]).tolist() == [0, 1, 4]
    triangle = cells_in_lasso(COORDS, [-0.5, 3.5, -0.5], [-0.5, -0.5, 1.5])
    assert triangle.tolist() == [0, 4]


def test_plotly_selection_union_and_bounds():
    selection = {"box": [{"x": [2.5, 3.5], "y": [-1, 1]}], "lasso": [{"x": [-0.5, 1.5, -0.5], "y": [-0.5, -0.5, 1.5]}],
                 "points": []}
    cells = cells_in_selection(COORDS, selection)
    assert cells.tolist() == [0, 3, 4]
    assert selection_bounds(COORDS, cells) == ((0.0, 3.0), (0.0, pytest.approx(0.2)))
    assert cells_in_selection(COORDS, {}).size == 0


def test_composition_counts_and_percentages():
    obs = pd.DataFrame({"cell_type": ["T", "T", "B", "NK", "T"]})
    table = composition(obs, np.array([0, 1, 2]), "cell_type")
    assert table.to_dict("list") == {"cell_type": ["T", "B"], "n_cells": [2, 1], "percent": [66.7, 33.3]}


def test_cell_finder_names_the_nearest_cell_within_the_radius():
    coords = np.vstack([COORDS, [[np.nan, 0.0]]])  # a cell without a position is never found
    finder = CellFinder(coords)
    assert finder.nearest(0.45, 0.25, 0.2) == 4
    assert finder.nearest(2.9, 0.1, 0.5) == 3
    assert finder.nearest(5.0, 5.0, 0.5) is None
    assert finder.nearest(np.nan, 0.0, 1.0) is None
    rng = np.random.default_rng(0)
    many = rng.normal(size=(5000, 2))
    points = rng.normal(size=(20, 2))
    brute = [int(np.argmin(((many - p) ** 2).sum(1))) for p in points]
    assert [CellFinder(many).nearest(x, y, 10.0) for x, y in points] == brute
