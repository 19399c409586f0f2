"""The compiled part of :mod:`sccore.render`: the pixel of each cell in a view and the highest value per pixel, and
datashader's ``spread`` of an image with its ``over`` operator, loop for loop as datashader 0.19 computes them, so the
pictures are the same pixel for pixel. Datashader builds its own functions in every process
(seconds of numba compilation before a new server's first picture); these compile once and are cached under
``NUMBA_CACHE_DIR``."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def pixels_of_cells(xs, ys, bounds, scales, width, height):  # pragma: no cover - compiled
    """The pixel of each cell (``row * width + column``, rows from the lowest y up), -1 for cells outside ``bounds``
    (xmin, xmax, ymin, ymax, inclusive): column ``int(x * sx + tx)`` and row ``int(y * sy + ty)`` for ``scales``
    (sx, tx, sy, ty), the last column and row holding the cells on the upper bounds (datashader's ``Canvas.points``)."""
    pixels = np.full(xs.shape[0], -1, dtype=np.int64)
    xmin, xmax, ymin, ymax = bounds
    sx, tx, sy, ty = scales
    for i in range(xs.shape[0]):
        x, y = xs[i], ys[i]
        if xmin <= x <= xmax and ymin <= y <= ymax:
            column, row = int(x * sx + tx), int(y * sy + ty)
            pixels[i] = (height - 1 if row >= height else row) * width + (width - 1 if column >= width else column)
    return pixels


@numba.njit(cache=True, nogil=True)
def max_values(pixels, values, n_pixels):  # pragma: no cover - compiled
    """The highest of ``values`` per pixel (float64; NaN where none) of cells in ``pixels`` (:func:`pixels_of_cells`;
    -1: none), NaN values skipped (datashader's ``max``)."""
    highest = np.full(n_pixels, np.nan)
    for i in range(pixels.shape[0]):
        pixel, value = pixels[i], values[i]
        if pixel >= 0 and not np.isnan(value) and (np.isnan(highest[pixel]) or highest[pixel] < value):
            highest[pixel] = value
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
