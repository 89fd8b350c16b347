"""How `lenet predict`'s preprocessing was validated: accuracy tables and the README figure.

    python docs/predict_validation.py                  # drawn digits only
    LENET_TEST_MNIST_DIR=path/to/mnist python docs/predict_validation.py   # + real handwriting

For each test set it prints the bundled model's top-1 accuracy with lenet's
preprocessing and with a typical tutorial's (resize to 28x28, invert), per style,
and writes docs/preprocessing.png: what the model sees from each kind of image.
Uses the bundled ONNX model through onnxruntime, like `lenet predict`.
"""

from __future__ import annotations

import gzip
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import handwriting  # noqa: E402

from lenet_cli.backends import OnnxBackend  # noqa: E402
from lenet_cli.images import _to_gray, to_mnist  # noqa: E402
from lenet_cli.weights import bundled_onnx_path  # noqa: E402


def tutorial(img) -> np.ndarray:
    """What LeNet tutorials do with a user's image: grey, resize to 28x28, invert."""
    from PIL import Image

    return 255 - np.asarray(img.convert("L").resize((28, 28), Image.Resampling.BILINEAR))


def lenet(img) -> np.ndarray:
    gray, alpha = _to_gray(img)
    return to_mnist(gray, alpha).pixels


def evaluate(name: str, samples, model) -> None:
    ours = model.logits(np.stack([lenet(s.image) for s in samples])).argmax(1)
    naive = model.logits(np.stack([tutorial(s.image) for s in samples])).argmax(1)
    labels = np.array([s.label for s in samples])
    by_style = defaultdict(list)
    for s, a, b in zip(samples, ours, naive):
        by_style[s.style].append((a == s.label, b == s.label))
    print(f"\n{name}: {len(samples)} images")
    print(f"{'style':8} {'n':>4} {'lenet':>8} {'tutorial':>9}")
    for style, hits in by_style.items():
        a, b = np.mean([h[0] for h in hits]), np.mean([h[1] for h in hits])
        print(f"{style:8} {len(hits):4d} {100 * a:7.1f}% {100 * b:8.1f}%")
    print(f"{'all':8} {len(samples):4d} {100 * (ours == labels).mean():7.1f}% {100 * (naive == labels).mean():8.1f}%")


def figure(samples, model, out: Path) -> None:
    """One column per image: the image as given, the tutorial's 28x28, lenet's 28x28."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(samples), figsize=(1.6 * len(samples), 5.2))
    for j, s in enumerate(samples):
        if s.image.mode.startswith("I"):  # 16-bit: scale to 8 bits for display
            from PIL import Image

            shown = Image.fromarray((np.asarray(s.image, dtype=np.float64) / 257).astype(np.uint8)).convert("RGBA")
        else:
            shown = s.image.convert("RGBA")
        if s.image.mode in ("RGBA", "LA"):  # show transparency as a checkerboard
            from PIL import Image

            checker = ((np.indices(shown.size[::-1]) // 6).sum(0) % 2 * 40 + 200).astype(np.uint8)
            base = Image.fromarray(np.stack([checker] * 3 + [np.full_like(checker, 255)], -1), "RGBA")
            shown = Image.alpha_composite(base, shown)
        naive, ours = tutorial(s.image), lenet(s.image)
        p_naive, p_ours = model.logits(np.stack([naive, ours])).argmax(1)
        axes[0, j].imshow(shown)
        axes[0, j].set_title(f"{s.style}\n{s.image.size[0]}x{s.image.size[1]}", fontsize=8)
        for row, (px, p) in enumerate(((naive, p_naive), (ours, p_ours)), start=1):
            axes[row, j].imshow(px, cmap="gray", vmin=0, vmax=255)
            ok = "green" if p == s.label else "red"
            axes[row, j].set_title(f"-> {p}", fontsize=9, color=ok)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("your image", fontsize=9)
    axes[1, 0].set_ylabel("tutorial:\nresize + invert", fontsize=9)
    axes[2, 0].set_ylabel("lenet predict", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"\nwrote {out}")


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    return np.frombuffer(raw, np.uint8, offset=16 if raw[3] == 3 else 8)


def main() -> None:
    model = OnnxBackend(bundled_onnx_path(), "cpu")
    drawn = handwriting.generate(n_per_class=30, seed=0)
    evaluate("Drawn digits (tests/handwriting.py, seed 0)", drawn, model)
    mnist_dir = os.environ.get("LENET_TEST_MNIST_DIR")
    if mnist_dir:
        images = read_idx(Path(mnist_dir) / "t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28)
        targets = read_idx(Path(mnist_dir) / "t10k-labels-idx1-ubyte.gz")
        pick = np.random.default_rng(1).choice(len(images), 600, replace=False)
        evaluate("Real handwriting (600 MNIST test digits) re-drawn", handwriting.from_mnist(images[pick], targets[pick], seed=1), model)
    rng = np.random.default_rng(3)
    shown = [handwriting.render(label, style, rng) for label, style in
             ((2, "pen"), (7, "photo"), (4, "marker"), (5, "icon"), (3, "chalk"), (9, "scan"), (6, "pen"), (0, "marker"))]
    figure(shown, model, ROOT / "docs" / "preprocessing.png")


if __name__ == "__main__":
    main()
