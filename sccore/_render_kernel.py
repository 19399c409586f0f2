"""The compiled part of :mod:`sccore.render`: cells binned into the pixels of a view (counts per category, or the
highest value), and datashader's ``spread`` of an image with its ``over`` operator, loop for loop as datashader 0.19
computes them, so the pictures are the same pixel for pixel. Datashader builds its own functions in every process
(seconds of numba compilation before a new server's first picture); these compile once and are cached under
``NUMBA_CACHE_DIR``."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def count_categories(xs, ys, codes, n_categories, bounds, scales, width, height):  # pragma: no cover - compiled
    """Cells per pixel and category (height x width x ``n_categories``, uint32): cell ``i`` at ``(xs[i], ys[i])``
    counts in category ``codes[i]`` of its pixel when inside ``bounds`` (xmin, xmax, ymin, ymax, inclusive); pixel
    column ``int(x * sx + tx)`` and row ``int(y * sy + ty)`` for ``scales`` (sx, tx, sy, ty), the last column and row
    holding the cells on the upper bounds (datashader's ``Canvas.points`` with ``count_cat``)."""
    counts = np.zeros((height, width, n_categories), dtype=np.uint32)
    xmin, xmax, ymin, ymax = bounds
    sx, tx, sy, ty = scales
    for i in range(xs.shape[0]):
        x, y = xs[i], ys[i]
        if xmin <= x <= xmax and ymin <= y <= ymax:
            column, row = int(x * sx + tx), int(y * sy + ty)
            counts[height - 1 if row >= height else row, width - 1 if column >= width else column, codes[i]] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def max_values(xs, ys, values, bounds, scales, width, height):  # pragma: no cover - compiled
    """The highest of ``values`` per pixel (height x width, float64; NaN where none), the cells binned as in
    :func:`count_categories` and NaN values skipped (datashader's ``Canvas.points`` with ``max``)."""
    highest = np.full((height, width), np.nan)
    xmin, xmax, ymin, ymax = bounds
    sx, tx, sy, ty = scales
    for i in range(xs.shape[0]):
        x, y, value = xs[i], ys[i], values[i]
        if xmin <= x <= xmax and ymin <= y <= ymax:
            column, row = int(x * sx + tx), int(y * sy + ty)
            row, column = height - 1 if row >= height else row, width - 1 if column >= width else column
            if not np.isnan(value) and (np.isnan(highest[row, column]) or highest[row, column] < value):
                highest[row, column] = value
    return highest


@numba.njit(cache=True, nogil=True)
def _scaled(pixel):  # pragma: no cover - compiled
    return (np.float64((pixel & 255) / 255), np.float64(((pixel >> 8) & 255) / 255),
            np.float64(((pixel >> 16) & 255) / 255), np.float64(((pixel >> 24) & 255) / 255))


@numba.njit(cache=True, nogil=True)
def _over(source, target):  # pragma: no cover - compiled
    """``source`` composited over ``target`` (RGBA packed in uint32; datashader's ``composite.over``)."""
    sr, sg, sb, sa = _scaled(source)
    dr, dg, db, da = _scaled(target)
    factor = 1 - sa
    a = sa + da * factor
    if a == 0:
        return np.uint32(0)
    r = (sr * sa + dr * da * factor) / a
    g = (sg * sa + dg * da * factor) / a
    b = (sb * sa + db * da * factor) / a
    r2, g2 = min(255, np.uint32(r * 255)), min(255, np.uint32(g * 255))
    b2, a2 = min(255, np.uint32(b * 255)), min(255, np.uint32(a * 255))
    return np.uint32((a2 << 24) | (b2 << 16) | (g2 << 8) | r2)


@numba.njit(cache=True, nogil=True)
def spread_over(image, mask):  # pragma: no cover - compiled
    """Each non-transparent pixel of ``image`` (uint32 RGBA) drawn at every offset where the square ``mask`` (odd
    side) is true, over what is there, pixels in row order (datashader's ``tf.spread`` of an image)."""
    height, width = image.shape
    side = mask.shape[0]
    extra = side // 2
    out = np.zeros((height + 2 * extra, width + 2 * extra), dtype=np.uint32)
    for y in range(height):
        for x in range(width):
            pixel = image[y, x]
            if (pixel >> 24) & 255:
                for i in range(side):
                    for j in range(side):
                        if mask[i, j]:
                            below = out[i + y, j + x]
                            out[i + y, j + x] = pixel if below == 0 else _over(pixel, below)
    return out[extra:extra + height, extra:extra + width].copy()
