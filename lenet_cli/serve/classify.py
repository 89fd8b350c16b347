"""What `lenet serve` classifies with: its limits, the one shared onnxruntime model, one upload's row.

The prediction is `inference.pipeline.predict_one` (the same preprocessing, the same row fields
as `lenet predict --json`) on one onnxruntime session per serving process. onnxruntime's `run`
is safe to call from several threads at once, so every request of a process uses that session.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lenet_cli import __version__
from lenet_cli.data.preprocess import prepare_bytes
from lenet_cli.inference.backends import OnnxBackend
from lenet_cli.inference.pipeline import predict_one
from lenet_cli.serve.limits import Limits

MAX_UPLOAD_BYTES = Limits().max_body_bytes  # a whole request body, multipart framing included
MAX_UPLOAD_PIXELS = 4096 * 4096  # read from the header before decoding: a bomb costs nothing
# Serving processes: one per core. A process classifies one image at a time in one worker
# thread, so its event loop keeps reading, timing and answering other connections meanwhile.
DEFAULT_WORKERS = os.cpu_count() or 1
# Each request is one image: parallelism comes from processes side by side,
# so one intra-op thread per run (more would fight the other processes for the same cores).
SESSION_THREADS = 1


@dataclass(frozen=True)
class ServeConfig:
    """How one serving process answers: its limits and how many images it classifies at once."""

    max_pixels: int = MAX_UPLOAD_PIXELS
    limits: Limits = Limits()
    threads: int = 1  # images classified at once in this process (worker threads on its one session)

    @property
    def max_bytes(self) -> int:
        """The request body limit, in bytes."""
        return self.limits.max_body_bytes


@dataclass
class ServedModel:
    """The one onnxruntime backend every request uses, and what `GET /api/model` says about it."""

    backend: OnnxBackend
    source: str  # "bundled", "onnx", or "safetensors (exported to ONNX in memory at start)"

    def info(self) -> dict[str, Any]:
        """Preset, test accuracy, hash of the weights it was made from, versions: from the model's metadata."""
        meta = self.backend.metadata
        metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        return {
            "name": self.backend.path.name,
            "source": self.source,
            "backend": self.backend.name,
            "preset": meta.get("preset"),
            "test_accuracy": metrics.get("test_accuracy"),
            "param_count": meta.get("param_count"),
            "source_weights_sha256": meta.get("source_weights_sha256"),
            "source_weights_name": meta.get("source_weights_name"),
            "model_lenet_version": meta.get("lenet_cli_version"),
            "opset": meta.get("opset"),
            "quantization": meta.get("quantization"),
            "server_version": __version__,
        }


def served_model(path: Path, bundled: bool = False) -> ServedModel:
    """onnxruntime on a `.onnx` file (no torch), or on a `.safetensors` file exported in memory (imports torch)."""
    if path.suffix.lower() == ".onnx":
        return ServedModel(OnnxBackend(path, "cpu", threads=SESSION_THREADS), "bundled" if bundled else "onnx")
    from lenet_cli.export.exporter import export_in_memory
    from lenet_cli.model.weights import resolve_weights_path

    path = resolve_weights_path(path)
    session, _ = export_in_memory(path, threads=SESSION_THREADS)
    return ServedModel(OnnxBackend(path, "cpu", session=session),
                       "safetensors (exported to ONNX in memory at start)")


def preview_data_url(pixels: np.ndarray) -> str:
    """The 28x28 image the model saw, as a PNG data URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def classify_upload(model: ServedModel, data: bytes, cfg: ServeConfig, top_k: int, invert: bool | None,
                    preview: bool) -> dict[str, Any]:
    """One uploaded image's row: `lenet predict --json`'s fields, plus the preview as a data URL on request."""
    row, prepared = predict_one(lambda: prepare_bytes(data, invert, "upload", cfg.max_pixels), "upload",
                                model.backend.logits, top_k)
    row.setdefault("notes", [])  # notes the core adds (low confidence, ...) pass through as they are
    if preview and prepared is not None:
        row["preview"] = preview_data_url(prepared.pixels)
    return row
