"""The plain loop `lenet predict` on a folder is measured against: what a LeNet tutorial does.

    python scripts/plain_predict_loop.py --make /tmp/mix          # 2,000 MNIST PNGs + 500 photos
    python scripts/plain_predict_loop.py /tmp/mix/mnist /tmp/mix/photos

Per file: PIL open, grey, resize to 28x28, invert; one onnxruntime session (the bundled model)
classifies them in batches of 256; one JSON line per file. No preprocessing worth the name and
one core: the speed floor of reading images at all, and a fair "same work, plain code" baseline
for `lenet predict DIR ... --output rows.jsonl`. --make writes the mix both are timed on, from
MNIST test digits ($LENET_TEST_MNIST_DIR) or, without MNIST, Pillow's font.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np

def make(folder: Path) -> None:
    """Write the folder-predict mix (bench/images.py's write_predict_mix)."""
    from lenet_cli.bench import images

    mnist = os.environ.get("LENET_TEST_MNIST_DIR")
    path = Path(mnist) / "t10k-images-idx3-ubyte.gz" if mnist else None
    if path is not None and path.is_file():
        raw = np.frombuffer(gzip.open(path).read(), np.uint8, offset=16).reshape(-1, 28, 28)
        digits = [d / np.float32(255) for d in raw[:2000]]
    else:
        digits = images.font_digits(200)
    for f in images.write_predict_mix(folder, digits):
        print(f)


def run(folders: list[Path], out) -> int:
    """Classify every image of `folders`, a JSON line each (lenet_cli/bench/predict_path.py's plain_loop,
    which `lenet bench` times too); the number of files."""
    from lenet_cli.bench.predict_path import plain_loop
    from lenet_cli.model.weights import bundled_onnx_path

    files = sorted(p for f in folders for p in f.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return plain_loop(files, bundled_onnx_path(), out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--make", type=Path, help="write the 2,000 + 500 file mix into this folder and stop")
    parser.add_argument("--output", type=Path, default=Path(os.devnull), help="the JSON lines (default: none)")
    args = parser.parse_args()
    if args.make:
        make(args.make)
        return
    start = time.perf_counter()
    with open(args.output, "w") as out:
        n = run(args.folders, out)
    seconds = time.perf_counter() - start
    print(f"{n} files in {seconds:.2f} s: {n / seconds:,.0f} files/s", file=sys.stderr)


if __name__ == "__main__":
    main()
