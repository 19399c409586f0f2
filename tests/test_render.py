import io

import numpy as np
import pytest
from PIL import Image

from sccore import InputError
from sccore.render import (OKABE_ITO, OTHER_COLOR, View, _canvas, _frame, _shade_counts, category_colors, fit_view,
                           legend_table, png_bytes, render_categories, render_values, requested_view,
                           safe_category_colors)


@pytest.fixture
def layout():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 5, 20_000)
    coords = (rng.normal(size=(20_000, 2)) + np.stack([codes * 4, codes % 2 * 3], 1)).astype(np.float32)
    return coords, codes


def test_categories_render_with_their_colours(layout):
    coords, codes = layout
    colors = category_colors(5)
    image = render_categories(coords, codes, colors, fit_view(coords, 200, 150))
    assert image.shape == (150, 200, 4) and image.dtype == np.uint8
    opaque = image[image[..., 3] > 0]
    assert len(opaque) > 1000
    for color in colors:  # every category's colour appears in some pixel
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        assert np.min(np.abs(opaque[:, :3].astype(int) - rgb).sum(1)) < 30


def test_missing_categories_are_grey_and_counted(layout):
    coords, codes = layout
    codes = codes.copy()
    codes[:100] = -1
    table = legend_table(codes, ["a", "b", "c", "d", "e"], category_colors(5))
    assert table["n_cells"].sum() == len(codes) and table.iloc[-1]["category"] == "(missing)"
    image = render_categories(coords, codes, category_colors(5), fit_view(coords, 100, 100))
    assert image[..., 3].max() > 0


def test_values_render_with_a_span(layout):
    coords, codes = layout
    image, span = render_values(coords, codes.astype(float), fit_view(coords, 100, 80))
    assert span == (0.0, pytest.approx(4.0))
    assert image.shape == (80, 100, 4) and (image[..., 3] > 0).sum() > 500


def test_zoomed_view_renders_only_that_region(layout):
    coords, codes = layout
    whole = fit_view(coords, 200, 200)
    zoomed = whole.zoomed((-1, 1), (-1, 1))
    assert zoomed.x_range[1] - zoomed.x_range[0] < (whole.x_range[1] - whole.x_range[0]) / 5
    image = render_categories(coords, codes, category_colors(5), zoomed)
    assert (image[..., 3] > 0).mean() > 0.3  # the dense centre of cluster 0 fills the frame


def test_png_bytes_and_bad_input(layout):
    coords, codes = layout
    image = render_categories(coords, codes, category_colors(5), fit_view(coords, 64, 48))
    picture = Image.open(io.BytesIO(png_bytes(image)))
    assert picture.size == (64, 48)
    with pytest.raises(InputError):
        render_categories(coords, codes[:10], category_colors(5), View((0, 1), (0, 1)))
    with pytest.raises(InputError):
        fit_view(np.full((5, 2), np.nan))


def test_many_categories_get_distinct_colours():
    colors = category_colors(30)
    assert len(set(colors)) == 30


def test_safe_category_colors_keep_okabe_ito_and_grey_out_the_smallest_categories():
    assert safe_category_colors([5, 3, 1]) == OKABE_ITO[:3]
    colors = safe_category_colors([1, 50, 2, 40, 30, 20, 10, 9, 8, 7])
    assert colors[1] == OKABE_ITO[0] and colors[3] == OKABE_ITO[1]  # the largest categories first
    assert colors[0] == colors[2] == colors[9] == OTHER_COLOR  # the three smallest, beyond 7 colours
    assert len(set(colors) - {OTHER_COLOR}) == len(OKABE_ITO) - 1


def test_category_shading_is_datashader_s_pixel_for_pixel(layout):
    import datashader as ds
    import datashader.transfer_functions as tf
    import pandas as pd

    coords, codes = layout
    labels, colors = ["0", "1", "2", "3", "4"], OKABE_ITO[:5]
    frame = _frame(coords, category=pd.Categorical.from_codes(codes, labels))
    aggregate = _canvas(fit_view(coords)).points(frame, "x", "y", ds.count_cat("category"))
    expected = tf.shade(aggregate, color_key=dict(zip(labels, colors)), how="eq_hist", min_alpha=140)
    assert np.array_equal(_shade_counts(aggregate, colors).data, expected.data)


def test_requested_view_keeps_square_pixels_and_bounds_the_zoom(layout):
    whole = fit_view(layout[0])
    wide = requested_view((0.0, 8.0), (1.0, 2.0), whole)  # widened in y to the image's 4:3
    assert wide.x_range == (0.0, 8.0) and np.isclose(wide.y_range[1] - wide.y_range[0], 6.0)
    assert np.isclose(sum(wide.y_range) / 2, 1.5) and (wide.width, wide.height) == (whole.width, whole.height)
    tiny = requested_view((1.0, 1.0 + 1e-12), (0.0, 1e-12), whole, max_zoom=1e3)
    assert np.isclose(tiny.x_range[1] - tiny.x_range[0], (whole.x_range[1] - whole.x_range[0]) / 1e3)
    huge = requested_view((-1e9, 1e9), (-1e9, 1e9), whole, max_widening=2)
    assert np.isclose(huge.x_range[1] - huge.x_range[0], 2 * (whole.x_range[1] - whole.x_range[0]))
    for x_range in [(0.0, float("nan")), ("a", 1), None]:
        with pytest.raises(InputError, match="reset the view"):
            requested_view(x_range, (0.0, 1.0), whole)
