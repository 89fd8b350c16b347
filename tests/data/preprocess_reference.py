"""The preprocessing as it was before it was made fast (main at 0d6cab0), kept as the reference.

tests/data/test_fast_preprocess.py holds the fast path to this one's 28x28 output, and
scripts/preprocess_timing.py times both in one run. Frozen: never change it to follow
lenet_cli/data/preprocess.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenet_cli.data.sources import MAX_PIXELS, load_gray_bytes, load_source
from lenet_cli.errors import ImageError

MNIST_SIZE = 28
MNIST_BOX = 20  # MNIST digits are fitted into 20x20 ...
WORK_BOX = 80  # ... we thicken strokes at 4x that size, then shrink with area averaging
TARGET_STROKE = 0.11  # MNIST stroke width / digit box size (about 2.2 px in 20)
INK_FLOOR = 0.2  # after contrast stretch, below this is paper texture or noise
MIN_CONTRAST = 0.06  # ink must differ from the background by ~15 grey levels


# What no digit looks like, in the 28x28 the model sees (chosen on the development sets; see
# scripts/predict_validation.py and the README for how many real digits and how much junk each flags):
BLOB_DEPTH = 4  # 3x3 erosions a patch of ink survives: a solid 9x9 block, four times MNIST's stroke
LINE_ASPECT = 0.5  # ink less than half as tall as it is wide: a dash or an underline
# ... or ink spread along one axis (its standard deviation along it over LINE_ELONGATION times that
# across) lying within LINE_TILT degrees of horizontal: a tilted dash, whose box is not flat.
LINE_ELONGATION = 4.0
LINE_TILT = 30.0
NOT_A_DIGIT = "not a digit"  # the start of every shape note, for scripts


def _tilted_line(ink: np.ndarray) -> bool:
    """Whether the ink lies along one straight axis within LINE_TILT degrees of horizontal.

    From the ink's second moments: the principal axis and the spread along and across it. A
    steep line is how many people write a 1, so only near-horizontal ones count.
    """
    ys, xs = np.nonzero(ink)
    if xs.size < 3:
        return False
    (across, along), axes = np.linalg.eigh(np.cov(np.stack([xs, ys]).astype(np.float64)))  # ascending
    if along <= 0 or across * LINE_ELONGATION**2 > along:  # variances: the ratio of spreads, squared
        return False
    vx, vy = axes[:, 1]  # the principal axis
    return bool(np.degrees(np.arctan2(abs(vy), abs(vx))) < LINE_TILT)


def shape_notes(pixels: np.ndarray) -> list[str]:
    """Notes for ink that does not look like a digit, from the uint8 (28, 28) image the model sees.

    A speck or a blob is fitted into 20x20 like a digit, and then is a solid disc; a dash
    becomes a flat bar. The model still names a digit for them, often with 99% confidence,
    because it has never seen anything but digits: these notes say what it cannot.
    """
    ink = pixels > 127  # (28, 28) bool
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return [f"{NOT_A_DIGIT}: faint ink"]
    notes = []
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if height < LINE_ASPECT * width or _tilted_line(ink):
        notes.append(f"{NOT_A_DIGIT}: a flat line")
    solid = ink
    for _ in range(BLOB_DEPTH):
        padded = np.pad(solid, 1)
        solid = np.logical_and.reduce([padded[1 + dy : 29 + dy, 1 + dx : 29 + dx]
                                       for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    if solid.any():
        notes.append(f"{NOT_A_DIGIT}: a solid blob")
    return notes


@dataclass(frozen=True)
class Prepared:
    """A preprocessed image: uint8 (28, 28) bright ink on black, plus what was decided."""

    pixels: np.ndarray
    inverted: bool
    passthrough: bool


def _median(a: np.ndarray) -> float:
    return float(np.median(np.asarray(a, dtype=np.float64)))  # float64: the same levels on every platform


def _border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def is_mnist_like(gray: np.ndarray) -> bool:
    """28x28, dark background border, some bright ink: already in MNIST form."""
    return gray.shape == (MNIST_SIZE, MNIST_SIZE) and float(_median(_border(gray))) < 0.1 and gray.max() > 0.5


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
    residual, lighting_range = _residual_from_lighting(gray)
    inverted = _dark_ink(residual, gray) if invert is None else invert
    ink = 1.0 - gray if inverted else gray
    if lighting_range > MIN_CONTRAST:
        ink = ink - _background_map(ink)  # uneven lighting: follow it
    else:
        ink = ink - float(_median(_border(ink)))  # even lighting: one level, no risk to bold strokes
    # The ink's own brightness, measured only where there is clear contrast: a thin stroke may
    # cover under 1% of a large canvas, so a percentile over all pixels would measure the paper.
    strong = ink[ink > MIN_CONTRAST]
    top = float(np.quantile(strong.astype(np.float64), 0.95)) if strong.size else 0.0
    if top <= MIN_CONTRAST:
        return np.zeros_like(ink), inverted
    ink = np.clip(ink / top, 0.0, 1.0)
    ink[ink < INK_FLOOR] = 0.0
    return ink.astype(np.float32), inverted


def _small_copy(a: np.ndarray, side: int) -> np.ndarray:
    """An area-averaged copy whose long side is at most `side` pixels."""
    from PIL import Image

    h, w = a.shape
    if max(h, w) <= side:
        return a
    scale = side / max(h, w)
    img = Image.fromarray(a.astype(np.float32), mode="F")
    small = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def _quadratic_basis(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    x = (xs.ravel() / max(w - 1, 1)) - 0.5
    y = (ys.ravel() / max(h - 1, 1)) - 0.5
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)


def _residual_from_lighting(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """Grey levels minus a smooth lighting field, on a 256-pixel copy; and the field's range.

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
    """
    tiny = _small_copy(gray, 64)
    basis = _quadratic_basis(*tiny.shape)
    values = tiny.ravel().astype(np.float64)
    edge = _border(tiny)  # (2h + 2w,) grey levels: mostly paper, even when the ink touches the edge
    coef = np.zeros(basis.shape[1])
    coef[0] = float(_median(edge))
    spread = 1.4826 * float(_median(np.abs(edge - coef[0]))) + 1e-3
    keep = np.abs(values - coef[0]) < max(3 * spread, 0.1)
    for _ in range(4):
        if keep.sum() < basis.shape[1] * 4:
            break
        coef, *_ = np.linalg.lstsq(basis[keep], values[keep], rcond=None)
        res = values - basis @ coef
        sigma = 1.4826 * float(_median(np.abs(res[keep] - _median(res[keep])))) + 1e-3
        keep = np.abs(res) < max(3 * sigma, 0.02)
    small = _small_copy(gray, 256)
    fit = (_quadratic_basis(*small.shape) @ coef).reshape(small.shape)
    return (small - fit).astype(np.float32), float(fit.max() - fit.min())


def _dark_ink(residual: np.ndarray, gray: np.ndarray) -> bool:
    """True for dark ink on light paper: the strong departures from the lighting are darker.

    Comparing the *mass* of strong departures on each side decides it: the ink is the
    part of the picture that stands out, whatever the paper's absolute brightness (a
    photo of white paper is often mid-grey). With no clear departure either way, the
    border decides: a light border means light paper.
    """
    sigma = 1.4826 * float(_median(np.abs(residual - _median(residual))))
    t = max(MIN_CONTRAST, 5 * sigma)
    dark = float(-residual[residual < -t].sum())
    bright = float(residual[residual > t].sum())
    if dark == bright:
        return float(_median(_border(gray))) > 0.5
    return dark > bright


def _background_map(ink: np.ndarray) -> np.ndarray:
    """The slowly varying background level (uneven lighting, shadows) under bright ink.

    A grey opening (min filter, then max filter) removes anything thinner than the
    filter, i.e. the strokes, and keeps the illumination. It runs on a 64-pixel copy:
    lighting is low-frequency, and rank filters cost O(size^2) per pixel.
    """
    from PIL import Image, ImageFilter

    h, w = ink.shape
    if min(h, w) < 16:
        return np.full_like(ink, float(_median(_border(ink))))
    scale = 64 / max(h, w)
    small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray((np.clip(ink, 0, 1) * 255).astype(np.uint8)).resize(small_size, Image.Resampling.BOX)
    opened = small.filter(ImageFilter.MinFilter(15)).filter(ImageFilter.MaxFilter(15))
    smooth = opened.filter(ImageFilter.GaussianBlur(4)).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(smooth, dtype=np.float32) / 255.0


def _stroke_width(mask: np.ndarray) -> float:
    # Width ~ area / (perimeter / 2) for a long thin stroke; perimeter counts boundary pixels.
    area = float(mask.sum())
    if area == 0:
        return 0.0
    padded = np.pad(mask, 1)
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


def _center_of_mass_place(digit: np.ndarray) -> np.ndarray:
    """Paste a (h<=20, w<=20) digit into 28x28 so its centre of mass is at the centre."""
    h, w = digit.shape
    total = float(digit.sum())
    ys, xs = np.mgrid[0:h, 0:w]
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
        padded = np.pad(arr, size)
        work = Image.fromarray((padded * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(size))
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
