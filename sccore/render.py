"""Datashader rendering of 2-D layouts (UMAP and others) into RGBA image arrays.

Images are plain ``uint8`` arrays (height x width x 4), so the dashboard, the CLI and the reports
can all show or save them. Millions of cells render in a fraction of a second.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import colorcet
import datashader as ds
import datashader.transfer_functions as tf
import numpy as np
import pandas as pd

from .errors import InputError

# Okabe & Ito's colour-blind-safe palette, then Glasbey's for more categories.
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
EXPRESSION_CMAP = colorcet.palette["bmy"][::-1]  # perceptually uniform, light (low) to dark (high)
MISSING_COLOR = "#BBBBBB"
OTHER_COLOR = "#8C8C8C"  # categories beyond the colour-blind-safe palette


@dataclass(frozen=True)
class View:
    """The region of a layout to draw and the image size in pixels."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    width: int = 800
    height: int = 600

    def zoomed(self, x_range, y_range) -> "View":
        """The same image size over another region (widened to keep the aspect ratio square)."""
        return fit_view(np.array([[x_range[0], y_range[0]], [x_range[1], y_range[1]]]), self.width, self.height,
                        padding=0.0)


def fit_view(coords: np.ndarray, width: int = 800, height: int = 600, padding: float = 0.04) -> View:
    """A view showing every cell of ``coords``, with equal scale on both axes."""
    coords = np.asarray(coords)
    with np.errstate(invalid="ignore"):
        low, high = np.nanmin(coords, axis=0).astype(np.float64), np.nanmax(coords, axis=0).astype(np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise InputError("The layout has no finite coordinates to draw; recompute it.")
    centre, span = (low + high) / 2, np.maximum(high - low, 1e-9) * (1 + 2 * padding)
    per_pixel = max(span[0] / width, span[1] / height)
    half = np.array([width, height]) * per_pixel / 2
    return View((centre[0] - half[0], centre[0] + half[0]), (centre[1] - half[1], centre[1] + half[1]), width, height)


def requested_view(x_range, y_range, whole: View, max_zoom: float = 1e5, max_widening: float = 20.0) -> View:
    """The view a user asked for (e.g. by zooming or panning in the browser) at ``whole``'s image size, widened to
    square pixels about its centre and kept between ``1 / max_zoom`` and ``max_widening`` times ``whole``'s width.
    Ranges that are not two finite numbers each raise :class:`InputError`."""
    try:
        corners = np.array([[x_range[0], y_range[0]], [x_range[1], y_range[1]]], dtype=np.float64)
    except (TypeError, ValueError, IndexError, KeyError) as error:
        raise InputError("A view needs two finite numbers for x and two for y; reset the view.") from error
    if corners.shape != (2, 2) or not np.all(np.isfinite(corners)):
        raise InputError("A view needs two finite numbers for x and two for y; reset the view.")
    view = fit_view(corners, whole.width, whole.height, padding=0.0)
    width, whole_width = view.x_range[1] - view.x_range[0], whole.x_range[1] - whole.x_range[0]
    scale = np.clip(width, whole_width / max_zoom, whole_width * max_widening) / width
    if scale == 1:
        return view
    centre = np.array([sum(view.x_range) / 2, sum(view.y_range) / 2])
    half = np.array([view.x_range[1] - view.x_range[0], view.y_range[1] - view.y_range[0]]) * scale / 2
    return View((centre[0] - half[0], centre[0] + half[0]), (centre[1] - half[1], centre[1] + half[1]),
                whole.width, whole.height)


def category_colors(n_categories: int) -> list[str]:
    """``n_categories`` distinct colours: Okabe-Ito up to 8, Glasbey (light colours removed) beyond."""
    if n_categories <= len(OKABE_ITO):
        return OKABE_ITO[:n_categories]
    palette = colorcet.glasbey_dark
    return [palette[i % len(palette)] for i in range(n_categories)]


def safe_category_colors(sizes) -> list[str]:
    """Colour-blind-safe colours for categories of ``sizes`` cells: Okabe-Ito up to 8 categories; beyond, the 7
    largest keep Okabe-Ito colours and the rest are grey (no palette of more colours stays colour-blind safe)."""
    sizes = np.asarray(sizes)
    if len(sizes) <= len(OKABE_ITO):
        return OKABE_ITO[:len(sizes)]
    colors = [OTHER_COLOR] * len(sizes)
    for color, category in zip(OKABE_ITO, np.argsort(-sizes, kind="stable")[:len(OKABE_ITO) - 1]):
        colors[category] = color
    return colors


def _frame(coords: np.ndarray, **columns) -> pd.DataFrame:
    coords = np.asarray(coords)
    return pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], **columns}, copy=False)


def _canvas(view: View) -> ds.Canvas:
    return ds.Canvas(plot_width=view.width, plot_height=view.height, x_range=view.x_range, y_range=view.y_range)


def point_radius(n_visible: int) -> int:
    """Pixels each cell is spread by, so few cells stay visible and many stay sharp."""
    return 3 if n_visible < 5_000 else 2 if n_visible < 50_000 else 1 if n_visible < 500_000 else 0


def _n_visible(coords: np.ndarray, view: View) -> int:
    x, y = coords[:, 0], coords[:, 1]
    return int(np.count_nonzero((x >= view.x_range[0]) & (x <= view.x_range[1]) &
                                (y >= view.y_range[0]) & (y <= view.y_range[1])))


