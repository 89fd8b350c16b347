"""Write the real digits `lenet export` checks its ONNX files on: lenet_cli/assets/mnist-test-digits.npz.

    python scripts/make_parity_digits.py --data-dir path/to/mnist [--per-class 30]

The first N digits of each class in MNIST's test split, in test-set order (so the file is the
same on every machine), saved as uint8 `images` (N*10, 28, 28) and `labels` (N*10,) with
numpy's compressed npz (no pickle). `lenet export --onnx` compares onnxruntime with PyTorch on
them, so the export works with no MNIST on the machine; they are never used to train or to choose.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lenet_cli.data.digits import PARITY_DIGITS
from lenet_cli.data.mnist import load_split


def main() -> None:
    """Select the digits from the test split and write the asset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the folder with the four MNIST files")
    parser.add_argument("--per-class", type=int, default=30, help="digits of each class (default 30: 300 in all)")
    parser.add_argument("--output", type=Path, default=PARITY_DIGITS, help="where to write (default: the asset)")
    args = parser.parse_args()
    test = load_split(args.data_dir, "test", allow_download=False)
    images, labels = test.images.numpy(), test.labels.numpy()
    # Interleave the classes (0, 1, ..., 9, 0, 1, ...) so any prefix holds every class.
    per_class = [np.flatnonzero(labels == c)[: args.per_class] for c in range(10)]
    order = np.stack(per_class, axis=1).reshape(-1)
    np.savez_compressed(args.output, images=images[order], labels=labels[order])
    print(f"Wrote {args.output}: {len(order)} digits, {args.output.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
