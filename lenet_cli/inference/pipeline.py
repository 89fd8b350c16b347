"""Classify image files: preprocess each one, run the model in batches, keep per-file errors.

No Rich and no Typer here, and no torch on the default path: with the bundled model
and a CPU, `predict` runs the bundled ONNX export through onnxruntime, so that a
one-image answer takes a fraction of a second instead of the 2+ s `import torch` costs.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lenet_cli.data.preprocess import Prepared
from lenet_cli.data.sources import STDIN, is_url
from lenet_cli.devices import DeviceSpec
from lenet_cli.errors import OutputError
from lenet_cli.inference.workers import prepare_row, prepared_rows
from lenet_cli.model.metrics import softmax
from lenet_cli.model.weights import bundled_onnx_path, resolve_weights_path
from lenet_cli.utils.fileio import atomic_write_with, ensure_dir

# Chosen on the development sets (MNIST's validation split, usps-train, the drawn sets): under 0.7 a
# third to a half of the model's mistakes, and under 1% of its right answers (README, "Confidence").
LOW_CONFIDENCE = 0.7
LOW_CONFIDENCE_NOTE = "low confidence"


@dataclass(frozen=True)
class PredictConfig:
    """How to classify: top-k shown, polarity override, where previews go, batch size."""

    top_k: int = 3
    invert: bool | None = None  # None: detect per image
    preview_dir: Path | None = None
    batch_size: int = 256  # bounds memory on big folders; one batch holds ~200 KB of pixels
    workers: int | None = None  # processes that decode and preprocess a big folder; None: one per core
    low_confidence: float = LOW_CONFIDENCE  # a top probability under this gets the note "low confidence"


def default_model_path(weights: Path | None, device: DeviceSpec) -> Path:
    """--weights if given; else the bundled model, as ONNX when it will run on the CPU.

    A CUDA or MPS request with the bundled model goes to the PyTorch weights: the user
    asked for that device, and the bundled ONNX would need onnxruntime-gpu.
    """
    if weights is None and device.kind in ("auto", "cpu") and bundled_onnx_path().is_file():
        return bundled_onnx_path()
    return resolve_weights_path(weights)


def _preview_name(path: Path | str, used: set[str]) -> str:
    """`<stem>.png`, made unique: `a.png` and `a.jpg`, or two folders' `1.png`, must not overwrite each other."""
    if path == STDIN:
        stem = "stdin"
    elif isinstance(path, str) and is_url(path):
        from urllib.parse import urlsplit

        stem = Path(urlsplit(path).path).stem or "download"
    else:
        stem = Path(path).stem
    name, n = f"{stem}.png", 1
    while name.casefold() in used:  # macOS and Windows folders ignore case: A.png is a.png
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name.casefold())
    return name


def iter_predictions(
    paths: list[Path | str],
    logits_fn: Callable[[np.ndarray], np.ndarray],
    cfg: PredictConfig,
    on_file: Callable[[], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """One row per path, in order (the prediction with top-k probabilities, or the file's error),
    yielded as each batch is classified.

    `logits_fn` maps uint8 (N, 28, 28) to logits (N, 10): a backend's `logits`. Memory holds one
    batch of rows (and the workers' bounded window, workers.py), however many paths there are.
    """
    window: list[dict[str, Any]] = []  # rows since the last batch, in order, errors included
    pending: list[tuple[dict[str, Any], np.ndarray]] = []
    used_names: set[str] = set()

    def classify() -> None:
        if not pending:
            return
        probs = softmax(logits_fn(np.stack([px for _, px in pending])))
        for (row, _), pr in zip(pending, probs):
            score_row(row, pr, cfg.top_k, cfg.low_confidence)
        pending.clear()

    for row, pixels in prepared_rows(paths, cfg.invert, cfg.workers):
        if pixels is not None:
            if cfg.preview_dir is not None:
                name = _preview_name(_source(row["file"]), used_names)
                row["preview"] = str(save_preview(pixels, cfg.preview_dir / name))
            pending.append((row, pixels))
        window.append(row)
        if len(pending) >= cfg.batch_size or not pending:  # a batch is full, or only errors wait
            classify()
            yield from window
            window.clear()
        if on_file is not None:
            on_file()
    classify()
    yield from window


def _source(name: str) -> Path | str:
    """A row's `file` back as the input it names: a path, or a URL or "-" as given."""
    return name if name == STDIN or is_url(name) else Path(name)


def score_row(row: dict[str, Any], probs: np.ndarray, top_k: int, low_confidence: float = LOW_CONFIDENCE) -> None:
    """Fill a row's prediction, confidence and top-k from one image's probabilities (10,).

    A top probability under `low_confidence` adds the note "low confidence" to the row's notes.
    """
    order = np.argsort(-probs, kind="stable")[:top_k]
    row["prediction"] = int(order[0])
    row["confidence"] = float(probs[order[0]])
    row["top_k"] = [{"class": int(c), "probability": float(probs[c])} for c in order]
    if row["confidence"] < low_confidence:
        row.setdefault("notes", []).append(LOW_CONFIDENCE_NOTE)


def predict_one(prepare: Callable[[], Prepared], name: str,
                logits_fn: Callable[[np.ndarray], np.ndarray], top_k: int = 3) -> tuple[dict[str, Any], Prepared | None]:
    """One image's row (as in `iter_predictions`, without `file`) and its 28x28 pixels (None on error)."""
    row: dict[str, Any] = {}
    prepared = prepare_row(row, prepare, name)
    if prepared is not None:
        score_row(row, softmax(logits_fn(prepared.pixels[None]))[0], top_k)
    return row, prepared


class RowWriter:
    """Rows written to a file as they come: JSON Lines (.jsonl) or CSV (.csv), flushed row by row.

    Each row reaches the operating system when it is written, so a crash, Ctrl-C or SIGKILL
    leaves every finished row in the file (a power cut may still lose what the disk had not stored).
    """

    CSV_FIELDS = ("file", "prediction", "confidence", "top_k", "notes", "inverted", "passthrough", "preview", "error",
                  "error_kind")
    SUFFIXES = (".jsonl", ".csv")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.csv = self.path.suffix.lower() == ".csv"
        ensure_dir(self.path.parent, "--output")
        try:
            self.fh = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise OutputError(f"Cannot write {self.path}: {exc.strerror or exc}.",
                              "Choose a writable location with --output.") from exc
        self.writer = csv.DictWriter(self.fh, fieldnames=self.CSV_FIELDS, lineterminator="\n") if self.csv else None
        if self.writer is not None:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        """Append one row and hand it to the operating system."""
        if self.writer is not None:
            flat = dict(row)
            if "top_k" in flat:
                flat["top_k"] = " ".join(f"{t['class']}:{t['probability']:.6f}" for t in flat["top_k"])
            if "notes" in flat:
                flat["notes"] = "; ".join(flat["notes"])
            self.writer.writerow(flat)
        else:
            self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()

    def close(self) -> None:
        """Close the file."""
        self.fh.close()


def save_preview(pixels: np.ndarray, target: Path) -> Path:
    """Write the 28x28 image the model saw, atomically."""
    from PIL import Image

    ensure_dir(target.parent, "--save-preview")
    atomic_write_with(target, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
    return target
