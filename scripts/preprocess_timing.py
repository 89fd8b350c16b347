"""Preprocessing time per image kind, on one core: the reference (before) and today's (after), one run.

    LENET_TEST_MNIST_DIR=path/to/mnist python scripts/preprocess_timing.py
    python scripts/preprocess_timing.py --repeats 200 --cpu 0

The inputs are made from real handwriting (MNIST test digits where $LENET_TEST_MNIST_DIR holds
MNIST, else Pillow's font) and a real phone photo of drawn-dev (12 MP, where found) by
lenet_cli/bench/images.py: the serve page's 280x280 canvas PNG, 200x200 JPEG photos of dark ink
on light paper, a 1 MP drawing, a 12-megapixel JPEG. For each kind and each implementation it
prints the median and fastest ms per image, for preprocessing alone and with the decode; then
each implementation's peak memory (the whole process, in a fresh one) for the 12 MP JPEG.
The reference is tests/data/preprocess_reference.py with a full-size decode: the code before it
was made fast. The two alternate image by image, so a busy spell of the machine hits both.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: no BLAS threads
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "data"))

import preprocess_reference as reference  # noqa: E402

from lenet_cli.bench import images  # noqa: E402
from lenet_cli.data import preprocess as fast  # noqa: E402
from lenet_cli.data.sources import DECODE_MIN_SIDE, load_gray_bytes  # noqa: E402
from lenet_cli.utils.memory import reuse_freed_memory  # noqa: E402

DRAWN_DEV = Path(os.environ.get("LENET_DRAWN_DEV_DIR", ROOT.parent / "shared" / "realworld" / "drawn-dev"))
PHONE_SOURCE = "7/Sourav-02121996_Recognition-using-Deep-Networks_7.JPEG"  # a real phone photo, 2300x2405


def real_digits(n: int) -> list[np.ndarray]:
    """n MNIST test digits as float ink, or Pillow-font digits without MNIST."""
    folder = os.environ.get("LENET_TEST_MNIST_DIR")
    path = Path(folder) / "t10k-images-idx3-ubyte.gz" if folder else None
    if path is None or not path.is_file():
        return images.font_digits(n)
    raw = np.frombuffer(gzip.open(path).read(), np.uint8, offset=16).reshape(-1, 28, 28)
    return [d / np.float32(255) for d in raw[:n]]


def phone_photo() -> bytes:
    """drawn-dev's phone photo scaled to 12 MP, else a synthetic one from an MNIST digit."""
    from PIL import Image
    import io

    source = DRAWN_DEV / PHONE_SOURCE
    if not source.is_file():
        return images.phone_jpeg(real_digits(1)[0])
    big = Image.open(source).convert("RGB").resize(images.PHONE_SIZE, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def kinds(n: int) -> dict[str, list[bytes]]:
    """The encoded inputs, per kind."""
    digits = real_digits(n)
    return {"canvas 280x280 PNG": [images.canvas_png(d) for d in digits],
            "photo 200x200 JPEG": [images.paper_photo_jpeg(d, seed=i) for i, d in enumerate(digits)],
            "drawing 1050x800 PNG": [images.drawing_png(d) for d in digits[: max(1, n // 8)]],
            "phone 12 MP JPEG": [phone_photo()]}


IMPLS = {"before": (reference.to_mnist, None), "after": (fast.to_mnist, DECODE_MIN_SIDE)}


def time_kind(files: list[bytes], repeats: int) -> dict[str, dict[str, float]]:
    """ms per image for each implementation: preprocessing alone and decode + preprocessing."""
    decoded = {name: [load_gray_bytes(f, min_side=side) for f in files] for name, (_, side) in IMPLS.items()}
    alone: dict[str, list[float]] = {name: [] for name in IMPLS}
    whole: dict[str, list[float]] = {name: [] for name in IMPLS}
    for r in range(repeats):
        i = r % len(files)
        for name, (to_mnist, side) in IMPLS.items():
            t0 = time.perf_counter()
            to_mnist(*decoded[name][i])
            t1 = time.perf_counter()
            to_mnist(*load_gray_bytes(files[i], min_side=side))
            t2 = time.perf_counter()
            alone[name].append((t1 - t0) * 1e3)
            whole[name].append((t2 - t1) * 1e3)
    return {name: {"preprocess_ms": float(np.median(alone[name])), "preprocess_ms_min": min(alone[name]),
                   "with_decode_ms": float(np.median(whole[name])), "with_decode_ms_min": min(whole[name])}
            for name in IMPLS}


PEAK_CODE = """
import sys
sys.path.insert(0, {tests!r})
from lenet_cli.utils.memory import reuse_freed_memory
reuse_freed_memory()
from lenet_cli.data.sources import load_gray
import preprocess_reference, lenet_cli.data.preprocess as fast
from lenet_cli.data.sources import DECODE_MIN_SIDE
impl = {{"before": (preprocess_reference.to_mnist, None), "after": (fast.to_mnist, DECODE_MIN_SIDE)}}[{name!r}]
impl[0](*load_gray({path!r}, min_side=impl[1]))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)
"""


def peak_mb(path: Path, name: str) -> float:
    """Peak memory (MB, the whole process) to decode and preprocess `path` in a fresh process."""
    code = PEAK_CODE.format(tests=str(ROOT / "tests" / "data"), name=name, path=str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50, help="images per kind (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=100, help="timed images per kind and implementation")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core (default: not pinned)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    reuse_freed_memory()  # as `lenet predict` and `lenet serve` do, for both implementations
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    results = {}
    for kind, files in kinds(args.images).items():
        repeats = args.repeats if len(files) > 1 else max(5, args.repeats // 10)
        results[kind] = time_kind(files, repeats)
    phone = Path(os.environ.get("TMPDIR", "/tmp")) / f"lenet-phone-{os.getpid()}.jpg"
    phone.write_bytes(kinds(1)["phone 12 MP JPEG"][0])
    try:
        peaks = {name: peak_mb(phone, name) for name in IMPLS}
    finally:
        phone.unlink()
    if args.json:
        print(json.dumps({"ms": results, "phone_peak_mb": peaks}, indent=2))
        return
    print(f"{'kind':22} {'impl':7} {'preprocess ms':>14} {'(fastest)':>10} {'+ decode ms':>12} {'(fastest)':>10}")
    for kind, by_impl in results.items():
        for name, r in by_impl.items():
            print(f"{kind:22} {name:7} {r['preprocess_ms']:14.2f} {r['preprocess_ms_min']:10.2f} "
                  f"{r['with_decode_ms']:12.2f} {r['with_decode_ms_min']:10.2f}")
    print("12 MP JPEG, decode + preprocess, peak memory of the whole process: "
          + ", ".join(f"{name} {mb:.0f} MB" for name, mb in peaks.items()))


if __name__ == "__main__":
    main()
