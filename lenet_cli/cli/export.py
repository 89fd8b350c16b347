"""`lenet export --onnx`: its options, one call into the API, its rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lenet_cli import api
from lenet_cli.cli.console import columns_table, out, pct, run_and_show
from lenet_cli.cli.options import (
    DataDirOpt,
    ExistOkOpt,
    JsonOpt,
    NoDownloadOpt,
    WeightsOpt,
    examples,
)
from lenet_cli.errors import UsageError
from lenet_cli.export.graph import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET

EPILOG = examples(
    "lenet export --onnx  # bundled model -> lenet5.onnx",
    "lenet export --onnx -w runs/train-*/best.safetensors -o model.onnx",
    "lenet export --onnx --opset 20 --output lenet5-op20.onnx",
    "lenet export --onnx --quantize int8  # needs MNIST: -> lenet5-int8.onnx",
)


def export(
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the only format so far).")] = False,
    weights: WeightsOpt = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="The .onnx file to write.",
                                     show_default="lenet5.onnx, or lenet5-int8.onnx with --quantize int8")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version (18 or newer: PyTorch's exporter starts there).",
                                       min=MIN_OPSET, max=MAX_OPSET)] = DEFAULT_OPSET,
    quantize: Annotated[
        Optional[str], typer.Option("--quantize", help="int8: static int8 quantization with onnxruntime (calibrated on "
                                    "1,024 training images), compared with float32 on the test set.",
                                    show_default=False)
    ] = None,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    exist_ok: ExistOkOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export to ONNX (dynamic batch, standard operators, raw 0-255 pixels in) and verify it.

    The export is checked with onnx.checker and compared with PyTorch on 300
    real digits shipped in the package, at batch sizes 1 and 256, before the
    file is written: no MNIST and no network needed. Where MNIST is at hand
    (--data-dir), the written file's test accuracy is reported too.
    --quantize int8 needs MNIST (training images to calibrate on).
    """
    if not onnx:
        raise UsageError("Choose a format: --onnx.", "Example: lenet export --onnx --output model.onnx")
    request = api.ExportRequest(weights=weights, output=output, opset=opset, quantize=quantize, data_dir=data_dir,
                                allow_download=not no_download, exist_ok=exist_ok)
    run_and_show(api.export, request, render, json_out)


def render(report: api.ExportReport) -> None:
    """Parity table, the float-vs-int8 comparison, and where the file went."""
    table = columns_table(f"Verification: onnxruntime vs PyTorch (tolerance {report.tolerance:.0e})",
                          ("batch size", "images", "top-1 agree", "max |Δp|", "result"))
    for r in report.verification:
        table.add_row(str(r.batch_size), str(r.images), f"{r.top1_agree}/{r.images}", f"{r.max_abs_prob_diff:.1e}",
                      "[green]pass[/]" if r.passed else "[red]fail[/]")
    out.print(table)
    if report.quantization:
        rows = report.quantization
        table = columns_table(f"float32 vs int8 on {rows[0].test_images:,} MNIST test images, onnxruntime on the CPU",
                              ("model", "size", "test accuracy", "agrees with float32", "batch 1 p50", "batch 1024"))
        for r in rows:
            table.add_row(r.model, f"{r.bytes / 1024:.0f} KiB", pct(r.test_accuracy), pct(r.top1_agree_with_float),
                          f"{r.batch1_p50_us:.0f} µs", f"{r.batch1024_images_per_s:,.0f} img/s")
        out.print(table)
    if report.test_accuracy is not None:
        out.print(f"MNIST test accuracy of the written file (onnxruntime): {pct(report.test_accuracy)} "
                  f"of {report.test_images:,} images.")
    else:
        out.print(f"MNIST test accuracy: not measured (no MNIST in {report.data_dir}; the export never downloads "
                  "it). The parity check above used the digits shipped in the package.")
    out.print(f"Wrote {report.output} ({report.bytes / 1024:.0f} KiB, opset {report.opset}): "
              "input 'pixels' float32 [N, 1, 28, 28] raw 0-255, output 'logits' [N, 10].")
    out.print(f"[bold]Next:[/] lenet eval --weights {report.output}")
