"""`lenet eval`: test-set accuracy, per-class metrics and the confusion matrix of one model; the figures."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lenet_cli.data.mnist import load_split, resolve_data_dir
from lenet_cli.devices import AUTO, DeviceSpec
from lenet_cli.events import Events
from lenet_cli.inference.backends import OnnxBackend, TorchBackend, load_backend
from lenet_cli.model.metrics import EvalResult, metrics_from_logits
from lenet_cli.model.weights import resolve_weights_path
from lenet_cli.training.plots import save_confusion_matrix, save_misclassified_grid
from lenet_cli.training.run_dir import new_run_dir
from lenet_cli.utils.fileio import ensure_dir


@dataclass(frozen=True)
class EvalRequest:
    """`lenet eval`: which model, where, and whether to draw the figures."""

    weights: Path | None = None  # None: the bundled model
    device: DeviceSpec = AUTO
    data_dir: Path | None = None
    plots: bool = True
    output_dir: Path | None = None  # where the PNGs go; None: runs/eval-<time>
    allow_download: bool = True
    tta: bool = False  # average over one-pixel shifts (tta.py)


@dataclass
class EvalReport:
    """Test-set metrics of one model."""

    weights: Path
    backend: str
    device: str
    preset: str | None
    seconds: float
    result: EvalResult
    files: dict[str, Path] = field(default_factory=dict)
    tta: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `lenet eval --json`."""
        data = {"weights": str(self.weights), "backend": self.backend, "device": self.device, "preset": self.preset,
                "seconds": self.seconds, "tta": self.tta, **self.result.to_dict()}
        if self.files:
            data["files"] = {k: str(v) for k, v in self.files.items()}
        return data


def evaluate(request: EvalRequest, events: Events | None = None) -> EvalReport:
    """Evaluate a safetensors or ONNX model on the MNIST test set; optionally write the PNGs."""
    events = events or Events()
    path = resolve_weights_path(request.weights)
    if not request.plots:
        return _evaluate(path, request, None, events)
    plot_dir = new_run_dir("eval", request.output_dir)
    created = not plot_dir.exists()
    ensure_dir(plot_dir)  # an unwritable --output-dir fails before any work, not after it
    try:
        return _evaluate(path, request, plot_dir, events)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                plot_dir.rmdir()  # a failed run leaves no empty runs/eval-<time> behind (only if empty)
        raise


def _evaluate(path: Path, request: EvalRequest, plot_dir: Path | None, events: Events) -> EvalReport:
    # The model first: a wrong or damaged file is reported as such before MNIST is loaded (or downloaded).
    start = time.perf_counter()
    with events.stage(f"Loading {path.name} ..."):
        backend = load_backend(path, request.device)
    loading = time.perf_counter() - start  # counted in the reported time, as it always was
    root = resolve_data_dir(request.data_dir)
    with events.stage(f"Loading MNIST test set from {root} ..."):
        test = load_split(root, "test", allow_download=request.allow_download)
    start = time.perf_counter() - loading
    with events.stage(f"Evaluating {path.name} on {len(test):,} test images ..."):
        if request.tta:
            import torch

            from lenet_cli.inference.tta import tta_logits

            logits = torch.from_numpy(tta_logits(backend.logits, test.images.numpy()))
        elif isinstance(backend, OnnxBackend):
            import torch

            logits = torch.from_numpy(backend.logits(test.images.numpy()))
        else:
            assert isinstance(backend, TorchBackend)
            logits = backend.logits_tensor(test.images)
        result = metrics_from_logits(logits, test.labels)
    report = EvalReport(path, backend.name, backend.device, backend.metadata.get("preset"),
                        time.perf_counter() - start, result, tta=request.tta)
    if plot_dir is not None:
        wrong = result.misclassified[:64]
        title = f"Confusion matrix: {path.name}, accuracy {100 * result.accuracy:.2f}%"
        report.files = {
            "confusion_matrix": save_confusion_matrix(result.confusion, plot_dir / "confusion_matrix.png", title),
            "misclassified": save_misclassified_grid(
                test.images[wrong] if wrong else test.images[:0], [int(test.labels[i]) for i in wrong],
                [result.predictions[i] for i in wrong], plot_dir / "misclassified.png"),
        }
    return report
