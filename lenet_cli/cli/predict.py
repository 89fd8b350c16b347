"""`lenet predict`: its options, one call into the API, its rendering."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from lenet_cli import api
from lenet_cli.cli.console import error, out, run_and_show
from lenet_cli.cli.options import JsonOpt, WeightsOpt, device_spec, examples
from lenet_cli.devices import DEVICE_HELP
from lenet_cli.errors import EXIT_FAILURE, IMAGE_HINTS

EPILOG = examples(
    "lenet predict digit.png",
    "lenet predict photos/ 'scans/*.jpg' --top-k 3",
    "lenet predict digit.png --weights model.onnx --json",
    "lenet predict drawing.png --save-preview previews/  # see what the model saw",
)


def predict(
    images: Annotated[list[str], typer.Argument(help="Image files, directories or glob patterns.", show_default=False)],
    weights: WeightsOpt = None,
    device: Annotated[str, typer.Option("--device", "-d", help=f"{DEVICE_HELP} With the bundled model, auto runs "
                                        "onnxruntime on the CPU (no torch).")] = "auto",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many top classes to show.", min=1, max=10)] = 3,
    invert: Annotated[
        Optional[bool], typer.Option("--invert/--no-invert", help="Force polarity (dark ink on light paper = invert). "
                                     "[default: detect]", show_default=False)
    ] = None,
    save_preview: Annotated[
        Optional[Path], typer.Option("--save-preview", help="Write the 28x28 images the model saw into this folder.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Classify images of digits: photos, scans, drawings, icons, MNIST crops.

    Each image is turned into MNIST's form first (polarity, contrast, crop,
    stroke width, 20x20 fit, centre of mass). A file that fails is reported in
    its row; the others are still classified; the exit code is 1 if any failed.
    """
    request = api.PredictRequest(images=tuple(images), weights=weights, device=device_spec(device), top_k=top_k,
                                 invert=invert, preview_dir=save_preview)
    report = run_and_show(api.predict, request, lambda r: render(r, top_k), json_out)
    if report_failures(report, "the JSON" if json_out else "the table"):
        raise typer.Exit(EXIT_FAILURE)


def render(report: api.PredictReport, top_k: int) -> None:
    """One row per file: prediction, confidence, top-k and what preprocessing decided, or the error."""
    table = Table(title=f"Predictions ({report.backend} on {report.device})", title_justify="left")
    longest = max(len(row["file"]) for row in report.results)
    table.add_column("file", overflow="fold", min_width=min(longest, 48))  # fold only very long paths
    table.add_column("digit", justify="center")
    table.add_column("confidence", justify="right")
    table.add_column(f"top {top_k}")
    table.add_column("notes", style="dim")
    for row in report.results:
        if row.get("error"):
            table.add_row(escape(row["file"]), "[red]error[/]", "", f"[red]{escape(row['error'])}[/]",
                          row.get("error_kind", ""))
            continue
        tops = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in row["top_k"])
        notes = "MNIST form, unchanged" if row["passthrough"] else ("inverted" if row["inverted"] else "")
        table.add_row(escape(row["file"]), f"[bold]{row['prediction']}[/]", f"{100 * row['confidence']:.1f}%", tops, notes)
    out.print(table)


def report_failures(report: api.PredictReport, where: str = "the table") -> bool:
    """One line on stderr when files failed: how many, the first one's error and what to do. True if any."""
    failed = report.failed
    if not failed:
        return False
    first = failed[0]
    hint = IMAGE_HINTS.get(first.get("error_kind", ""), "")
    head = f"{len(failed)} of {len(report.results)} file(s) could not be classified"
    head += ": " if len(failed) == 1 else f" (see {where}); the first, "
    sys.stdout.flush()  # the data first, then the summary, even when both streams go to one pipe
    error(f"{head}{first['file']}: {first['error']} {hint}".rstrip())
    return True
