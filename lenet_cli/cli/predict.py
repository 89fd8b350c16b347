"""`lenet predict`: its options, one call into the API, its rendering."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from lenet_cli import api
from lenet_cli.cli.console import RichEvents, error, out, run_and_show
from lenet_cli.cli.options import (
    ExistOkOpt,
    JsonOpt,
    TtaOpt,
    WeightsOpt,
    device_spec,
    examples,
)
from lenet_cli.devices import DEVICE_HELP
from lenet_cli.errors import EXIT_FAILURE, IMAGE_HINTS, UnsureError, UsageError
from lenet_cli.utils.memory import reuse_freed_memory

# A panel of its own: --invert/--no-invert's second column would narrow every other option's help.
PREPROCESSING = "Preprocessing"
TABLE_ROWS = 200  # the table is for reading; --jsonl and --output carry every row
OUTPUT_TABLE_ROWS = 20  # with --output every row is in the file: the table is a glimpse (200 rows took 0.3 s to draw)

EPILOG = examples(
    "lenet predict digit.png",
    "lenet predict photos/ 'scans/*.jpg' --top-k 3",
    "lenet predict digit.png --weights model.onnx --json",
    "lenet predict drawing.png --save-preview previews/  # see what the model saw",
    "lenet predict scans/ --jsonl > results.jsonl  # a large folder, streamed",
    "lenet predict https://example.com/digit.png  # a URL (http or https)",
    "cat digit.png | lenet predict -  # one image from stdin",
    "lenet predict digit.png --min-confidence 0.9  # exit 3 if unsure",
)


def predict(
    images: Annotated[list[str], typer.Argument(help="Image files, directories, glob patterns, http(s) URLs, or - "
                                                "for one image on stdin.", show_default=False)],
    weights: WeightsOpt = None,
    device: Annotated[str, typer.Option("--device", "-d", help=f"{DEVICE_HELP} With the bundled model, auto runs "
                                        "onnxruntime on the CPU (no torch).")] = "auto",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many top classes to show.", min=1, max=10)] = 3,
    invert: Annotated[
        Optional[bool], typer.Option("--invert/--no-invert", rich_help_panel=PREPROCESSING, help="Force polarity (dark ink on light paper = invert).",
                                     show_default="detect")
    ] = None,
    save_preview: Annotated[
        Optional[Path], typer.Option("--save-preview", rich_help_panel=PREPROCESSING,
                                              help="Write the 28x28 images the model saw into this folder.")
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Also write every row to this .jsonl or .csv file as it is "
                                     "computed (a crash or Ctrl-C keeps the finished rows).", show_default=False)
    ] = None,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per file on stdout as it is computed, "
                                        "instead of a table (for scripts and large folders).")] = False,
    tta: TtaOpt = False,
    min_confidence: Annotated[
        Optional[float], typer.Option("--min-confidence", help="Exit with code 3 when a prediction's confidence is "
                                      "below this (0-1), or its image is not a digit.", min=0.0, max=1.0,
                                      show_default=False)
    ] = None,
    exist_ok: ExistOkOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Classify images of digits: photos, scans, drawings, icons, MNIST crops.

    Each image is turned into MNIST's form first (polarity, contrast, crop,
    stroke width, 20x20 fit, centre of mass). A file that fails is reported in
    its row; the others are still classified; the exit code is 1 if any failed.
    Ink that is no digit (a speck, a blob, a dash) gets a "not a digit" note and a
    top probability under 70% a "low confidence" note; --min-confidence turns
    them into exit code 3.

    Large folders stream with --jsonl or --output: rows are written as they are
    computed and memory stays flat; the table shows the first 200 rows (20 with
    --output, whose file has every row).
    """
    reuse_freed_memory()  # this process and its workers preprocess images: utils/memory.py
    if jsonl and json_out:
        raise UsageError("--json and --jsonl are two formats of the same rows; choose one.",
                         "--jsonl streams one object per line; --json prints one document at the end.")
    request = api.PredictRequest(images=tuple(images), weights=weights, device=device_spec(device), top_k=top_k,
                                 invert=invert, preview_dir=save_preview, output=output, tta=tta,
                                 keep_rows=table_rows(json_out, jsonl, output),
                                 min_confidence=min_confidence, exist_ok=exist_ok)
    if jsonl:
        with JsonLinesEvents() as events:
            report = api.predict(request, events)
    else:
        report = run_and_show(api.predict, request, lambda r: render(r, top_k), json_out)
    # With --output the table shows 20 rows: the failed ones are in the file.
    where = "the JSON" if json_out or jsonl else (str(output) if output is not None else "the table")
    if report_failures(report, where):
        raise typer.Exit(EXIT_FAILURE)
    if report.unsure and report.first_unsure is not None:
        first = report.first_unsure
        why = "; ".join(first["notes"]) or f"confidence {100 * first['confidence']:.1f}%"
        sys.stdout.flush()  # the data first, then the summary
        raise UnsureError(f"{report.unsure} of {report.total} prediction(s) below --min-confidence "
                          f"{min_confidence:g} or not a digit; the first, {first['file']}: {why}.")


def table_rows(json_out: bool, jsonl: bool, output: Path | None) -> int | None:
    """How many rows the report keeps: all for --json, none for --jsonl, else what the table shows."""
    if json_out:
        return None
    if jsonl:
        return 0
    return OUTPUT_TABLE_ROWS if output is not None else TABLE_ROWS


class JsonLinesEvents(RichEvents):
    """Progress on stderr as usual; each finished row as one JSON line on stdout, at once."""

    def __init__(self) -> None:
        super().__init__()
        self.stdout = sys.stdout  # the real one, whatever a live display does to sys.stdout later

    def on_result(self, row: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(row) + "\n")
        self.stdout.flush()


def render(report: api.PredictReport, top_k: int) -> None:
    """One row per file: prediction, confidence, top-k and what preprocessing decided, or the error."""
    table = Table(title=f"Predictions ({report.backend} on {report.device})", title_justify="left")
    if report.total > len(report.results):
        where = f"; every row is in {report.output}" if report.output else "; use --jsonl or --output for all of them"
        table.caption = f"the first {len(report.results):,} of {report.total:,} files{where}"
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
        decided = "MNIST form, unchanged" if row["passthrough"] else ("inverted" if row["inverted"] else "")
        notes = "; ".join([n for n in (decided,) if n] + [f"[yellow]{escape(n)}[/]" for n in row["notes"]])
        table.add_row(escape(row["file"]), f"[bold]{row['prediction']}[/]", f"{100 * row['confidence']:.1f}%", tops, notes)
    out.print(table)


def report_failures(report: api.PredictReport, where: str = "the table") -> bool:
    """One line on stderr when files failed: how many, the first one's error and what to do. True if any."""
    first = report.first_failure
    if not report.failed or first is None:
        return False
    hint = IMAGE_HINTS.get(first.get("error_kind", ""), "")
    head = f"{report.failed} of {report.total} file(s) could not be classified"
    head += ": " if report.failed == 1 else f" (see {where}); the first, "
    sys.stdout.flush()  # the data first, then the summary, even when both streams go to one pipe
    error(f"{head}{first['file']}: {first['error']} {hint}".rstrip())
    return True
