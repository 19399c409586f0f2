import io

import numpy as np
import pytest
from PIL import Image

from sccore import InputError
from sccore.render import (OKABE_ITO, OTHER_COLOR, View, category_colors, fit_view, legend_table, png_bytes,
                           render_categories, render_values, safe_category_colors)


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
