"""The layout viewer's Python side (dashboard/viewer.py): hover questions answered with the nearest cell, the colour
key sent to the browser. The page's AppTests (tests/test_pages.py) draw it; tests/test_browser.py drives its
JavaScript."""

import numpy as np
import pandas as pd

from dashboard.viewer import Colouring, _colour_key, hover_answer, png_data_url
from sccore.select import CellFinder


def test_hover_answer_gives_the_nearest_cell_s_place_and_lines_or_only_the_question_s_number():
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    finder = CellFinder(coords)
    describe = lambda cell: [f"cell {cell}", f"type: {'ab'[cell % 2]}"]  # noqa: E731
    answer = hover_answer({"x": 0.9, "y": 1.2, "r": 0.5, "seq": 7}, coords, finder, describe)
    assert answer == {"seq": 7, "x": 1.0, "y": 1.0, "lines": ["cell 1", "type: b"]}
    assert hover_answer({"x": 3.0, "y": 3.0, "r": 0.5, "seq": 8}, coords, finder, describe) == {"seq": 8}
    assert hover_answer({"x": "left", "y": 3.0, "r": 0.5, "seq": 9}, coords, finder, describe) == {"seq": 9}
    assert hover_answer(None, coords, finder, describe) == {"seq": None}


def test_colour_key_lists_the_legend_or_a_colour_bar():
    legend = pd.DataFrame({"category": ["B", "T"], "color": ["#111111", "#222222"], "n_cells": [1200, 3]})
    assert _colour_key(Colouring(legend=legend))["legend"] == [{"color": "#111111", "label": "B (1,200)"},
                                                               {"color": "#222222", "label": "T (3)"}]
    bar = _colour_key(Colouring(color_span=(0.0, 2.5), color_title="CD79A (log1p)"))["colorbar"]
    assert (bar["low"], bar["high"], bar["title"]) == ("0", "2.5", "CD79A (log1p)")
    assert len(bar["colors"]) > 2 and _colour_key(Colouring()) == {}


def test_png_data_url_is_cached_by_every_pixel():
    image = np.zeros((600, 800, 4), dtype=np.uint8)
    other = image.copy()
    other[599, 799, 3] = 255  # one byte of 1.9 million: a sample of the pixels would miss it
    first, second = png_data_url(image), png_data_url(other)
    assert first.startswith("data:image/png;base64,") and first != second and png_data_url(image.copy()) == first
