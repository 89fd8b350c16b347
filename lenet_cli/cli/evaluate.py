"""`lenet eval`: its options, one call into the API, its rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lenet_cli import api
from lenet_cli.cli.console import (
    confusion_table,
    key_value_table,
    out,
    pct,
    per_class_table,
    run_and_show,
)
from lenet_cli.cli.options import (
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    NoDownloadOpt,
    TtaOpt,
    WeightsOpt,
    device_spec,
    examples,
)

EPILOG = examples(
    "lenet eval  # the bundled model",
    "lenet eval --weights runs/train-*/best.safetensors",
    "lenet eval --weights model.onnx --json > metrics.json",
    "lenet eval --tta  # average over one-pixel shifts of each digit",
)


def eval_(
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    output_dir: Annotated[
        Optional[Path], typer.Option("--output-dir", "-o", help="Where the PNGs go.",
                                     show_default="runs/eval-<time>")
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write confusion-matrix and misclassified PNGs.")] = True,
    no_download: NoDownloadOpt = False,
    tta: TtaOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Accuracy on the 10,000 MNIST test images: overall, per class, confusion matrix.

    Accepts a .safetensors file (PyTorch) or an exported .onnx file (onnxruntime).
    """
    request = api.EvalRequest(weights=weights, device=device_spec(device), data_dir=data_dir, plots=plots,
                              output_dir=output_dir, allow_download=not no_download, tta=tta)
    run_and_show(api.evaluate, request, render, json_out)


def render(report: api.EvalReport) -> None:
    """Overall, per-class and confusion tables, and where the figures went."""
    result = report.result
    out.print(key_value_table("MNIST test set", [
        ("weights", str(report.weights)),
        ("backend", f"{report.backend} on {report.device}"),
        ("accuracy", f"[bold]{pct(result.accuracy)}[/]  ({result.count - result.correct} errors of {result.count:,})"),
        ("loss", f"{result.loss:.4f}"),
        ("time", f"{report.seconds:.2f}s"),
    ]))
    out.print(per_class_table(result))
    out.print(confusion_table(result.confusion))
    for label, path in report.files.items():
        out.print(f"{label.replace('_', ' ')}: {path}")
