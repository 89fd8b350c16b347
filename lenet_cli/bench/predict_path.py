"""`lenet bench`'s predict path: preprocessing time per image kind, and a folder's files/s against a plain loop.

Jobs for worker.py (each in a fresh process, like every measurement), never importing torch:
* "preprocess": ms per image of decode + preprocessing, and of preprocessing alone, per image
  kind (the serve page's canvas, a 200x200 photo, a 1 MP drawing, a 12 MP phone photo);
* "folder-predict": files/s of `lenet predict`'s pipeline (worker processes, one onnxruntime
  session, rows in order) on a folder mix, or ("pipeline": "plain") of `plain_loop`: PIL open,
  grey, resize to 28, invert, one onnxruntime session in batches of 256 (what tutorials do).

The inputs come from images.py, made from MNIST test digits where the job names MNIST, else
from Pillow's font.
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from lenet_cli.bench import images

PLAIN_BATCH = 256


def job_digits(job: dict[str, Any], n: int) -> list[np.ndarray]:
    """n digits as float ink: MNIST's test digits in job["data_dir"], else Pillow's font."""
    folder = job.get("data_dir")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        path = Path(folder) / name if folder else None
        if path is not None and path.is_file():
            raw = path.read_bytes()
            raw = gzip.decompress(raw) if name.endswith(".gz") else raw
            digits = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:n]
            return [d / np.float32(255) for d in digits]
    return images.font_digits(n)


def _kinds(job: dict[str, Any]) -> dict[str, list[bytes]]:
    n = job.get("images", 20)
    digits = job_digits(job, n)
    return {"canvas 280x280 PNG": [images.canvas_png(d) for d in digits],
            "photo 200x200 JPEG": [images.paper_photo_jpeg(d, seed=i) for i, d in enumerate(digits)],
            "drawing 1050x800 PNG": [images.drawing_png(d) for d in digits[:4]],
            "phone 12 MP JPEG": [images.phone_jpeg(digits[0])]}


def measure_preprocess(job: dict[str, Any]) -> dict[str, Any]:
    """Median ms per image, per kind: decode + preprocessing, and preprocessing alone."""
    from lenet_cli.data.preprocess import to_mnist
    from lenet_cli.data.sources import load_gray_bytes
    from lenet_cli.utils.memory import reuse_freed_memory

    reuse_freed_memory()  # as `lenet predict` and `lenet serve` do

    rows = []
    for kind, files in _kinds(job).items():
        decoded = [load_gray_bytes(f) for f in files]
        to_mnist(*decoded[0])  # warm-up: caches and lazy imports
        alone, whole = [], []
        deadline = time.perf_counter() + job.get("min_seconds", 0.5)
        i = 0
        while i < len(files) or (time.perf_counter() < deadline and i < 50 * len(files)):
            k = i % len(files)
            t0 = time.perf_counter()
            to_mnist(*decoded[k])
            t1 = time.perf_counter()
            to_mnist(*load_gray_bytes(files[k]))
            whole.append(time.perf_counter() - t1)
            alone.append(t1 - t0)
            i += 1
        rows.append({"kind": kind, "images": i, "preprocess_ms": 1e3 * float(np.median(alone)),
                     "with_decode_ms": 1e3 * float(np.median(whole))})
    return {"preprocess": rows}


def write_mix(folder: Path, job: dict[str, Any]) -> list[Path]:
    """The folder mix of MNIST-style PNGs and photos of ink on paper (sizes from the job)."""
    n_mnist, n_photos = job.get("mnist_files", 400), job.get("photo_files", 100)
    return images.write_predict_mix(folder, job_digits(job, min(n_mnist, 2000)), n_mnist, n_photos)


def plain_loop(files: list[Path], onnx: Path, out) -> int:
    """What tutorials do, as fast as plain code does it: PIL open, grey, resize to 28x28, invert, one
    onnxruntime session in batches of 256, a JSON line per file to `out`. The number of files."""
    import json

    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for start in range(0, len(files), PLAIN_BATCH):
        batch = files[start : start + PLAIN_BATCH]
        px = np.stack([255 - np.asarray(Image.open(p).convert("L").resize((28, 28))) for p in batch])
        logits = session.run(None, {name: px.astype(np.float32)[:, None]})[0]  # raw 0-255 pixels, as exported
        for p, row in zip(batch, logits):
            out.write(json.dumps({"file": str(p), "prediction": int(row.argmax())}) + "\n")
    return len(files)


def measure_folder(job: dict[str, Any]) -> dict[str, Any]:
    """files/s of one pipeline ("lenet" or "plain") over the mix in job["folders"], rows to a file."""
    if job["pipeline"] != "plain":
        from lenet_cli.utils.memory import reuse_freed_memory

        reuse_freed_memory()  # as `lenet predict` does
    files = sorted(p for f in job["folders"] for p in Path(f).iterdir())
    rows_path = Path(job["rows"])
    start = time.perf_counter()
    if job["pipeline"] == "plain":
        with open(rows_path, "w", encoding="utf-8") as out:
            n = plain_loop(files, Path(job["onnx"]), out)
    else:
        from lenet_cli.inference.backends import OnnxBackend
        from lenet_cli.inference.pipeline import (
            PredictConfig,
            RowWriter,
            iter_predictions,
        )

        backend = OnnxBackend(Path(job["onnx"]), "cpu")
        writer = RowWriter(rows_path)
        try:
            n = sum(writer.write(row) is None for row in iter_predictions(files, backend.logits, PredictConfig()))
        finally:
            writer.close()
    seconds = time.perf_counter() - start
    os.unlink(rows_path)
    return {"pipeline": job["pipeline"], "files": n, "seconds": seconds, "files_per_s": n / seconds}
