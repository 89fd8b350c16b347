"""Test-time augmentation: average the model's probabilities over shifted copies of each digit.

`--tta` for `lenet eval` and `lenet predict`. The views are the digit and its eight shifts by one
pixel (the 3x3 neighbourhood): nine forward passes per image. On the validation split this
beat the digit alone, four shifts (+-1 px along each axis) and the four diagonal shifts (README,
"How the recipe was chosen"). Works on numpy arrays, so it serves onnxruntime and PyTorch alike
without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lenet_cli.model.metrics import softmax

CHUNK = 1024  # images per call: 9,216 views, whose activations stay within a few hundred MB
SHIFTS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """`images` (N, H, W) moved dy rows down and dx columns right; what moves in is black (0), as in MNIST."""
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def tta_logits(logits_fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Log of the mean probabilities over SHIFTS: float32 (N, 10), for uint8 `images` (N, 28, 28).

    A softmax of the result gives the averaged probabilities back, so callers treat it as logits.
    """
    out = []
    for start in range(0, images.shape[0], CHUNK):
        chunk = images[start:start + CHUNK]
        views = np.concatenate([shifted(chunk, dy, dx) for dy, dx in SHIFTS])  # one call per chunk: big batches
        probs = softmax(logits_fn(views)).reshape(len(SHIFTS), chunk.shape[0], -1).mean(0)
        out.append(np.log(np.maximum(probs, np.finfo(np.float32).tiny)))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 10), np.float32)
