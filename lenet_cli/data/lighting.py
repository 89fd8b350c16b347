"""The lighting of a photo or scan: a smooth field through the paper, the polarity of the ink, the background.

Split from preprocess.py, and written for speed: these steps ran at 16 ms per 200x200 photo
(cProfile: an SVD least-squares fit four times per image, the quadratic basis rebuilt each
time, rank filters of 225 pixels per pixel). Now the fit solves 6x6 normal equations on a
cached basis, the field is evaluated separably, and the min/max filters are separable numpy
passes that give Pillow's MinFilter/MaxFilter output exactly. Only numpy and Pillow: no torch.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from lenet_cli.data.order_stats import median

MIN_CONTRAST = 0.06  # ink must differ from the background by ~15 grey levels
FIT_SIDE = 64  # lighting is smooth: the surface is fitted on a copy this size ...
RESIDUAL_SIDE = 256  # ... and the departures from it taken at this size, where a thin stroke still shows
BACKGROUND_SIDE = 64  # the background map's working size (rank filters cost size^2 per pixel)
BACKGROUND_FILTER = 15  # wider than any stroke at BACKGROUND_SIDE: the opening keeps only the lighting
ROBUST_ROUNDS = 4
# A flat background (a canvas, a drawing program's export), for which the robust fit is skipped: a
# border this even (under about one grey level of spread), most of the picture at its level, and at
# most FLAT_BETWEEN of it neither at that level nor clearly ink. A shadow or a spotlight is made of
# such in-between values (28-36% of the picture in the tests); a canvas's anti-aliased edges are 1-3%.
FLAT_SPREAD = 0.005
FLAT_BAND = 0.02
FLAT_INK = 0.25
FLAT_BETWEEN = 0.05
MAX_CONDITION = 1e10  # the 6x6 system's condition (1-norm) past which only lstsq's minimum-norm answer is safe
SAMPLE_PIXELS = 8192  # pixels a share or a noise scale is measured on
ROBUST_SAMPLE = 1024  # kept pixels the robust fit's spread is measured on, each round


def border(a: np.ndarray) -> np.ndarray:
    """The outermost rows and columns, one after the other (corners counted twice)."""
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def small_copy(a: np.ndarray, side: int) -> np.ndarray:
    """An area-averaged float32 copy whose long side is at most `side` pixels."""
    from PIL import Image

    h, w = a.shape
    if max(h, w) <= side:
        return a
    scale = side / max(h, w)
    img = Image.fromarray(a.astype(np.float32, copy=False), mode="F")
    small = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _axes(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """x (w,) and y (h,) in [-0.5, 0.5]: the quadratic surface's coordinates."""
    x = np.arange(w) / max(w - 1, 1) - 0.5
    y = np.arange(h) / max(h - 1, 1) - 0.5
    return x, y


