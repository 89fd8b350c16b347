"""`lenet bench`: its options, one call into the API, its rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lenet_cli import api
from lenet_cli.cli.console import (
    columns_table,
    key_value_table,
    out,
    run_and_show,
    warn,
)
from lenet_cli.cli.options import (
    DataDirOpt,
    DeviceOpt,
    ExistOkOpt,
    JsonOpt,
    WeightsOpt,
    device_spec,
    examples,
)
from lenet_cli.errors import UsageError

EPILOG = examples(
    "lenet bench  # about 90 s on 2 cores",
    "lenet bench --quick --no-predict-path",
    "lenet bench --serve  # also lenet serve's req/s beside a bare endpoint",
    "lenet bench --full --data-dir ~/mnist  # minutes: also lenet train --epochs 1",
    "lenet bench --backends onnxruntime --repeats 3 --json > bench.json",
)
MEASURE = "What to measure"
ROWS = "Rows beyond inference and training"
TUNING = "Tuning"
PIPELINE_LABELS = {"lenet": "lenet train", "tutorial": "tutorial DataLoader"}


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """'1,64,1024' -> (1, 64, 1024); a UsageError for anything else."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} takes comma-separated integers, got {text!r}.") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{option} needs positive integers, got {text!r}.")
    return values


def bench(
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    batch_sizes: Annotated[str, typer.Option(
        help="Comma-separated inference batch sizes.", rich_help_panel=MEASURE)] = "1,64,1024",
    backends: Annotated[Optional[str], typer.Option(
        help="Comma-separated: torch, torch-compile, onnxruntime.",
        show_default="torch,onnxruntime", rich_help_panel=MEASURE)] = None,
    seconds: Annotated[Optional[float], typer.Option(
        help="Timing budget per backend, batch size and repeat.", min=0.0,
        show_default="0.3", rich_help_panel=MEASURE)] = None,
    repeats: Annotated[Optional[int], typer.Option(
        # The defaults are api.benchmarking's MODES (not imported: `lenet --help` stays light).
        help="Fresh processes per measurement; tables show min / median / max (default 1; 3 with --full).",
        min=1, show_default=False, rich_help_panel=MEASURE)] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="A fast look: smaller budget, 5% of an epoch.", rich_help_panel=MEASURE)] = False,
    full: Annotated[bool, typer.Option(
        "--full", help="Every backend (torch.compile too), whole epochs, 3 repeats and, with MNIST, the 1-epoch "
        "training run: minutes.", rich_help_panel=MEASURE)] = False,
    predict_path: Annotated[bool, typer.Option(
        "--predict-path/--no-predict-path",
        help="Also time preprocessing per image kind and a folder predict against a plain loop.",
        rich_help_panel=ROWS)] = True,
    serve: Annotated[bool, typer.Option(
        "--serve", help="Also load `lenet serve` and a bare FastAPI upload endpoint with the same "
        "client (16 threads) and compare their requests/s (about 20 s more).", rich_help_panel=ROWS)] = False,
    tutorial: Annotated[bool, typer.Option(
        "--tutorial/--no-tutorial", help="Also time a typical tutorial's DataLoader training pipeline.",
        rich_help_panel=ROWS)] = True,
    accuracy: Annotated[Optional[bool], typer.Option(
        "--accuracy/--no-accuracy", help="Also time `lenet train --epochs 1` on MNIST and check it reaches "
        "99.0% test accuracy.", show_default="with --full", rich_help_panel=ROWS)] = None,
    train_batch_size: Annotated[Optional[int], typer.Option(
        help="Batch size of the timed lenet epoch.", min=1, show_default="lenet train's",
        rich_help_panel=TUNING)] = None,
    worker_timeout: Annotated[float, typer.Option(
        help="Seconds each measurement's process may take.", min=0.0, rich_help_panel=TUNING)] = 600.0,
    data_dir: DataDirOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", help="Also write the JSON report to this file.")] = None,
    exist_ok: ExistOkOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure inference, training and the predict path on this machine.

    Every measurement runs in a fresh process, after a warm-up, --repeats times: latency per batch (p50/p90/p99), images/s and the fraction of the measured float32 matmul rate per backend; a training epoch of lenet and of a tutorial pipeline (a fraction of one, scaled, unless --full); the preprocessing ms per image kind; the files/s of a folder predict beside a plain loop; with --serve, the requests/s of `lenet serve` beside a bare FastAPI endpoint.

    The default run takes about 90 s on 2 cores; --full is the longer run with torch.compile, whole epochs and the time `lenet train --epochs 1` takes to 99.0%.
    """
    request = api.BenchRequest(
        weights=weights, device=device_spec(device), batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
        backends=None if backends is None else tuple(b.strip() for b in backends.split(",") if b.strip()),
        seconds=seconds, quick=quick, full=full, predict_path=predict_path, serve=serve,
        output=output, train_batch_size=train_batch_size, tutorial=tutorial, repeats=repeats, data_dir=data_dir,
        accuracy=accuracy, worker_timeout=worker_timeout, exist_ok=exist_ok)
    run_and_show(api.bench, request, render, json_out)


def _us(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _peak(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction:.1%}"


def render(report: api.BenchReport) -> None:
    """Header with the environment, then inference and training tables, the ratio and the 1-epoch run."""
    data: dict[str, Any] = report.data
    repeats = data["config"]["repeats"]
    rows = [(k, str(v)) for k, v in data["environment"].items()]
    rows += [(f"matmul peak ({k})", f"{v:,.0f} GFLOP/s (float32, measured)") for k, v in data["peak_gflops"].items()]
    out.print(key_value_table("Environment", rows))
    each = f"{repeats} repeats, each in a fresh process" if repeats > 1 else "one fresh process each"
    table = columns_table(f"Inference: latency per batch (µs), {each}; images/s at the median p50",
                          ("backend", "batch", "p50 min", "p50 median", "p50 max", "p99 µs", "images/s", "GFLOP/s",
                           "of peak"), first_left=True)
    for r in data["inference"]:
        backend = r["backend"] if r["backend"].startswith("onnxruntime") else f"{r['backend']} ({r['device']})"
        table.add_row(backend, str(r["batch_size"]), _us(r["p50_us_min"]), _us(r["p50_us"]), _us(r["p50_us_max"]),
                      _us(r["p99_us"]), f"{r['images_per_s']:,.0f}", f"{r['gflops']:,.1f}",
                      _peak(r.get("fraction_of_peak")))
    out.print(table)
    epoch = f"{data['epoch_images']:,}"
    fractions = {t["epoch_fraction"] for t in data["training"]}
    if fractions and max(fractions) < 1:
        what = (f"{max(fractions):.0%} of an epoch ({data['training'][0]['images']:,} images), "
                f"scaled to {epoch} images")
    else:
        what = f"one whole epoch of {epoch} images"
    train = columns_table(f"Training: {what}, {each}",
                          ("pipeline", "device", "batch", "dtype", "s/epoch min", "median", "max", "images/s", "GFLOP/s",
                           "of peak", "data"), first_left=True)
    for t in data["training"]:
        train.add_row(PIPELINE_LABELS.get(t["pipeline"], t["pipeline"]), t["device"], str(t["batch_size"]),
                      t.get("precision", "float32"),
                      f"{t['seconds_per_epoch_min']:.2f}", f"{t['seconds_per_epoch']:.2f}",
                      f"{t['seconds_per_epoch_max']:.2f}", f"{t['images_per_s']:,.0f}", f"{t['gflops']:,.1f}",
                      _peak(t.get("fraction_of_peak")), t["data"])
    out.print(train)
    if data.get("training_speedup_vs_tutorial"):
        spread = ""
        if repeats > 1:
            spread = (f" ({data['training_speedup_vs_tutorial_min']:.1f}x to "
                      f"{data['training_speedup_vs_tutorial_max']:.1f}x between the slowest and fastest repeats)")
        out.print(f"lenet's training epoch is {data['training_speedup_vs_tutorial']:.1f}x as fast as the tutorial "
                  f"pipeline's on this machine, medians{spread}.")
    tta = data.get("time_to_accuracy")
    if tta:
        verdict = "reached" if tta["reached"] else "did not reach"
        out.print(f"`{tta['command']}` (seed {tta['seed']}, {tta.get('precision', 'float32')}): "
                  f"{tta['test_accuracy']:.2%} test accuracy after "
                  f"{tta['train_seconds']:.1f} s of training ({tta['wall_seconds']:.1f} s wall, its own process): "
                  f"{verdict} {tta['target']:.1%}.")
    render_predict_path(data)
    render_serve(data)
    for k, v in data.get("skipped", {}).items():
        warn(f"skipped {k.replace('_', ' ')}: {v}")
    if report.output is not None:
        out.print(f"Report written to {report.output}")


def render_predict_path(data: dict[str, Any]) -> None:
    """The preprocessing table and the folder predict's files/s beside the plain loop's."""
    if data.get("preprocess"):
        table = columns_table("Preprocessing: ms per image, one process, median over repeats",
                              ("image kind", "preprocess ms", "min", "max", "with decode ms", "min", "max"),
                              first_left=True)
        for r in data["preprocess"]:
            table.add_row(r["kind"], *(f"{r[f'{f}{s}']:.2f}" for f in ("preprocess_ms", "with_decode_ms")
                                       for s in ("", "_min", "_max")))
        out.print(table)
    folder = data.get("folder_predict", {})
    if "lenet" in folder:
        line = (f"Folder predict ({folder['lenet']['files']:,} files: MNIST-style PNGs and 200x200 photos): "
                f"lenet predict {folder['lenet']['files_per_s']:,.0f} files/s")
        if "plain" in folder:
            line += (f", a plain loop (resize and invert, no preprocessing) {folder['plain']['files_per_s']:,.0f} "
                     f"files/s: {data['folder_predict_vs_plain']:.2f}x")
        out.print(line + ".")


def render_serve(data: dict[str, Any]) -> None:
    """`lenet serve` beside the bare endpoint: req/s, p50/p99 per image kind, and the ratio."""
    if not data.get("serve"):
        return
    table = columns_table(f"Serve: POST /api/predict, {data['serve_clients']} concurrent clients on this machine",
                          ("image kind", "server", "req/s", "p50 ms", "p99 ms", "errors", "of bare"), first_left=True)
    for r in data["serve"]:
        for name, label in (("lenet", "lenet serve"), ("bare", "bare FastAPI")):
            s = r[name]
            ratio = f"{r['ratio']:.2f}x" if name == "lenet" and r["ratio"] is not None else ""
            table.add_row(r["kind"] if name == "lenet" else "", label, f"{s['requests_per_s']:,.0f}",
                          f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}", str(s["errors"]), ratio)
    out.print(table)
