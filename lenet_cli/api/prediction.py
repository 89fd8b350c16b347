"""`lenet predict`: classify image files with onnxruntime (the bundled model, no torch) or PyTorch."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lenet_cli.data.preprocess import NOT_A_DIGIT
from lenet_cli.data.sources import expand_inputs
from lenet_cli.devices import AUTO, DeviceSpec
from lenet_cli.errors import UsageError
from lenet_cli.events import Events
from lenet_cli.inference.backends import load_backend
from lenet_cli.inference.pipeline import (
    PredictConfig,
    RowWriter,
    default_model_path,
    iter_predictions,
)
from lenet_cli.inference.tta import tta_logits
from lenet_cli.inference.workers import uses_pool
from lenet_cli.utils.fileio import ensure_dir, refuse_existing

PROGRESS_FROM_FILES = 50  # predict shows a progress bar from this many files


@dataclass(frozen=True)
class PredictRequest:
    """`lenet predict`: the images (files, folders, globs), the model and how to show results."""

    images: tuple[str, ...] = ()  # also http(s) URLs, and "-" for one image on stdin
    weights: Path | None = None
    device: DeviceSpec = AUTO  # auto with the bundled model: onnxruntime on the CPU, no torch
    top_k: int = 3
    invert: bool | None = None  # None: detect per image
    preview_dir: Path | None = None
    output: Path | None = None  # rows also go to this .jsonl or .csv file, as they are computed
    keep_rows: int | None = None  # how many rows the report keeps (None: all); counts cover every row
    tta: bool = False  # average over one-pixel shifts (tta.py)
    min_confidence: float | None = None  # count the rows under it (or not a digit) as unsure
    exist_ok: bool = False  # may replace an existing output file


@dataclass
class PredictReport:
    """One row per input file, in order: a prediction or that file's error (the first `keep_rows` of them)."""

    weights: Path
    backend: str
    device: str
    results: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    failed: int = 0
    first_failure: dict[str, Any] | None = None
    output: Path | None = None
    unsure: int = 0  # with min_confidence: classified rows below it, or whose ink is not a digit
    first_unsure: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `lenet predict --json`."""
        return {"weights": str(self.weights), "backend": self.backend, "device": self.device, "results": self.results}


def is_unsure(row: dict[str, Any], min_confidence: float) -> bool:
    """A classified row whose top probability is below `min_confidence`, or whose ink is not a digit."""
    return row["confidence"] < min_confidence or any(n.startswith(NOT_A_DIGIT) for n in row["notes"])


def predict(request: PredictRequest, events: Events | None = None) -> PredictReport:
    """Preprocess and classify every image; per-file errors go into their row.

    Each row goes to `events.on_result` and to `request.output` as soon as its batch is
    classified, so a large job streams: memory holds one batch and the kept rows.
    """
    events = events or Events()
    paths = expand_inputs(list(request.images))
    if not paths and request.images:
        raise UsageError(f"No images found in {', '.join(map(str, request.images))}.",
                         "Give image files, folders of images, or a quoted pattern such as 'scans/**/*.png'.")
    if not paths:
        raise UsageError("No images given.", "Example: lenet predict digit.png")
    if request.min_confidence is not None and not 0.0 <= request.min_confidence <= 1.0:
        raise UsageError(f"--min-confidence is a probability between 0 and 1, got {request.min_confidence}.")
    if request.output is not None and request.output.suffix.lower() not in RowWriter.SUFFIXES:
        raise UsageError(f"--output should end in .jsonl or .csv, got {request.output}.")
    if request.output is not None:
        refuse_existing(request.output, "--output", request.exist_ok)  # before any image is read
    model_path = default_model_path(request.weights, request.device)
    if request.preview_dir is not None:
        ensure_dir(request.preview_dir, "--save-preview")  # an unwritable preview folder fails before any work
    cfg = PredictConfig(top_k=request.top_k, invert=request.invert, preview_dir=request.preview_dir)
    # With preprocessing in worker processes, onnxruntime's spinning threads would take their cores.
    backend = load_backend(model_path, request.device, spin=not uses_pool(paths))
    report = PredictReport(model_path, backend.name, backend.device, output=request.output)
    on_file = None
    if len(paths) >= PROGRESS_FROM_FILES:
        done = [0]

        def on_file() -> None:
            done[0] += 1
            events.progress("Classifying", done[0], len(paths))

    writer = RowWriter(request.output) if request.output is not None else None
    try:
        logits_fn = backend.logits if not request.tta else functools.partial(tta_logits, backend.logits)
        for row in iter_predictions(paths, logits_fn, cfg, on_file=on_file):
            report.total += 1
            if row.get("error"):
                report.failed += 1
                report.first_failure = report.first_failure or row
            elif request.min_confidence is not None and is_unsure(row, request.min_confidence):
                report.unsure += 1
                report.first_unsure = report.first_unsure or row
            if request.keep_rows is None or len(report.results) < request.keep_rows:
                report.results.append(row)
            if writer is not None:
                writer.write(row)
            events.on_result(row)
    finally:
        if writer is not None:
            writer.close()
    return report