@functools.lru_cache(maxsize=32)
def _basis(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(h*w, 6) float64: 1, x, y, x^2, xy, y^2 per pixel, row-major; and (h*w, 36) their products.

    Cached, as images share sizes. With the products, the normal equations over any subset of
    pixels are one matrix-vector product (mask @ products) instead of a copy of the subset.
    """
    x, y = _axes(h, w)
    xs, ys = np.tile(x, h), np.repeat(y, w)
    basis = np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=1)
    products = (basis[:, :, None] * basis[:, None, :]).reshape(-1, 36)
    basis.flags.writeable = products.flags.writeable = False
    return basis, products


@functools.lru_cache(maxsize=32)
def _basis_t(h: int, w: int) -> np.ndarray:
    """_basis(h, w)'s basis transposed to (6, h*w), contiguous: the fit's values in half the time."""
    out = np.ascontiguousarray(_basis(h, w)[0].T)
    out.flags.writeable = False
    return out


def _surface(coef: np.ndarray, h: int, w: int) -> np.ndarray:
    """The fitted surface at (h, w) as float32, evaluated separably (no (h*w, 6) basis at that size).

    Per row it is a + b*x + c*x^2 with a, b from y: one product and two sums per pixel.
    """
    x, y = _axes(h, w)
    c0, c1, c2, c3, c4, c5 = (float(c) for c in coef)
    rows = (c0 + c2 * y + c5 * y * y).astype(np.float32)[:, None]  # (h, 1)
    slope = (c1 + c4 * y).astype(np.float32)[:, None]  # (h, 1)
    fit = slope * x.astype(np.float32)[None, :]  # (h, w)
    fit += rows
    fit += (c3 * x * x).astype(np.float32)[None, :]
    return fit


def _least_squares(basis: np.ndarray, products: np.ndarray, values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The least-squares coefficients over the kept pixels, from the 6x6 normal equations.

    np.linalg.inv first (a fifth of lstsq's cost, and the fit runs up to four times per photo); a
    singular or ill-conditioned system (kept pixels along one row, or on one conic, where a solve
    returns arbitrary coefficients without failing) takes lstsq's minimum-norm answer, which is the
    tall system's (pinv(B'B) B' = pinv(B)), as for a one-row image whose y and y^2 are constant.
    """
    mask = keep.astype(np.float64)
    normal = (mask @ products).reshape(6, 6)
    rhs = (mask * values) @ basis
    try:
        inverse = np.linalg.inv(normal)
        if np.abs(normal).sum(axis=0).max() * np.abs(inverse).sum(axis=0).max() < MAX_CONDITION:
            return inverse @ rhs
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(normal, rhs, rcond=None)[0]


def _sample(a: np.ndarray, n: int) -> np.ndarray:
    """About `n` of the pixels of `a`, every k-th, k sharing no factor with the width: each column is visited."""
    flat = np.ravel(a)
    step, width = max(1, flat.size // n), a.shape[-1]
    while math.gcd(step, width) != 1:
        step += 1
    return flat[::step]


def _is_flat(small: np.ndarray, level: float) -> bool:
    """Almost no pixel between the background's level and clear ink (see FLAT_BETWEEN)."""
    away = np.abs(_sample(small, SAMPLE_PIXELS) - np.float32(level))
    return np.count_nonzero((away > FLAT_BAND) & (away < FLAT_INK)) <= FLAT_BETWEEN * away.size


def residual_from_lighting(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """Grey levels minus a smooth lighting field, on a 256-pixel copy (the image itself up to 384); and the
    field's range. Both only decide (the polarity, and whether the background map runs): no pixel
    of the 28x28 output is computed from them.

    The field is a quadratic surface fitted robustly (pixels far from the fit, i.e.
    ink of either polarity, are dropped and the fit repeated), so it follows a gradient
    or a broad shadow across a photo of paper without knowing yet whether the ink is
    dark or bright. Lighting is smooth, so the fit runs on a 64-pixel copy (cheap); the
    residual is taken at 256 pixels, where a thin stroke is still visible.

    The first fit uses only the pixels close to the border's level, which is the paper's
    (people leave a margin). Starting from all pixels let the ink drag the surface where
    it covers much of the image (a small scan of thick strokes): the "lighting" then
    followed the strokes, the background map kept their middles, and they came out
    hollow, a thick 1 read as a 0.

    A flat background (an even border, most of the picture at its level, almost nothing between
    that level and clear ink) skips the fit.
    """
    # One pass over the full image: the fit's copy is made from the residual's (a 12 MP photo or a
    # 1 MP drawing paid for two full-size resizes). Up to 1.5x RESIDUAL_SIDE the image is used as it is:
    # resizing a 280x280 canvas to 256 cost more than the steps it saved.
    small = gray if max(gray.shape) <= RESIDUAL_SIDE * 3 // 2 else small_copy(gray, RESIDUAL_SIDE)
    tiny = small_copy(small, FIT_SIDE)
    basis, products = _basis(*tiny.shape)
    values = tiny.ravel().astype(np.float64)
    edge = border(tiny)  # (2h + 2w,) grey levels: mostly paper, even when the ink touches the edge
    coef = np.zeros(basis.shape[1])
    coef[0] = median(edge)
    spread = 1.4826 * median(np.abs(edge - coef[0])) + 1e-3
    near = np.abs(values - coef[0])
    if spread < FLAT_SPREAD and 2 * np.count_nonzero(near < FLAT_BAND) >= values.size and _is_flat(small, coef[0]):
        return small - np.float32(coef[0]), 0.0
    keep = near < max(3 * spread, 0.1)
    for _ in range(ROBUST_ROUNDS):
        if np.count_nonzero(keep) < basis.shape[1] * 4:
            break
        coef = _least_squares(basis, products, values, keep)
        res = values - coef @ _basis_t(*tiny.shape)  # basis @ coef
        # The spread of the kept residuals from about a thousand of them: two selections over all
        # ~3,000 cost 0.1 ms a round, most of the fit's time.
        kept = res[keep]
        kept = kept[:: max(1, kept.size // ROBUST_SAMPLE) | 1]  # odd: not every other column
        sigma = 1.4826 * median(np.abs(kept - median(kept))) + 1e-3
        again = np.abs(res) < max(3 * sigma, 0.02)
        # A fixed point: the same pixels give the same coefficients (the same arithmetic on the
        # same inputs), so the remaining rounds would repeat this one exactly. A clean canvas
        # or scan usually gets there after one or two rounds.
        if np.array_equal(again, keep):
            break
        keep = again
    fit = _surface(coef, *small.shape)
    range_ = float(fit.max() - fit.min())
    np.subtract(small, fit, out=fit)
    return fit, range_


def dark_ink(residual: np.ndarray, gray: np.ndarray) -> bool:
    """True for dark ink on light paper: the strong departures from the lighting are darker.

    Comparing the *mass* of strong departures on each side decides it: the ink is the
    part of the picture that stands out, whatever the paper's absolute brightness (a
    photo of white paper is often mid-grey). With no clear departure either way, the
    border decides: a light border means light paper.
    """
    # The noise scale from a sample: a spread needs thousands of pixels, not the 65,536 of a
    # 256x256 residual (two selections over it cost 0.2 ms).
    sample = _sample(residual, SAMPLE_PIXELS)
    sigma = 1.4826 * median(np.abs(sample - np.float32(median(sample))))
    t = max(MIN_CONTRAST, 5 * sigma)
    dark = float(-residual[residual < -t].sum())
    bright = float(residual[residual > t].sum())
    if dark == bright:
        return median(border(gray)) > 0.5
    return dark > bright


def rank_filter(a: np.ndarray, size: int, biggest: bool) -> np.ndarray:
    """Pillow's MaxFilter(size) (`biggest`) or MinFilter(size) of a uint8 image, exactly, in O(log size) per pixel.

    A min or max over a square is one over rows then columns; Pillow pads by repeating the
    edge pixels, which is separable too.
    """
    op = np.maximum if biggest else np.minimum
    padded = pad_edge(a, size // 2)
    rows = _window(padded, size, op)  # (h + size - 1, w): across each row's window
    return np.ascontiguousarray(_window(rows.T, size, op).T)  # (h, w): then down each column's


def pad_zeros(a: np.ndarray, pad: int) -> np.ndarray:
    """np.pad(a, pad) of a 2-D array (zeros around), without np.pad's per-call cost (about 15 us)."""
    h, w = a.shape
    out = np.zeros((h + 2 * pad, w + 2 * pad), dtype=a.dtype)
    out[pad : pad + h, pad : pad + w] = a
    return out


def pad_edge(a: np.ndarray, pad: int) -> np.ndarray:
    """np.pad(a, pad, mode="edge") of a 2-D array: the edge rows, then the edge columns (corners
    included) repeated outwards."""
    h, w = a.shape
    out = np.empty((h + 2 * pad, w + 2 * pad), dtype=a.dtype)
    out[pad : pad + h, pad : pad + w] = a
    out[:pad, pad : pad + w] = a[0]
    out[pad + h :, pad : pad + w] = a[-1]
    out[:, :pad] = out[:, pad : pad + 1]
    out[:, pad + w :] = out[:, pad + w - 1 : pad + w]
    return out


def _window(a: np.ndarray, size: int, op) -> np.ndarray:
    """`op` (np.maximum or np.minimum) over each run of `size` along the rows of `a`: (h, w - size + 1).

    By doubling: runs of 1, 2, 4, 8 from pairs of the shorter ones, then two overlapping runs of
    the largest cover `size` (4 calls for 15, where one call per offset took 14). Overlap is
    harmless: a max or min of the same pixels twice is the same pixel.
    """
    span, run = 1, a
    while span * 2 <= size:
        run = op(run[:, :-span], run[:, span:])  # runs of 2 * span
        span *= 2
    return op(run[:, : run.shape[1] - (size - span)], run[:, size - span :])


def background_map(ink: np.ndarray) -> np.ndarray:
    """The slowly varying background level (uneven lighting, shadows) under bright ink.

    A grey opening (min filter, then max filter) removes anything thinner than the
    filter, i.e. the strokes, and keeps the illumination. It runs on a 64-pixel copy:
    lighting is low-frequency.
    """
    from PIL import Image, ImageFilter

    h, w = ink.shape
    if min(h, w) < 16:
        return np.full_like(ink, median(border(ink)))
    scale = BACKGROUND_SIDE / max(h, w)
    small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    levels = np.clip(ink, 0, 1)
    levels *= 255  # in place: the same product as np.clip(...) * 255, one array fewer
    small = Image.fromarray(levels.astype(np.uint8)).resize(small_size, Image.Resampling.BOX)
    opened = rank_filter(rank_filter(np.asarray(small), BACKGROUND_FILTER, False), BACKGROUND_FILTER, True)
    smooth = Image.fromarray(opened).filter(ImageFilter.GaussianBlur(4)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(smooth, dtype=np.float32) / 255.0
