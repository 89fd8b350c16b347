"""Turn any image of a digit into the form MNIST digits were made in.

MNIST digits are bright anti-aliased ink on black, the digit fitted into a 20x20
box keeping its aspect ratio, then centred by centre of mass in a 28x28 frame.
Photos, scans and drawings are none of that, so predicting on a plain resize is
wrong most of the time. The steps, in order:

1. decode (EXIF orientation honoured; 16-bit scaled; transparency handled: for an
   icon on a transparent background the opacity *is* the ink);
2. polarity: fit the lighting (a smooth surface through the paper, robust to the
   ink), then see which way the strong departures from it go: darker ink on light
   paper is inverted (``invert`` forces either way);
3. background and contrast: subtract the background (one level, or the lighting
   field under a gradient or shadow), stretch so the ink reaches full brightness,
   drop faint noise;
4. crop to the ink's bounding box;
5. thicken thin strokes (a thin pen on a big canvas) to MNIST's stroke-to-size ratio;
6. fit into 20x20 keeping the aspect ratio, area-averaged (anti-aliased);
7. centre by centre of mass in 28x28.

Images that already look like MNIST (28x28, black background) pass through unchanged.
Only numpy and Pillow are used: this path must not import torch. Decoding and listing
files are in sources.py; the lighting fit in lighting.py; the shape notes in shape_notes.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenet_cli.data.lighting import (
    MIN_CONTRAST,
    background_map,
    border,
    dark_ink,
    pad_zeros,
    rank_filter,
    residual_from_lighting,
)
from lenet_cli.data.order_stats import median, quantile
from lenet_cli.data.shape_notes import NOT_A_DIGIT, shape_notes
from lenet_cli.data.sources import MAX_PIXELS, load_gray_bytes, load_source
from lenet_cli.errors import ImageError

__all__ = ["NOT_A_DIGIT", "Prepared", "ink_map", "is_mnist_like", "prepare_bytes", "prepare_file", "shape_notes",
           "to_mnist"]

MNIST_SIZE = 28
MNIST_BOX = 20  # MNIST digits are fitted into 20x20 ...
WORK_BOX = 80  # ... we thicken strokes at 4x that size, then shrink with area averaging
TARGET_STROKE = 0.11  # MNIST stroke width / digit box size (about 2.2 px in 20)
INK_FLOOR = 0.2  # after contrast stretch, below this is paper texture or noise


@dataclass(frozen=True)
class Prepared:
    """A preprocessed image: uint8 (28, 28) bright ink on black, plus what was decided."""

    pixels: np.ndarray
    inverted: bool
    passthrough: bool


def is_mnist_like(gray: np.ndarray) -> bool:
    """28x28, dark background border, some bright ink: already in MNIST form."""
    return gray.shape == (MNIST_SIZE, MNIST_SIZE) and median(border(gray)) < 0.1 and gray.max() > 0.5


def ink_map(gray: np.ndarray, alpha: np.ndarray | None, invert: bool | None) -> tuple[np.ndarray, bool]:
    """Ink intensity in [0, 1] (1 = full ink) and whether the image was inverted."""
    if alpha is not None and float(alpha.min()) < 0.99:
        solid = alpha > 0.5
        opaque = float(solid.mean())
        one_colour = solid.any() and float(gray[solid].std()) < 0.08
        if (opaque < 0.6 or one_colour) and invert is None:
            # An icon: the digit is what is opaque, whatever its colour (a bold, tightly
            # cropped digit can cover most of its canvas, but it is still one colour).
            return alpha.astype(np.float32), False
        # A picture with some transparency: composite over a backdrop that contrasts with
        # what is opaque (white ink over white would vanish), then treat as usual.
        backdrop = 0.0 if solid.any() and float(gray[solid].mean()) > 0.5 else 1.0
        gray = gray * alpha + backdrop * (1.0 - alpha)
    residual, lighting_range = residual_from_lighting(gray)
    inverted = dark_ink(residual, gray) if invert is None else invert
    ink = 1.0 - gray if inverted else gray
    if lighting_range > MIN_CONTRAST:
        ink = ink - background_map(ink)  # uneven lighting: follow it
    else:
        ink = ink - median(border(ink))  # even lighting: one level, no risk to bold strokes
    # The ink's own brightness, measured only where there is clear contrast: a thin stroke may
    # cover under 1% of a large canvas, so a percentile over all pixels would measure the paper.
    strong = ink[ink > MIN_CONTRAST]
    top = quantile(strong, 0.95) if strong.size else 0.0
    if top <= MIN_CONTRAST:
        return np.zeros_like(ink), inverted
    # In place, on the array the subtraction above made: as np.clip(ink / top, 0, 1). np.clip with
    # out= is one pass (np.minimum then np.maximum took 2.5 times as long on float32, numpy 2.4), and
    # zeroing by a multiply with the kept mask is 4 times as fast as boolean assignment (same values).
    np.divide(ink, top, out=ink)
    np.clip(ink, 0.0, 1.0, out=ink)
    np.multiply(ink, ink >= INK_FLOOR, out=ink)
    return ink.astype(np.float32, copy=False), inverted


def _stroke_width(mask: np.ndarray) -> float:
    # Width ~ area / (perimeter / 2) for a long thin stroke; perimeter counts boundary pixels.
    area = float(mask.sum())
    if area == 0:
        return 0.0
    padded = pad_zeros(mask, 1)
    interior = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    perimeter = float(area - interior.sum())
    return 2.0 * area / max(perimeter, 1.0)


def _mass_span(profile: np.ndarray, trim: float = 0.002) -> tuple[int, int]:
    """First and last index of a projection after trimming `trim` of the ink mass at each end.

    Plain "first/last non-zero" lets one speck of dust far from the digit shrink the
    digit to a dot; a speck carries almost no mass, a stroke's tip carries some.
    """
    cum = np.cumsum(profile, dtype=np.float64)
    total = cum[-1]
    first = int(np.searchsorted(cum, total * trim, side="right"))
    last = int(np.searchsorted(cum, total * (1 - trim), side="left"))
    return first, max(first, min(last, len(profile) - 1))


@functools.lru_cache(maxsize=512)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """np.mgrid[0:h, 0:w] as float64, cached (h and w are at most MNIST_BOX). Float64, as the int64
    grid times float32 ink gives: the same products, without a new grid per image."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def _center_of_mass_place(digit: np.ndarray) -> np.ndarray:
    """Paste a (h<=20, w<=20) digit into 28x28 so its centre of mass is at the centre."""
    h, w = digit.shape
    total = float(digit.sum())
    ys, xs = _grid(h, w)
    cy = float((ys * digit).sum() / total) if total else h / 2
    cx = float((xs * digit).sum() / total) if total else w / 2
    top = int(round(MNIST_SIZE / 2 - cy - 0.5))
    left = int(round(MNIST_SIZE / 2 - cx - 0.5))
    top = min(max(top, 0), MNIST_SIZE - h)
    left = min(max(left, 0), MNIST_SIZE - w)
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    out[top : top + h, left : left + w] = digit
    return out


