"""Classify image files: preprocess each one, run the model in batches, keep per-file errors.

No Rich and no Typer here, and no torch on the default path: with the bundled model
and a CPU, `predict` runs the bundled ONNX export through onnxruntime, so that a
one-image answer takes a fraction of a second instead of the 2+ s `import torch` costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lenet_cli.devices import DeviceSpec
from lenet_cli.errors import ImageError, first_line
from lenet_cli.evaluate import softmax
from lenet_cli.fileio import atomic_write_with, ensure_dir
from lenet_cli.images import prepare_file
from lenet_cli.weights import bundled_onnx_path, resolve_weights_path


@dataclass(frozen=True)
class PredictConfig:
    """How to classify: top-k shown, polarity override, where previews go, batch size."""

    top_k: int = 3
    invert: bool | None = None  # None: detect per image
    preview_dir: Path | None = None
    batch_size: int = 256  # bounds memory on big folders; one batch holds ~200 KB of pixels


def default_model_path(weights: Path | None, device: DeviceSpec) -> Path:
    """--weights if given; else the bundled model, as ONNX when it will run on the CPU.

    A CUDA or MPS request with the bundled model goes to the PyTorch weights: the user
    asked for that device, and the bundled ONNX would need onnxruntime-gpu.
    """
    if weights is None and device.kind in ("auto", "cpu") and bundled_onnx_path().is_file():
        return bundled_onnx_path()
    return resolve_weights_path(weights)


def _preview_name(path: Path, used: set[str]) -> str:
    """`<stem>.png`, made unique: `a.png` and `a.jpg`, or two folders' `1.png`, must not overwrite each other."""
    name, n = f"{path.stem}.png", 1
    while name.casefold() in used:  # macOS and Windows folders ignore case: A.png is a.png
        n += 1
        name = f"{path.stem}-{n}.png"
    used.add(name.casefold())
    return name


def predict_files(
    paths: list[Path],
    logits_fn: Callable[[np.ndarray], np.ndarray],
    cfg: PredictConfig,
    on_file: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per path, in order: the prediction with top-k probabilities, or the file's error.

    `logits_fn` maps uint8 (N, 28, 28) to logits (N, 10): a backend's `logits`.
    """
    rows: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], np.ndarray]] = []
    used_names: set[str] = set()

    def flush() -> None:
        if not pending:
            return
        probs = softmax(logits_fn(np.stack([px for _, px in pending])))
        for (row, _), pr in zip(pending, probs):
            order = np.argsort(-pr, kind="stable")[: cfg.top_k]
            row["prediction"] = int(order[0])
            row["confidence"] = float(pr[order[0]])
            row["top_k"] = [{"class": int(c), "probability": float(pr[c])} for c in order]
        pending.clear()

    for path in paths:
        row: dict[str, Any] = {"file": str(path)}
        rows.append(row)
        try:
            prepared = prepare_file(path, cfg.invert)
        except ImageError as exc:
            row["error"] = exc.message.removeprefix(f"{path}: ")  # the row already names the file
            row["error_kind"] = exc.kind
        except Exception as exc:  # noqa: BLE001 - one odd file must never cost the user the other rows
            row["error"] = f"cannot process this image ({type(exc).__name__}: {first_line(exc)})"
            row["error_kind"] = "corrupt"
        else:
            row["inverted"] = prepared.inverted
            row["passthrough"] = prepared.passthrough
            if cfg.preview_dir is not None:
                row["preview"] = str(save_preview(prepared.pixels, cfg.preview_dir / _preview_name(path, used_names)))
            pending.append((row, prepared.pixels))
            if len(pending) >= cfg.batch_size:
                flush()
        if on_file is not None:
            on_file()
    flush()
    return rows


def save_preview(pixels: np.ndarray, target: Path) -> Path:
    """Write the 28x28 image the model saw, atomically."""
    from PIL import Image

    ensure_dir(target.parent, "--save-preview")
    atomic_write_with(target, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
    return target
