import numpy as np
import pandas as pd
import pytest

from sccore.select import cells_in_box, cells_in_lasso, cells_in_selection, composition, selection_bounds

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
