"""A test set of digits made outside MNIST: handwriting-like strokes drawn with Pillow.

Each digit is a few pen strokes (smooth Catmull-Rom curves through control points,
with variants people actually write: an open or closed 4, a 7 with or without its
bar, a 1 with or without its flag). Every sample gets random jitter, slant,
rotation and width, and is then rendered the way people's own images come:

* ``pen``:    a thin pen on a big canvas (400-1200 px, strokes 1/150 to 1/60 of it),
              dark ink on white or cream paper; PNG or JPEG.
* ``photo``:  a phone photo of paper: uneven lighting, a shadow, grey paper, colour
              cast, sensor noise, blur, JPEG compression.
* ``marker``: thick strokes on a small canvas (40-120 px), either polarity; PNG, BMP, GIF.
* ``icon``:   a coloured digit on a transparent background (RGBA PNG/WebP, or LA).
* ``chalk``:  light ink on a dark board (inverted polarity), noisy; JPEG.
* ``scan``:   a 16-bit greyscale scan (TIFF or PNG), slightly rotated, paper grain.

Nothing here comes from MNIST, and the generator is seeded, so the set is the same
on every machine. `python tests/handwriting.py OUT_DIR` writes it to a folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from digit_templates import TEMPLATES, Stroke

STYLES = ("pen", "photo", "marker", "icon", "chalk", "scan")


@dataclass(frozen=True)
class Sample:
    """One generated image file's content and its true label."""

    label: int
    style: str
    image: object  # a PIL.Image
    suffix: str  # ".png", ".jpg", ...


def _catmull_rom(points: Stroke, per_segment: int = 16) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if len(p) == 2:
        return np.linspace(p[0], p[1], per_segment)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    out.append(p[-2][None])
    return np.vstack(out)


def digit_strokes(label: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The strokes of one handwritten-looking digit, as polylines in a unit-height box."""
    variants = TEMPLATES[label]
    strokes = variants[int(rng.integers(len(variants)))]
    # One random displacement per distinct control point, so strokes that meet at a
    # corner still meet after the jitter.
    jitter: dict[tuple[float, float], np.ndarray] = {}
    slant = rng.uniform(-0.35, 0.15)  # people lean digits right more often than left
    angle = math.radians(rng.uniform(-10, 10))
    width = rng.uniform(0.75, 1.1) if label != 1 else 1.0
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    out = []
    for stroke in strokes:
        pts = []
        for x, y in stroke:
            key = (round(x, 4), round(y, 4))
            if key not in jitter:
                jitter[key] = rng.normal(0, 0.03, 2)
            jx, jy = np.array([x, y]) + jitter[key]
            pts.append(((jx - 0.5) * width + slant * (0.5 - jy), jy - 0.5))
        line = _catmull_rom(pts) @ rot.T
        out.append(line)
    return out


def _render_mask(strokes: list[np.ndarray], size: tuple[int, int], box: tuple[float, float, float],
                 pen: float, ss: int):
    """Anti-aliased stroke coverage (PIL 'L' image, 255 = ink) at `size`; drawn at `ss`x and reduced."""
    from PIL import Image, ImageDraw

    w, h = size
    cx, cy, height = box
    big = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(big)
    radius = max(pen * ss / 2, 0.5)
    # A pen is a disk dragged along the path: stamp disks at most half a radius apart.
    # (Pillow's wide polylines leave notches at sharp bends.)
    for line in strokes:
        xy = np.column_stack([(cx + line[:, 0] * height) * ss, (cy + line[:, 1] * height) * ss])
        seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
        dist = np.concatenate([[0.0], np.cumsum(seg)])
        n = max(2, int(dist[-1] / max(radius * 0.5, 0.5)) + 1)
        at = np.linspace(0, dist[-1], n)
        px, py = np.interp(at, dist, xy[:, 0]), np.interp(at, dist, xy[:, 1])
        for x, y in zip(px, py):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return big.resize((w, h), Image.Resampling.BOX) if ss > 1 else big


def _render_ellipse(size: tuple[int, int], box: tuple[float, float, float], shape: tuple[float, float], ss: int):
    """A filled, anti-aliased ellipse of `shape` (fractions of the box height) at the box's centre."""
    from PIL import Image, ImageDraw

    w, h = size
    cx, cy, height = box
    rx, ry = shape[0] * height / 2, shape[1] * height / 2
    big = Image.new("L", (w * ss, h * ss), 0)
    ImageDraw.Draw(big).ellipse(((cx - rx) * ss, (cy - ry) * ss, (cx + rx) * ss, (cy + ry) * ss), fill=255)
    return big.resize((w, h), Image.Resampling.BOX) if ss > 1 else big


def _place(rng: np.random.Generator, w: int, h: int, frac: tuple[float, float]) -> tuple[float, float, float]:
    height = rng.uniform(*frac) * min(w, h)
    margin = 0.6 * height
    cx = rng.uniform(margin, w - margin) if w > 2 * margin else w / 2
    cy = rng.uniform(margin, h - margin) if h > 2 * margin else h / 2
    return cx, cy, height


def _lighting(rng: np.random.Generator, w: int, h: int, strength: float) -> np.ndarray:
    """A smooth illumination field in [1 - strength, 1]: a gradient plus a soft shadow."""
    ys, xs = np.ogrid[0:h, 0:w]
    ys, xs = ys.astype(np.float32), xs.astype(np.float32)
    gx, gy = rng.uniform(-1, 1, 2)
    grad = (gx * (xs / w - 0.5) + gy * (ys / h - 0.5)) + 0.5
    sx, sy, sr = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.3, 0.8) * max(w, h)
    shadow = np.exp(-(((xs - sx) ** 2 + (ys - sy) ** 2) / (2 * sr**2)))
    field = 0.6 * np.clip(grad, 0, 1) + 0.4 * shadow
    return (1 - strength * field).astype(np.float32)


