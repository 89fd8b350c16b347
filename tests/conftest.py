"""Shared fixtures: a tiny synthetic MNIST in IDX format, made in a temporary directory.

The digits are rendered with Pillow's built-in font at random positions, sizes and
stroke widths, so a model can really learn them, yet the whole set is small and
every test that trains runs in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REAL_MNIST_ENV = "LENET_TEST_MNIST_DIR"
# The suite runs the device-generic layers (what CUDA runs) on the CPU too; kernels.py's CPU-only
# speed paths are the explicit exception, held to the plain layers in test_kernels.py. Set at
# import, so session fixtures and subprocesses (which inherit the environment) get it as well.
os.environ["LENET_CPU_KERNELS"] = "0"


def render_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic 28x28 digits (bright on black) and their labels."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    fonts = {s: ImageFont.load_default(size=s) for s in (16, 18, 20, 22)}
    for i, label in enumerate(labels):
        img = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(img)
        size = int(rng.choice(list(fonts)))
        x, y = rng.integers(4, 10), rng.integers(0, 5)
        draw.text((int(x), int(y)), str(label), fill=int(rng.integers(180, 256)), font=fonts[size],
                  stroke_width=int(rng.integers(0, 2)), stroke_fill=255)
        images[i] = np.asarray(img)
    return images, labels


def write_mnist(folder: Path, n_train: int = 600, n_test: int = 200, compress: bool = False) -> Path:
    """Write the four IDX files (uncompressed by default: no official checksum applies)."""
    import torch

    from lenet_cli.data.mnist import MNIST_FILES, write_idx

    folder.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = render_digits(n_train, 1)
    te_x, te_y = render_digits(n_test, 2)
    arrays = {"train-images": tr_x, "train-labels": tr_y, "test-images": te_x, "test-labels": te_y}
    for key, arr in arrays.items():
        name = MNIST_FILES[key][0]
        if not compress:
            name = name[: -len(".gz")]
        write_idx(folder / name, torch.from_numpy(arr), compress=compress)
    return folder


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """A session-wide tiny synthetic MNIST folder."""
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """No test reads the user's data dir or writes into the repo; no colours in output."""
    monkeypatch.setenv("LENET_DATA_DIR", str(tmp_path / "no-data-here"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """The real MNIST folder from $LENET_TEST_MNIST_DIR; skip when absent."""
    path = os.environ.get(REAL_MNIST_ENV)
    if not path or not Path(path).is_dir():
        pytest.skip(f"set {REAL_MNIST_ENV} to a folder with the real MNIST files to run this test")
    return Path(path)


@pytest.fixture(scope="session")
def trained_weights(tiny_mnist, tmp_path_factory) -> Path:
    """A small model trained on the synthetic set through the real training code."""
    import torch

    from lenet_cli.data.mnist import load_split, train_val_split
    from lenet_cli.training.config import TrainConfig
    from lenet_cli.training.run_dir import save_run
    from lenet_cli.training.loop import train

    cfg = TrainConfig(epochs=2, batch_size=64, val_size=100)
    full = load_split(tiny_mnist, "train", allow_download=False)
    tr, va = train_val_split(full, cfg.val_size)
    result = train(cfg, tr, va, torch.device("cpu"))
    out = tmp_path_factory.mktemp("run")
    return save_run(result, cfg, out)["best"]
