"""Real-image inputs for timing the predict path: what users send, made from real digits.

Each maker takes a digit's ink, float (h, w) in [0, 1] (1 = ink; an MNIST digit / 255 will do),
and returns encoded file bytes:

* `mnist_png`: a 28x28 MNIST-style PNG, bright on black (passes through preprocessing unchanged);
* `canvas_png`: `lenet serve`'s page, 280x280, a white pen on opaque black, saved as RGBA PNG;
* `paper_photo_jpeg`: a photo of dark ink on light paper (200x200 by default), uneven light, sensor noise;
* `drawing_png`: a large drawing, black on white (a 1050x800 paint-program export, about 1 MP);
* `phone_jpeg`: a 12-megapixel phone photo of a digit on paper.

Only numpy and Pillow: `lenet bench` and scripts/preprocess_timing.py use them without torch.
"""

from __future__ import annotations

import io

import numpy as np

CANVAS_SIDE = 280  # the serve page's pad
PHOTO_SIDE = 200
DRAWING_SIZE = (1050, 800)  # (width, height): about 1 MP
PHONE_SIZE = (4000, 3000)  # 12 MP


def _scaled(ink: np.ndarray, box: int) -> np.ndarray:
    """The ink resized so its long side is `box` pixels, bicubic, float32 in [0, 1]."""
    from PIL import Image

    h, w = ink.shape
    s = box / max(h, w)
    img = Image.fromarray(np.asarray(ink, np.float32), mode="F")
    big = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(big, np.float32), 0.0, 1.0)


def _placed(ink: np.ndarray, size: tuple[int, int], box: int) -> np.ndarray:
    """The ink scaled to `box` and centred on a (height, width) = `size` reversed field of zeros."""
    width, height = size
    digit = _scaled(ink, box)
    out = np.zeros((height, width), np.float32)
    top, left = (height - digit.shape[0]) // 2, (width - digit.shape[1]) // 2
    out[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return out


def _encode(pixels: np.ndarray, fmt: str, **params) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **params)
    return buf.getvalue()


def _stroke(ink: np.ndarray) -> np.ndarray:
    """A pen's hard-edged stroke, anti-aliased: the ink thresholded at half, then one pixel of blur."""
    from PIL import Image, ImageFilter

    hard = Image.fromarray(((ink > 0.5) * 255).astype(np.uint8))
    return np.asarray(hard.filter(ImageFilter.GaussianBlur(1.0)), np.float32) / 255.0


def mnist_png(ink: np.ndarray) -> bytes:
    """An MNIST-style file: the 28x28 digit, bright on black, as a greyscale PNG."""
    digit = ink if ink.shape == (28, 28) else _placed(ink, (28, 28), 20)
    return _encode(np.round(np.clip(digit, 0.0, 1.0) * 255).astype(np.uint8), "PNG")


def canvas_png(ink: np.ndarray) -> bytes:
    """The serve page's 280x280 canvas: a white pen on opaque black, as its toBlob sends it (RGBA PNG)."""
    stroke = _stroke(_placed(ink, (CANVAS_SIDE, CANVAS_SIDE), 200))
    grey = np.round(stroke * 255).astype(np.uint8)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    return _encode(rgba, "PNG")


def _paper(ink: np.ndarray, size: tuple[int, int], box: int, seed: int) -> np.ndarray:
    """Dark ink on light paper under uneven light, with sensor noise: uint8 (h, w, 3) RGB."""
    rng = np.random.default_rng(seed)
    field = _placed(ink, size, box)
    h, w = field.shape
    ys, xs = np.ogrid[0:h, 0:w]
    light = 0.88 - 0.18 * (xs / w) - 0.08 * (ys / h)  # a window on one side
    grey = light * (1.0 - 0.8 * field) + rng.normal(0.0, 0.02, field.shape)
    tint = np.array([1.0, 0.97, 0.9], np.float32)  # warm indoor light
    return np.round(np.clip(grey[:, :, None] * tint, 0.0, 1.0) * 255).astype(np.uint8)


def paper_photo_jpeg(ink: np.ndarray, side: int = PHOTO_SIDE, seed: int = 0) -> bytes:
    """A photo of dark ink on light paper, `side` x `side`, JPEG quality 90."""
    return _encode(_paper(ink, (side, side), round(side * 0.7), seed), "JPEG", quality=90)


def drawing_png(ink: np.ndarray, size: tuple[int, int] = DRAWING_SIZE) -> bytes:
    """A large drawing exported from a paint program: black on white, greyscale PNG."""
    stroke = _placed(ink, size, round(min(size) * 0.7))
    return _encode(np.round((1.0 - stroke) * 255).astype(np.uint8), "PNG")


def phone_jpeg(ink: np.ndarray, size: tuple[int, int] = PHONE_SIZE, seed: int = 0) -> bytes:
    """A phone photo of a digit on paper, 12 MP by default, JPEG quality 90."""
    return _encode(_paper(ink, size, round(min(size) * 0.5), seed), "JPEG", quality=90)


def font_digits(n: int, seed: int = 0) -> list[np.ndarray]:
    """n digits drawn with Pillow's font, float (28, 28) ink: for machines without MNIST at hand."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=22)
    digits = []
    for label in rng.integers(0, 10, n):
        img = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(img).text((7, 1), str(int(label)), fill=255, font=font, stroke_width=1, stroke_fill=255)
        digits.append(np.asarray(img, np.float32) / 255.0)
    return digits


def write_predict_mix(folder, digits: list[np.ndarray], n_mnist: int = 2000, n_photos: int = 500) -> list:
    """The folder-predict mix: `n_mnist` MNIST-style PNGs in folder/mnist, `n_photos` 200x200 JPEG
    photos of dark ink on light paper in folder/photos, cycling through `digits`. The two folders."""
    from pathlib import Path

    folders = [Path(folder) / "mnist", Path(folder) / "photos"]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    for i in range(n_mnist):
        (folders[0] / f"{i:05d}.png").write_bytes(mnist_png(digits[i % len(digits)]))
    for i in range(n_photos):
        (folders[1] / f"{i:05d}.jpg").write_bytes(paper_photo_jpeg(digits[i % len(digits)], seed=i))
    return folders