def render(label: int, style: str, rng: np.random.Generator, strokes: list[np.ndarray] | None = None,
           filled: tuple[float, float] | None = None) -> Sample:
    """One image of `label` in `style` (strokes drawn from the templates unless given).

    `filled` = (width, height), as fractions of the digit box, draws a filled ellipse
    instead of strokes: a blob of ink (see `not_digits`).
    """
    from PIL import Image, ImageFilter

    if strokes is None and filled is None:
        strokes = digit_strokes(label, rng)

    def draw(size: tuple[int, int], box: tuple[float, float, float], pen: float, ss: int):
        return _render_mask(strokes, size, box, pen, ss) if filled is None else _render_ellipse(size, box, filled, ss)

    if style in ("pen", "photo", "chalk", "scan"):
        w, h = int(rng.integers(400, 1200)), int(rng.integers(400, 1200))
        if style == "photo":
            w, h = int(rng.integers(640, 1280)), int(rng.integers(480, 1024))
        box = _place(rng, w, h, (0.3, 0.8))
        pen = box[2] * rng.uniform(1 / 30, 1 / 11) if style != "pen" else min(w, h) * rng.uniform(1 / 150, 1 / 60)
        ink = np.asarray(draw((w, h), box, pen, ss=2), dtype=np.float32) / 255
        if style == "pen":
            paper = rng.uniform(0.9, 1.0, 3) if rng.random() < 0.5 else np.full(3, rng.uniform(0.93, 1.0))
            colour = rng.choice([(0.05, 0.05, 0.1), (0.1, 0.15, 0.5), (0.0, 0.0, 0.0), (0.3, 0.3, 0.3)])
            rgb = paper.astype(np.float32) * (1 - ink[..., None]) + np.asarray(colour, np.float32) * ink[..., None]
            img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
            return Sample(label, style, img, ".png" if rng.random() < 0.5 else ".jpg")
        if style == "photo":
            paper = rng.uniform(0.55, 0.85) * np.asarray([1.0, rng.uniform(0.92, 1.0), rng.uniform(0.8, 1.0)])
            colour = np.asarray([rng.uniform(0.05, 0.25)] * 3)
            rgb = paper.astype(np.float32) * (1 - ink[..., None]) + colour.astype(np.float32) * ink[..., None]
            rgb = rgb * _lighting(rng, w, h, rng.uniform(0.2, 0.5))[..., None]
            rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(rng.uniform(0.01, 0.04))
            img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
            return Sample(label, style, img, ".jpg")
        if style == "chalk":
            board = np.asarray([0.1, rng.uniform(0.15, 0.3), rng.uniform(0.1, 0.2)])
            chalk = np.asarray([rng.uniform(0.8, 0.95)] * 3)
            ink = ink * (0.7 + 0.3 * rng.random(ink.shape, dtype=np.float32))  # chalk is grainy
            noise = rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(0.02)
            rgb = board.astype(np.float32) * (1 - ink[..., None]) + chalk.astype(np.float32) * ink[..., None] + noise
            img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
            return Sample(label, style, img, ".jpg")
        # scan: 16-bit grey, paper grain, a slight rotation of the whole page
        grey = 0.92 - 0.85 * ink + rng.standard_normal(ink.shape, dtype=np.float32) * np.float32(0.01)
        img = Image.fromarray((np.clip(grey, 0, 1) * 65535).astype(np.uint16))
        img = img.convert("I").rotate(float(rng.uniform(-3, 3)), resample=Image.Resampling.BILINEAR, fillcolor=60000)
        img = Image.fromarray(np.asarray(img).astype(np.uint16))
        return Sample(label, style, img, ".tif" if rng.random() < 0.5 else ".png")
    # Small canvases: thick marker strokes, or an icon on a transparent background.
    w = h = int(rng.integers(40, 120)) if style == "marker" else int(rng.integers(32, 96))
    box = _place(rng, w, h, (0.6, 0.85))
    pen = box[2] * rng.uniform(0.1, 0.2)
    ink = np.asarray(draw((w, h), box, pen, ss=4), dtype=np.float32) / 255
    if style == "marker":
        light_on_dark = rng.random() < 0.4
        grey = ink if light_on_dark else 1 - ink
        img = Image.fromarray((grey * 255).astype(np.uint8), "L")
        return Sample(label, style, img, str(rng.choice([".png", ".bmp", ".gif"])))
    colour = np.asarray(rng.choice([(0.9, 0.1, 0.1), (0.1, 0.4, 0.9), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.2, 0.7, 0.2)]))
    if rng.random() < 0.25:
        la = np.stack([np.full_like(ink, colour.mean()), ink], axis=-1)
        return Sample(label, style, Image.fromarray((la * 255).astype(np.uint8), "LA"), ".png")
    rgba = np.concatenate([np.broadcast_to(colour, ink.shape + (3,)), ink[..., None]], axis=-1)
    img = Image.fromarray((rgba * 255).astype(np.uint8), "RGBA")
    return Sample(label, style, img, ".png" if rng.random() < 0.6 else ".webp")