def _to_rgba(image, spread: int | None, coords: np.ndarray, view: View) -> np.ndarray:
    radius = point_radius(_n_visible(coords, view)) if spread is None else spread
    if radius:
        image = tf.spread(image, px=radius, shape="circle")
    packed = np.ascontiguousarray(np.flipud(image.data))
    return packed.view(np.uint8).reshape(packed.shape + (4,))


def render_categories(coords: np.ndarray, codes: np.ndarray, colors: list[str], view: View,
                      spread: int | None = None) -> np.ndarray:
    """Draw cells coloured by category; ``codes[i]`` indexes ``colors`` (``-1`` = missing, grey).

    Pixels holding several categories blend their colours by count; opacity grows with density.
    ``spread`` is the point radius in pixels (default: :func:`point_radius` of the cells in view).
    """
    codes = np.asarray(codes)
    if len(codes) != len(coords):
        raise InputError("There must be one category code per cell.")
    n = len(colors)
    palette = list(colors) + [MISSING_COLOR]
    codes = np.where(codes < 0, n, codes).astype(np.int32)
    labels = [str(i) for i in range(n + 1)]
    frame = _frame(coords, category=pd.Categorical.from_codes(codes, labels))
    aggregate = _canvas(view).points(frame, "x", "y", ds.count_cat("category"))
    return _to_rgba(_shade_counts(aggregate, palette), spread, coords, view)


def _shade_counts(aggregate, palette: list[str]) -> tf.Image:
    """``tf.shade(aggregate, color_key, how="eq_hist", min_alpha=140)`` of per-category counts, pixel for pixel, with
    the colours mixed on the occupied pixels only (datashader mixes every pixel of every category: 5-10x slower)."""
    from datashader.colors import rgb
    from datashader.transfer_functions import _interpolate_alpha

    counts = aggregate.data
    if counts.min() != 0:  # no empty pixel: datashader's baseline subtraction applies
        return tf.shade(aggregate, color_key=dict(zip(aggregate.indexes[aggregate.dims[-1]], palette)),
                        how="eq_hist", min_alpha=140)
    colors = np.array([rgb(color) for color in palette], dtype=np.float32)  # categories x (r, g, b)
    total = counts.sum(axis=2, dtype=counts.dtype)
    rgba = np.empty(total.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = (colors.sum(axis=0) / len(colors)).astype(np.uint8)  # datashader's colour of empty pixels
    occupied = np.nonzero(total)
    mixed = counts[occupied].astype(np.float32) @ colors / total[occupied][:, None].astype(np.float32)
    rgba[occupied[0], occupied[1], :3] = mixed.astype(np.uint8)
    rgba[..., 3] = _interpolate_alpha(counts, total, np.zeros(total.shape, dtype=bool), "eq_hist", 255, None, 140,
                                      False)
    return tf.Image(rgba.view(np.uint32).reshape(total.shape), dims=aggregate.dims[:-1],
                    coords={aggregate.dims[1]: aggregate.coords[aggregate.dims[1]],
                            aggregate.dims[0]: aggregate.coords[aggregate.dims[0]]})


def render_values(coords: np.ndarray, values: np.ndarray, view: View, span: tuple[float, float] | None = None,
                  cmap=EXPRESSION_CMAP, spread: int | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Draw cells coloured by a number per cell (e.g. a gene's expression), the highest where cells overlap.

    Returns the image and the value range of the colour scale (``span``, or the 0-99.5th percentile).
    """
    values = np.asarray(values, dtype=np.float32)
    if len(values) != len(coords):
        raise InputError("There must be one value per cell.")
    finite = values[np.isfinite(values)]
    if span is None:
        span = (float(min(finite.min(), 0)) if finite.size else 0.0,
                float(np.percentile(finite, 99.5)) if finite.size else 1.0)
    if span[1] <= span[0]:
        span = (span[0], span[0] + 1.0)
    frame = _frame(coords, value=values)
    aggregate = _canvas(view).points(frame, "x", "y", ds.max("value"))
    image = tf.shade(aggregate, cmap=cmap, how="linear", span=list(span))
    return _to_rgba(image, spread, coords, view), span


def png_bytes(image: np.ndarray, background: str | None = "white", compress_level: int = 6) -> bytes:
    """Encode an RGBA image as PNG, composited on ``background`` (None keeps transparency); ``compress_level`` 1
    encodes about twice as fast for a slightly larger file (for pictures sent while the user waits)."""
    from PIL import Image

    picture = Image.fromarray(image, mode="RGBA")
    if background is not None:
        canvas = Image.new("RGBA", picture.size, background)
        canvas.alpha_composite(picture)
        picture = canvas.convert("RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def legend_table(codes: np.ndarray, categories: list[str], colors: list[str]) -> pd.DataFrame:
    """One row per category: its colour and number of cells (missing values last, when any)."""
    codes = np.asarray(codes)
    counts = np.bincount(codes[codes >= 0], minlength=len(categories))
    table = pd.DataFrame({"category": list(map(str, categories)), "color": colors, "n_cells": counts})
    n_missing = int((codes < 0).sum())
    if n_missing:
        table.loc[len(table)] = ["(missing)", MISSING_COLOR, n_missing]
    return table
