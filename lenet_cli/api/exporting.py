"""`lenet export --onnx`: export, verify, optionally quantize to int8, write atomically."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lenet_cli.data.digits import load_parity_digits
from lenet_cli.data.mnist import load_split, missing_files, resolve_data_dir
from lenet_cli.events import Events
from lenet_cli.export.exporter import check_options, export_onnx
from lenet_cli.export.int8 import CALIBRATION_IMAGES, QUANT_MAX_DROP, QuantRow
from lenet_cli.export.verify import PROB_TOLERANCE, ParityRow
from lenet_cli.model.weights import read_info, resolve_weights_path
from lenet_cli.utils.fileio import ensure_dir, refuse_existing


@dataclass(frozen=True)
class ExportRequest:
    """`lenet export --onnx`: which weights, where to, which opset, whether to quantize."""

    weights: Path | None = None
    output: Path | None = None  # None: lenet5.onnx, or lenet5-int8.onnx with quantize="int8"
    opset: int = 18
    quantize: str | None = None
    data_dir: Path | None = None
    allow_download: bool = True
    exist_ok: bool = False  # may replace an existing output file


@dataclass
class ExportReport:
    """The written file, its verification against PyTorch and, for int8, the comparison with float32."""

    weights: Path
    output: Path
    opset: int
    bytes: int
    verification: list[ParityRow]
    metadata: dict[str, str]
    quantize: str | None = None
    quantization: list[QuantRow] = field(default_factory=list)
    tolerance: float = PROB_TOLERANCE
    test_accuracy: float | None = None  # of the written file on MNIST's test set; None where MNIST is not at hand
    test_images: int = 0
    data_dir: Path | None = None  # where MNIST was looked for

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `lenet export --json`."""
        data: dict[str, Any] = {
            "weights": str(self.weights), "output": str(self.output), "opset": self.opset, "bytes": self.bytes,
            "tolerance": self.tolerance, "verification": [vars(r) for r in self.verification], "metadata": self.metadata,
            "test_accuracy": self.test_accuracy, "test_images": self.test_images,
        }
        if self.quantize:
            data["quantization"] = {"type": self.quantize, "max_accuracy_drop": QUANT_MAX_DROP,
                                    "comparison": [vars(r) for r in self.quantization]}
        return data


def export(request: ExportRequest, events: Events | None = None) -> ExportReport:
    """Export, verify, optionally quantize, write (atomically, only when every check passes)."""
    events = events or Events()
    output = request.output or Path("lenet5-int8.onnx" if request.quantize else "lenet5.onnx")
    check_options(request.opset, request.quantize, output)
    path = resolve_weights_path(request.weights)
    read_info(path)  # an ONNX file, a checkpoint or a damaged file fails before MNIST is loaded (or downloaded)
    ensure_dir(output.parent, "--output")  # an unwritable --output fails before the export, not after it
    refuse_existing(output, "--output", request.exist_ok)  # a directory too
    folder = resolve_data_dir(request.data_dir)
    test_images = test_labels = calibration = None
    if request.quantize:  # int8 needs MNIST: training images to calibrate, the test set to compare
        test = load_split(folder, "test", allow_download=request.allow_download)
        test_images, test_labels = test.images.numpy(), test.labels.numpy()
        # Calibrate on training images: the test set only ever measures.
        train_split = load_split(folder, "train", allow_download=request.allow_download)
        calibration = train_split.images[:CALIBRATION_IMAGES].numpy()
    elif not missing_files(folder):  # MNIST at hand: the file's test accuracy too (never downloaded for it)
        test = load_split(folder, "test", allow_download=False)
        test_images, test_labels = test.images.numpy(), test.labels.numpy()
    digits, _ = load_parity_digits()  # shipped in the package: the parity check needs no MNIST
    what = f"Exporting {path.name} to ONNX opset {request.opset}" + (" and quantizing to int8" if request.quantize else "")
    with events.stage(f"{what}, verifying ..."):
        written, rows, meta, quant_rows, accuracy = export_onnx(path, output, request.opset, digits, request.quantize,
                                                                calibration, test_images, test_labels)
    return ExportReport(path, written, request.opset, written.stat().st_size, rows, meta, request.quantize, quant_rows,
                        test_accuracy=accuracy, test_images=0 if test_labels is None else len(test_labels),
                        data_dir=folder)