def generate(n_per_class: int = 20, seed: int = 0, styles: tuple[str, ...] = STYLES) -> list[Sample]:
    """A balanced set: n_per_class samples of each digit, styles taken in turn."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_per_class):
        for label in range(10):
            samples.append(render(label, styles[(i + label) % len(styles)], rng))
    return samples


NOT_DIGITS = ("speck", "line", "blob")


def not_digits(n_per_kind: int = 30, seed: int = 0, styles: tuple[str, ...] = STYLES) -> list[Sample]:
    """Ink that is not a digit, rendered like the digits (label -1; `style` is "kind-style", e.g. "speck-pen").

    * ``speck``: one dot of the pen (a fleck of dust, a pen touching the paper);
    * ``line``: one straight stroke within 25 degrees of horizontal (a dash, an underline;
      steeper lines are left out, since a slanted line is how many people write a 1);
    * ``blob``: a filled ellipse (a smudge, a bullet, a thumb over the lens).

    `predict` must not call these confident digits: they are the development set for the
    "not a digit" note, next to the real digits of every other set.
    """
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_per_kind):
        for k, kind in enumerate(NOT_DIGITS):
            style = styles[(i + k) % len(styles)]
            filled = None
            if kind == "speck":
                x, y = rng.uniform(-0.3, 0.3, 2)
                strokes = [np.array([[x, y], [x, y]])]
            elif kind == "line":
                tilt = math.tan(math.radians(rng.uniform(-25, 25))) / 2
                strokes = [_catmull_rom([(-0.5, tilt), (0.5, -tilt)])]
            else:
                strokes, filled = None, (rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9))
            sample = render(-1, style, rng, strokes, filled=filled)
            samples.append(Sample(-1, f"{kind}-{style}", sample.image, sample.suffix))
    return samples


def _thin(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: a binary mask reduced to its one-pixel-wide skeleton."""
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            n = [np.roll(np.roll(p, dy, 0), dx, 1) for dy, dx in
                 ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))]
            # Neighbours P2..P9 clockwise from north: np.roll by +1 brings the pixel above.
            p2, p3, p4, p5, p6, p7, p8, p9 = n
            b = sum(n)
            seq = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            a = sum(((seq[i] == 0) & (seq[i + 1] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                c = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                c = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = (p == 1) & (b >= 2) & (b <= 6) & (a == 1) & c
            if remove.any():
                img = img & ~remove
                img = img.astype(np.uint8)
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def mnist_strokes(digit: np.ndarray) -> list[np.ndarray]:
    """A real MNIST digit (28x28 uint8) as pen strokes: its skeleton, as short segments.

    This re-draws real human handwriting with any pen on any canvas: the shapes are
    people's, the rendering (thin pen, photo, icon, ...) is the test's.
    """
    from PIL import Image

    big = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC), dtype=np.float32)
    skeleton = _thin(big > 100)
    ys, xs = np.nonzero(skeleton)
    if len(ys) == 0:
        return []
    height = max(float(ys.max() - ys.min()), 1.0)
    cy, cx = (ys.max() + ys.min()) / 2, (xs.max() + xs.min()) / 2
    on = set(zip(ys.tolist(), xs.tolist()))
    segments = []
    for y, x in on:
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            if (y + dy, x + dx) in on:
                segments.append(np.array([[(x - cx) / height, (y - cy) / height],
                                          [(x + dx - cx) / height, (y + dy - cy) / height]]))
    return segments


def from_mnist(images: np.ndarray, labels: np.ndarray, seed: int = 0,
               styles: tuple[str, ...] = STYLES) -> list[Sample]:
    """Real MNIST digits re-drawn in every style (thin pens on big canvases included)."""
    rng = np.random.default_rng(seed)
    return [render(int(label), styles[i % len(styles)], rng, mnist_strokes(img))
            for i, (img, label) in enumerate(zip(images, labels))]


def write(samples: list[Sample], folder: Path) -> dict[str, int]:
    """Save every sample as `<index>-<style>-label<d><suffix>`; returns file name -> label."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i, s in enumerate(samples):
        name = f"{i:04d}-{s.style}-label{s.label}{s.suffix}"
        kwargs = {"quality": 85} if s.suffix in (".jpg", ".webp") else {}
        s.image.save(folder / name, **kwargs)
        labels[name] = s.label
    return labels


if __name__ == "__main__":  # pragma: no cover - a helper for looking at the set
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "handwriting")
    print(f"{len(write(generate(), target))} images in {target}")
