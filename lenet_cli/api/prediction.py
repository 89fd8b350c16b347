"""`lenet predict`: classify image files with onnxruntime (the bundled model, no torch) or PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenet_cli.backends import load_backend
from lenet_cli.devices import AUTO, DeviceSpec
from lenet_cli.errors import UsageError
from lenet_cli.events import Events
from lenet_cli.fileio import ensure_dir
from lenet_cli.imagefiles import expand_inputs
from lenet_cli.predict import PredictConfig, default_model_path, predict_files

PROGRESS_FROM_FILES = 50  # predict shows a progress bar from this many files


@dataclass(frozen=True)
class PredictRequest:
    """`lenet predict`: the images (files, folders, globs), the model and how to show results."""

    images: tuple[str, ...] = ()
    weights: Path | None = None
    device: DeviceSpec = AUTO  # auto with the bundled model: onnxruntime on the CPU, no torch
    top_k: int = 3
    invert: bool | None = None  # None: detect per image
    preview_dir: Path | None = None


@dataclass
class PredictReport:
    """One row per input file, in order: a prediction or that file's error."""

    weights: Path
    backend: str
    device: str
    results: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows of files that could not be classified."""
        return [row for row in self.results if row.get("error")]

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `lenet predict --json`."""
        return {"weights": str(self.weights), "backend": self.backend, "device": self.device, "results": self.results}


def predict(request: PredictRequest, events: Events | None = None) -> PredictReport:
    """Preprocess and classify every image; per-file errors go into their row."""
    events = events or Events()
    paths = expand_inputs(list(request.images))
    if not paths:
        raise UsageError("No images given.", "Example: lenet predict digit.png")
    model_path = default_model_path(request.weights, request.device)
    if request.preview_dir is not None:
        ensure_dir(request.preview_dir, "--save-preview")  # an unwritable preview folder fails before any work
    cfg = PredictConfig(top_k=request.top_k, invert=request.invert, preview_dir=request.preview_dir)
    backend = load_backend(model_path, request.device)
    on_file = None
    if len(paths) >= PROGRESS_FROM_FILES:
        done = [0]

        def on_file() -> None:
            done[0] += 1
            events.progress("Classifying", done[0], len(paths))

    rows = predict_files(paths, backend.logits, cfg, on_file=on_file)
    return PredictReport(model_path, backend.name, backend.device, rows)
