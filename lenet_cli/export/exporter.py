"""`lenet export --onnx`: export a weights file, verify it, optionally quantize it, write it.

Nothing is written unless every check passes (onnx.checker, parity with PyTorch, and for
int8 the accuracy limit); the file is then written atomically.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from lenet_cli.errors import ExportError, UsageError
from lenet_cli.export.graph import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    export_model_proto,
    onnx_metadata,
    set_metadata,
)
from lenet_cli.export.int8 import (
    QUANT_MAX_DROP,
    QuantRow,
    compare_float_int8,
    quantize_int8,
)
from lenet_cli.export.verify import PROB_TOLERANCE, ParityRow, onnx_accuracy, verify
from lenet_cli.model.weights import load_model
from lenet_cli.utils.fileio import atomic_write_bytes

QUANT_TYPES = ("int8",)


def check_options(opset: int, quantize: str | None, output: Path) -> None:
    """UsageError for an opset, quantization type or output name that cannot work."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}.")
    if quantize is not None and quantize not in QUANT_TYPES:
        raise UsageError(f"--quantize supports only int8, got {quantize!r}.", "Example: lenet export --onnx --quantize int8")
    if output.suffix.lower() != ".onnx":
        raise UsageError(f"--output should end in .onnx, got {output}.")


def export_onnx(
    weights: Path, output: Path, opset: int = DEFAULT_OPSET, images: np.ndarray | None = None,
    quantize: str | None = None, calibration: np.ndarray | None = None,
    test_images: np.ndarray | None = None, test_labels: np.ndarray | None = None,
) -> tuple[Path, list[ParityRow], dict[str, Any], list[QuantRow], float | None]:
    """Export a safetensors model to ONNX, verify it on `images`, optionally quantize it to int8, and
    write the file atomically only if every check passes. The options are checked by `check_options`.

    Returns the file, the parity rows, its metadata, the float-vs-int8 rows and the written model's
    accuracy on `test_images` (None without them)."""
    model, info = load_model(weights, "cpu")
    proto = export_model_proto(model, opset)
    meta = onnx_metadata(info, opset)
    set_metadata(proto, meta)
    proto.doc_string = "LeNet-5 digit classifier exported by lenet-cli. Input: raw pixels 0-255."
    if images is None:
        raise ExportError("Verification needs images.")
    rows = verify(proto, model, images)
    if not all(r.passed for r in rows):
        bad = next(r for r in rows if not r.passed)
        raise ExportError(
            f"Verification failed at batch size {bad.batch_size}: {bad.top1_agree}/{bad.images} top-1 agree, "
            f"max probability difference {bad.max_abs_prob_diff:.2e} (tolerance {PROB_TOLERANCE:.0e}). No file was written."
        )
    quant_rows: list[QuantRow] = []
    accuracy = None
    if quantize is None and test_images is not None and test_labels is not None:
        accuracy = onnx_accuracy(proto, test_images, test_labels)
    if quantize is not None:
        if calibration is None or test_images is None or test_labels is None:
            raise ExportError("int8 quantization needs calibration and test images.")
        float_proto = proto
        proto = quantize_int8(float_proto, calibration)
        quant_rows = compare_float_int8(float_proto, proto, test_images, test_labels)
        f32, i8 = quant_rows
        if i8.test_accuracy < f32.test_accuracy - QUANT_MAX_DROP:
            raise ExportError(
                f"The int8 model reaches {100 * i8.test_accuracy:.2f}% against {100 * f32.test_accuracy:.2f}% in float32, "
                f"a loss above the {100 * QUANT_MAX_DROP:.1f}-point limit. No file was written.",
                "Export without --quantize, or calibrate a better-trained model.",
            )
        # `metrics` describes this file; the float model's figures stay under `source_metrics`.
        meta["source_metrics"] = meta["metrics"]
        meta["metrics"] = json.dumps({"test_accuracy": i8.test_accuracy, "test_images": i8.test_images})
        meta["quantization"] = json.dumps({
            "type": "int8 static, QDQ, per-channel int8 weights, uint8 activations, MinMax calibration",
            "calibration_images": int(len(calibration)), "test_accuracy": i8.test_accuracy,
            "float32_test_accuracy": f32.test_accuracy, "test_images": i8.test_images,
        })
        set_metadata(proto, meta)
        proto.doc_string = "LeNet-5 digit classifier (int8) exported by lenet-cli. Input: raw pixels 0-255."
        quant_rows[1] = dataclasses.replace(i8, bytes=proto.ByteSize())  # the size of the file as written
        accuracy = i8.test_accuracy
    atomic_write_bytes(Path(output), proto.SerializeToString())
    return Path(output), rows, meta, quant_rows, accuracy


def export_in_memory(weights: Path, opset: int = DEFAULT_OPSET, threads: int | None = None):
    """A CPU onnxruntime session on a safetensors model exported in memory (nothing written), and its
    metadata: the same export and checks as `export_onnx`, verified against PyTorch on seeded random
    pixels (no MNIST needed: parity, not accuracy, is what is checked)."""
    from lenet_cli.inference.onnx_session import cpu_session

    model, info = load_model(weights, "cpu")
    proto = export_model_proto(model, opset)
    meta = onnx_metadata(info, opset)
    set_metadata(proto, meta)
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    bad = next((r for r in verify(proto, model, images, batch_sizes=(1, 64)) if not r.passed), None)
    if bad is not None:
        raise ExportError(f"The in-memory ONNX export of {weights} differs from PyTorch at batch size {bad.batch_size} "
                          f"(max probability difference {bad.max_abs_prob_diff:.2e}).",
                          "Export it with `lenet export --onnx` to see the full check, and serve the .onnx file.")
    return cpu_session(proto, threads), meta
