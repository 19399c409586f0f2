"""The layout viewer's Python side (dashboard/viewer.py): hover questions answered with the nearest cell, the colour
key and the marked cells sent to the browser. The pages' AppTests (tests/test_pages.py, tests/test_page_search.py)
draw it; tests/test_browser.py drives its JavaScript."""

import numpy as np
import pandas as pd

import pytest

from dashboard.viewer import Colouring, _colour_key, cell_marks, hover_answer, png_data_url, search_marks
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


def test_cell_marks_send_each_cell_s_place_and_refuse_an_unknown_shape():
    coords = np.array([[0.5, -1.0], [2.0, 3.25]], dtype=np.float32)
    marks = cell_marks(coords, "neighbours (2)", "ring", "#D55E00")
    assert marks == {"label": "neighbours (2)", "shape": "ring", "color": "#D55E00", "x": [0.5, 2.0], "y": [-1.0, 3.25]}
    assert cell_marks(np.empty((0, 2)), "query (0)", "cross", "#111111")["x"] == []
    with pytest.raises(ValueError, match="cross"):
        cell_marks(coords, "query", "star", "#111111")


def test_a_search_marks_a_sample_of_its_query_cells_and_every_neighbour_with_its_rank():
    coords = np.arange(20, dtype=float).reshape(10, 2)
    neighbours = pd.DataFrame({"position": [7, 2], "rank": [1, 2], "cosine_similarity": [0.9, 0.5]})
    (query, found), notes = search_marks(coords, np.arange(5), neighbours)
    assert query["label"] == "query (5)" and query["shape"] == "cross" and query["x"] == list(coords[:5, 0])
    assert found["label"] == "neighbours (2)" and found["shape"] == "ring" and found["x"] == [14.0, 4.0]
    assert notes == {7: "neighbour rank 1, cosine 0.900", 2: "neighbour rank 2, cosine 0.500"}
    many = np.arange(5000)
    (sampled,), _ = search_marks(np.zeros((5000, 2)), many, neighbours.iloc[:0])
    assert sampled["label"] == "query (5,000)" and len(sampled["x"]) == 2000  # a fixed sample of a large query
    assert search_marks(coords, np.array([], dtype=int), neighbours.iloc[:0]) == ((), {})
