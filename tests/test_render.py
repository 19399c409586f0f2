import io

import numpy as np
import pytest
from PIL import Image

from sccore import InputError
from sccore.render import (EXPRESSION_CMAP, MISSING_COLOR, OKABE_ITO, OTHER_COLOR, View, category_colors, fit_view,
                           legend_table, png_bytes, point_radius, render_categories, render_values, requested_view,
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
    assert picture.size == (64, 48) and picture.mode == "RGB"
    transparent = Image.open(io.BytesIO(png_bytes(image, background=None, compress_level=1)))
    assert transparent.mode == "RGBA" and np.array_equal(np.asarray(transparent), image)
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


def datashader_picture(coords, view, codes=None, colors=None, values=None, span=None, spread=None):
    """The picture as datashader draws it (``Canvas.points``, ``shade``, ``spread``): what sccore.render reproduces."""
    import datashader as ds
    import datashader.transfer_functions as tf
    import pandas as pd

    canvas = ds.Canvas(plot_width=view.width, plot_height=view.height, x_range=view.x_range, y_range=view.y_range)
    frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1]})
    if codes is not None:
        labels = [str(i) for i in range(len(colors) + 1)]
        frame["category"] = pd.Categorical.from_codes(np.where(codes < 0, len(colors), codes), labels)
        image = tf.shade(canvas.points(frame, "x", "y", ds.count_cat("category")),
                         color_key=dict(zip(labels, [*colors, MISSING_COLOR])), how="eq_hist", min_alpha=140)
    else:
        frame["value"] = values.astype(np.float32)
        image = tf.shade(canvas.points(frame, "x", "y", ds.max("value")), cmap=EXPRESSION_CMAP, how="linear",
                         span=list(span))
    x, y = coords[:, 0], coords[:, 1]
    in_view = (x >= view.x_range[0]) & (x <= view.x_range[1]) & (y >= view.y_range[0]) & (y <= view.y_range[1])
    radius = point_radius(int(in_view.sum())) if spread is None else spread
    if radius:
        image = tf.spread(image, px=radius, shape="circle")
    packed = np.ascontiguousarray(np.flipud(image.data))
    return packed.view(np.uint8).reshape(packed.shape + (4,))


@pytest.mark.parametrize("case", ["whole", "zoomed", "missing and edges", "spread 3", "no empty pixel",
                                  "every category in every pixel"])
def test_pictures_are_datashader_s_pixel_for_pixel(layout, case):
    coords, codes = layout
    coords, codes = coords.copy(), codes.copy()
    view, spread = fit_view(coords, 160, 120), None
    if case == "zoomed":
        view = view.zoomed((0.0, 6.0), (-1.0, 3.0))
    elif case == "missing and edges":
        codes[:300] = -1
        coords[300:310] = [view.x_range[1], view.y_range[1]]  # on the upper bounds: the last column and row
        coords[310:320] = [view.x_range[0], view.y_range[0]]
        coords[320:330] = np.nan
    elif case == "spread 3":
        spread = 3
    else:  # tiny dense pictures: datashader equalises the exact totals (and subtracts the smallest count)
        rng = np.random.default_rng(1)
        view, coords = View((0.0, 1.0), (0.0, 1.0), 6, 4), rng.uniform(0, 1, size=(5000, 2)).astype(np.float32)
        coords, codes = (coords ** 2, codes[:5000] % 2) if case == "no empty pixel" else (coords, codes[:5000] % 3 - 1)
    colors = OKABE_ITO[:int(codes.max()) + 1]
    expected = datashader_picture(coords, view, codes=codes, colors=colors, spread=spread)
    assert np.array_equal(render_categories(coords, codes, colors, view, spread=spread), expected)
    values = np.where(codes == 1, np.nan, coords[:, 0] * codes)  # NaN: not drawn
    image, span = render_values(coords, values, view, span=(0.5, 12.0), spread=spread)
    assert np.array_equal(image, datashader_picture(coords, view, values=values, span=span, spread=spread))


def test_a_view_without_cells_is_transparent_and_codes_need_colours(layout):
    coords, codes = layout
    empty = View((1e6, 1e6 + 1), (1e6, 1e6 + 1), 40, 30)
    assert render_categories(coords, codes, category_colors(5), empty)[..., 3].max() == 0
    assert render_values(coords, codes.astype(float), empty)[0][..., 3].max() == 0
    with pytest.raises(InputError, match="colours for 4 categories"):
        render_categories(coords, codes, category_colors(4), empty)


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