def to_mnist(gray: np.ndarray, alpha: np.ndarray | None = None, invert: bool | None = None) -> Prepared:
    """Preprocess grey levels (and alpha) into a 28x28 uint8 MNIST-style digit."""
    from PIL import Image, ImageFilter

    if alpha is None and invert is None and is_mnist_like(gray):
        return Prepared(np.round(gray * 255).astype(np.uint8), inverted=False, passthrough=True)
    ink, inverted = ink_map(gray, alpha, invert)
    if not np.any(ink > 0):
        if invert is not None:
            flag = "--invert" if invert else "--no-invert"
            raise ImageError(f"no ink found with the polarity forced by {flag}; try without it.", kind="no_ink")
        raise ImageError("no ink found: the image is blank or has no contrast.", kind="no_ink")
    top, bottom = _mass_span(ink.sum(axis=1))
    left, right = _mass_span(ink.sum(axis=0))
    crop = ink[top : bottom + 1, left : right + 1]
    if crop.size == 0 or not np.any(crop > 0):
        raise ImageError("no ink found: the image is blank or has no contrast.", kind="no_ink")
    h, w = crop.shape
    # Bring the digit to the working size (long side WORK_BOX), area-averaged.
    scale = WORK_BOX / max(h, w)
    wh = (max(1, round(w * scale)), max(1, round(h * scale)))
    work = Image.fromarray((crop * 255).astype(np.uint8)).resize(wh, Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR)
    arr = np.asarray(work, dtype=np.float32) / 255.0
    if arr.max() > 0:
        arr = arr / arr.max()  # thin strokes fade when shrunk; restore full ink
    # Thicken strokes that are thinner than MNIST's at this size (odd MaxFilter sizes only).
    width = _stroke_width(arr > 0.35)
    target = TARGET_STROKE * WORK_BOX
    if 0 < width < 0.75 * target:
        size = min(int(round(target - width)) | 1, 15)
        # Pad first: a thin "1" may be a single pixel wide, and dilation cannot grow past the edge.
        padded = pad_zeros(arr, size)
        work = Image.fromarray(rank_filter((padded * 255).astype(np.uint8), size, biggest=True))
        work = work.filter(ImageFilter.GaussianBlur(1.0))
        arr = np.asarray(work, dtype=np.float32) / 255.0
        rows = np.flatnonzero(arr.max(axis=1) > 0.05)
        cols = np.flatnonzero(arr.max(axis=0) > 0.05)
        arr = arr[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # Fit into 20x20 keeping the aspect ratio.
    h, w = arr.shape
    s = MNIST_BOX / max(h, w)
    small = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).resize(
        (max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS
    )
    digit = np.asarray(small, dtype=np.float32) / 255.0
    placed = _center_of_mass_place(np.clip(digit, 0, 1))
    return Prepared(np.round(placed * 255).astype(np.uint8), inverted=inverted, passthrough=False)


def prepare_file(path: Path | str, invert: bool | None = None) -> Prepared:
    """Load and preprocess one image: a file, an http(s) URL or "-" (stdin)."""
    gray, alpha = load_source(path)
    try:
        return to_mnist(gray, alpha, invert)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc.message}", kind=exc.kind) from None


def prepare_bytes(data: bytes, invert: bool | None = None, where: str = "upload",
                  max_pixels: int = MAX_PIXELS) -> Prepared:
    """Decode and preprocess an image held in memory (`lenet serve`'s uploads), as `prepare_file` does a file."""
    gray, alpha = load_gray_bytes(data, where, max_pixels)
    try:
        return to_mnist(gray, alpha, invert)
    except ImageError as exc:
        raise ImageError(f"{where}: {exc.message}", kind=exc.kind) from None
