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
Only numpy and Pillow are used: this path must not import torch.
"""

from __future__ import annotations

import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenet_cli.errors import ImageError, first_line

MNIST_SIZE = 28
MNIST_BOX = 20  # MNIST digits are fitted into 20x20 ...
WORK_BOX = 80  # ... we thicken strokes at 4x that size, then shrink with area averaging
TARGET_STROKE = 0.11  # MNIST stroke width / digit box size (about 2.2 px in 20)
MAX_PIXELS = 50_000_000  # refuse absurdly large images (decompression bombs)
INK_FLOOR = 0.2  # after contrast stretch, below this is paper texture or noise
MIN_CONTRAST = 0.06  # ink must differ from the background by ~15 grey levels
SUPPORTED = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Prepared:
    """A preprocessed image: uint8 (28, 28) bright ink on black, plus what was decided."""

    pixels: np.ndarray
    inverted: bool
    passthrough: bool


def load_gray(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode an image file into float32 grey levels in [0, 1] and, if it has one, an alpha map."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found.", kind="not_found")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder whose images could not be listed.", kind="unreadable")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; opened here to tell "unreadable" apart
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the file ({exc.strerror or exc}).", kind="unreadable") from exc
    with fh, warnings.catch_warnings():
        # Pillow warns about damaged metadata ("Corrupt EXIF data", "Tag data larger than file") on
        # stderr, over the one line the user gets; whether the pixels decode is what counts.
        warnings.simplefilter("ignore")
        # Pillow only warns between 1x and 2x its pixel limit; here that is an error too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if stat.S_ISREG(path.stat().st_mode) and path.stat().st_size == 0:  # a pipe reports 0 too
            raise ImageError(f"{path}: the file is empty (0 bytes).", kind="empty")
        try:
            with Image.open(fh) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise ImageError(f"{path}: image is {img.width}x{img.height}, too large "
                                     f"(limit {MAX_PIXELS:,} pixels).", kind="too_large")
                if img.width == 0 or img.height == 0:
                    raise ImageError(f"{path}: the image has no pixels ({img.width}x{img.height}).", kind="empty")
                img.seek(0)  # first frame of an animated GIF/WebP/TIFF
                img.load()
                return _to_gray(_upright(img, ImageOps))
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{path}: image is too large ({exc}).", kind="too_large") from exc
        except _UnsupportedMode as exc:
            raise ImageError(f"{path}: unsupported pixel format {exc}.", kind="not_image") from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"{path}: not an image (Pillow cannot identify its format).", kind="not_image") from exc
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
            # Truncated downloads and damaged files end up here ("image file is truncated", ...).
            detail = first_line(exc)
            raise ImageError(f"{path}: damaged or truncated image ({detail}).", kind="corrupt") from exc


def _upright(img, image_ops):
    """Apply the EXIF orientation of phone photos.

    Pillow's exif_transpose also rewrites the EXIF block and fails on a malformed tag
    (struct.error, TypeError, ...); then the orientation is applied by hand, and a
    block too damaged to read is ignored.
    """
    try:
        return image_ops.exif_transpose(img) or img
    except Exception:  # noqa: BLE001
        pass
    from PIL import Image

    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001
        return img
    t = Image.Transpose
    method = {2: t.FLIP_LEFT_RIGHT, 3: t.ROTATE_180, 4: t.FLIP_TOP_BOTTOM, 5: t.TRANSPOSE,
              6: t.ROTATE_270, 7: t.TRANSVERSE, 8: t.ROTATE_90}.get(orientation)
    return img.transpose(method) if method is not None else img


def _to_gray(img) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels in [0, 1] and the alpha map (None when fully opaque) of a decoded image."""
    mode = img.mode
    alpha = None
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max()) if arr.size else 0.0
        # Scale by the bit depth the values fit in: floats in [0, 1], 8-bit data stored in a
        # 16-bit file, 12-bit scans, full 16-bit.
        hi = next((h for h in (1.0, 255.0, 4095.0, 65535.0) if top <= h), top)
        return np.clip(arr / hi, 0, 1), None
    if mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
        img = img.convert("RGB" if mode == "RGBA" else "L")
        if float(alpha.min()) >= 0.99:
            alpha = None  # opaque: an MNIST crop saved as RGBA must still pass through
    try:
        gray = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except ValueError as exc:  # e.g. LAB, which Pillow cannot turn into grey
        raise _UnsupportedMode(mode) from exc
    return gray, alpha


class _UnsupportedMode(Exception):
    """A decoded image whose pixel format cannot be made grey."""


def _quantile(a: np.ndarray, q: float) -> float:
    """np.percentile(a, 100 * q) (linear interpolation), by partition.

    np.median and np.percentile import numpy.ma on first use: ~10 ms of a one-image
    `lenet predict`, whose whole budget is 0.6 s.
    """
    flat = np.asarray(a, dtype=np.float64).ravel()
    pos = q * (flat.size - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    part = np.partition(flat, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def _median(a: np.ndarray) -> float:
    return _quantile(a, 0.5)


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
    top = _quantile(strong, 0.95) if strong.size else 0.0
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
    """
    tiny = _small_copy(gray, 64)
    basis = _quadratic_basis(*tiny.shape)
    values = tiny.ravel().astype(np.float64)
    keep = np.ones(values.size, dtype=bool)
    coef = np.zeros(basis.shape[1])
    coef[0] = float(_median(values))
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


def to_mnist(gray: np.ndarray, alpha: np.ndarray | None = None, invert: bool | None = None,
             steps: dict[str, np.ndarray] | None = None) -> Prepared:
    """Preprocess grey levels (and alpha) into a 28x28 uint8 MNIST-style digit.

    Pass a dict as `steps` to receive each intermediate image (for figures and debugging).
    """
    from PIL import Image, ImageFilter

    steps = {} if steps is None else steps

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
    steps["ink"], steps["crop"] = ink, crop
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
    steps["strokes"] = arr
    # Fit into 20x20 keeping the aspect ratio.
    h, w = arr.shape
    s = MNIST_BOX / max(h, w)
    small = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8)).resize(
        (max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS
    )
    digit = np.asarray(small, dtype=np.float32) / 255.0
    placed = _center_of_mass_place(np.clip(digit, 0, 1))
    steps["fit"], steps["placed"] = digit, placed
    return Prepared(np.round(placed * 255).astype(np.uint8), inverted=inverted, passthrough=False)


def prepare_file(path: Path, invert: bool | None = None) -> Prepared:
    """Load and preprocess one image file."""
    gray, alpha = load_gray(path)
    try:
        return to_mnist(gray, alpha, invert)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc.message}", kind=exc.kind) from None


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, directories (their images, sorted) and glob patterns -> a list of paths.

    A name that matches nothing is kept, so it is reported as 'file not found' in its row.
    """
    import glob

    paths: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            try:
                # Hidden files (macOS "._x.png" resource forks, ".DS_Store") are not the user's images.
                paths += sorted(q for q in p.iterdir()
                                if q.is_file() and q.suffix.lower() in SUPPORTED and not q.name.startswith("."))
            except OSError:
                paths.append(p)  # reported in its row: a folder that cannot be listed
        elif p.exists() or not any(ch in item for ch in "*?["):
            paths.append(p)  # a real file named "z[1].png" is that file, not a pattern
        else:
            matches = sorted(glob.glob(str(p), recursive=True))
            paths += [Path(m) for m in matches if Path(m).is_file()]
            if not matches:
                paths.append(p)
    return paths
