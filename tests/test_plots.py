"""The marker, differential expression and knockout figures of sccore.plots: what they draw, from the numbers
given."""

import numpy as np
import pandas as pd

from sccore.markers import COLUMNS
from sccore.plots import (MAX_SVG_MARKERS, add_arrows, add_cells, dot_plot, group_shift_figure, marker_heatmap,
                          volcano_figure)


def test_dot_plot_sizes_dots_by_share_and_colours_by_mean_scaled_per_gene():
    means = pd.DataFrame([[0.0, 2.0], [1.0, 2.0], [3.0, 2.0]], index=["g0", "g1", "g2"], columns=["CD14", "MS4A1"])
    shares = pd.DataFrame([[0.0, 0.5], [0.25, 0.5], [1.0, 0.5]], index=means.index, columns=means.columns)
    trace = dot_plot(means, shares).data[0]
    assert list(trace.x) == ["CD14", "MS4A1"] * 3 and list(trace.y) == ["g0", "g0", "g1", "g1", "g2", "g2"]
    np.testing.assert_allclose(trace.marker.color, [0, 0, 1 / 3, 0, 1, 0])  # a constant gene is 0 everywhere
    sizes = np.asarray(trace.marker.size)
    assert sizes[0] < sizes[2] < sizes[4] and sizes[1] == sizes[3] == sizes[5]


def test_marker_heatmap_scales_each_gene_and_labels_each_group_once():
    values = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 3.0], [1.0, 5.0]])
    figure = marker_heatmap(values, ["a", "a", "b", "b"], ["G1", "G2"])
    np.testing.assert_allclose(figure.data[0].z, [[0, 0], [0.5, 0], [1, 0.5], [0.25, 1]])
    assert list(figure.layout.yaxis.ticktext) == ["a", "b"]
    np.testing.assert_allclose(figure.layout.yaxis.tickvals, [0.5, 2.5])


def test_volcano_colours_significant_genes_by_direction_and_names_the_chosen():
    table = pd.DataFrame({"group": "A", "gene": ["UP", "DOWN", "FLAT", "ZERO_P"], "score": [5.0, -5.0, 0.1, 9.0],
                          "logfoldchange": [2.0, -1.5, 0.1, 3.0], "pvalue": [1e-8, 1e-6, 0.5, 0.0],
                          "fdr": [1e-7, 1e-5, 0.6, 0.0], "pct_in": 0.5, "pct_out": 0.5})[COLUMNS]
    figure = volcano_figure(table, ["UP", "DOWN"])
    up, down, flat, names = figure.data
    assert set(up.text) == {"UP", "ZERO_P"} and list(down.text) == ["DOWN"] and list(flat.text) == ["FLAT"]
    assert np.isfinite(up.y).all() and max(up.y) == 300  # a p-value of 0 is drawn at the top, not lost
    assert list(names.text) == ["UP", "DOWN"] and "(2)" in up.name
    clipped = volcano_figure(table.assign(logfoldchange=[30.0, -1.5, 0.1, 3.0]), max_fold_change=10).data[0]
    assert list(clipped.x) == [10.0, 3.0] and list(clipped.marker.symbol) == ["triangle-right", "circle"]
    assert clipped.customdata[0][0] == 30.0  # the true value, for the hover


def test_a_few_marked_cells_are_svg_and_many_are_webgl():
    import plotly.graph_objects as go

    figure = go.Figure()
    for n_cells in (MAX_SVG_MARKERS, MAX_SVG_MARKERS + 1):
        add_cells(figure, np.zeros((n_cells, 2)), f"{n_cells}", {"size": 4})
    assert [trace.type for trace in figure.data] == ["scatter", "scattergl"]


def test_arrows_are_one_trace_of_lines_heads_included_with_hover_on_the_ends():
    import plotly.graph_objects as go

    start = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]])
    end = start + np.array([[1.0, 0.0], [0.0, -1.0], [0.5, 0.5]])
    figure = go.Figure()
    add_arrows(figure, start, end, ["a", "b", "c"], head_length=0.1)
    lines, ends = figure.data
    assert not figure.layout.annotations and lines.mode == "lines"  # no annotation or marker per arrow
    points = np.column_stack([lines.x, lines.y]).astype(float).reshape(3, 7, 2)  # per arrow: shaft, gap, head, gap
    np.testing.assert_array_equal(points[:, 0], start), np.testing.assert_array_equal(points[:, 1], end)
    np.testing.assert_array_equal(points[:, 4], end)  # the head's tip
    assert np.isnan(points[:, [2, 6]]).all() and lines.connectgaps is False  # each arrow its own line
    for stroke in (3, 5):  # both strokes of a head are head_length long, pointing back along the shaft (25 degrees)
        back = points[:, stroke] - end
        np.testing.assert_allclose(np.linalg.norm(back, axis=1), 0.1)
        shaft = (start - end) / np.linalg.norm(start - end, axis=1, keepdims=True)
        np.testing.assert_allclose(np.sum(back * shaft, axis=1) / 0.1, np.cos(np.deg2rad(25)))
    assert lines.hoverinfo == "skip" and list(ends.text) == ["a", "b", "c"]
    np.testing.assert_array_equal(np.column_stack([ends.x, ends.y]), end)


def test_group_shifts_of_several_methods_are_panels_of_one_figure_in_the_groups_colours():
    pca = pd.DataFrame({"mean": [0.3, 0.1], "sem": [0.01, np.nan], "count": [5, 1]}, index=["B", "T"])
    linear = pd.DataFrame({"mean": [0.2], "sem": [0.02], "count": [4]}, index=["T"])
    figure = group_shift_figure({"PCA": pca, "Linear": linear}, {"B": "#111111"})
    first, second = figure.data
    assert [a.text for a in figure.layout.annotations] == ["PCA", "Linear"]  # one panel each, titled
    assert (first.xaxis, second.xaxis) == ("x", "x2")
    assert list(first.x) == ["B", "T"] and list(first.marker.color) == ["#111111", "#888888"]  # grey: no colour given
    np.testing.assert_allclose(first.error_y.array, [0.01, 0.0])
    assert list(second.customdata) == [4]
