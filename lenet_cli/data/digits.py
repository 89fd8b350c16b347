"""The real digits shipped in the package: what `lenet export` checks an ONNX file on without MNIST.

300 digits of MNIST's test split (30 of each class, classes interleaved), made by
`scripts/make_parity_digits.py`. Numpy only: no torch, no download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lenet_cli.errors import DataError

PARITY_DIGITS = Path(__file__).resolve().parent.parent / "assets" / "mnist-test-digits.npz"


def load_parity_digits(path: Path = PARITY_DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """The shipped digits: uint8 images (N, 28, 28) and their labels (N,)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = data["images"], data["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"The package's parity digits ({path}) cannot be read: {exc}.",
                        "Reinstall lenet-cli (pip install --force-reinstall lenet-cli).") from exc
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or len(labels) != len(images):
        raise DataError(f"The package's parity digits ({path}) are not 28x28 uint8 digits with labels.",
                        "Reinstall lenet-cli (pip install --force-reinstall lenet-cli).")
    return images, labels
