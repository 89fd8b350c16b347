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
    "lenet bench --quick",
    "lenet bench --data-dir ~/mnist  # also times lenet train --epochs 1 to 99.0%",
    "lenet bench --batch-sizes 1,64,1024 --device cuda --output bench.json",
    "lenet bench --backends onnxruntime --repeats 5 --json",
)
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
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated inference batch sizes.")] = "1,64,1024",
    backends: Annotated[str, typer.Option(help="Comma-separated: torch, torch-compile, onnxruntime.")] = (
        "torch,torch-compile,onnxruntime"),
    seconds: Annotated[float, typer.Option(help="Timing budget per backend, batch size and repeat.", min=0.0)] = 1.0,
    repeats: Annotated[Optional[int], typer.Option(
        # The defaults are api.benchmarking's REPEATS and QUICK_REPEATS (not imported: `lenet --help` stays light).
        help="Fresh processes per measurement; tables show min / median / max (default 3; 1 with --quick).",
        min=1, show_default=False)] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A fast look: small budget, no torch.compile, 5% of an "
                                        "epoch (scaled), no 1-epoch training run.")] = False,
    data_dir: DataDirOpt = None,
    accuracy: Annotated[bool, typer.Option("--accuracy/--no-accuracy", help="Also time `lenet train --epochs 1` "
                                           "on MNIST and check it reaches 99.0% test accuracy.")] = True,
    output: Annotated[Optional[Path], typer.Option("--output", help="Also write the JSON report to this file.")] = None,
    train_batch_size: Annotated[Optional[int], typer.Option(
        help="Batch size of the timed lenet epoch.", min=1, show_default="lenet train's")] = None,
    tutorial: Annotated[bool, typer.Option("--tutorial/--no-tutorial",
                                           help="Also time a typical tutorial's DataLoader training pipeline.")] = True,
    worker_timeout: Annotated[float, typer.Option(help="Seconds each measurement's process may take.",
                                                  min=0.0)] = 600.0,
    exist_ok: ExistOkOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Measure inference latency and throughput per backend, and training speed, on this machine.

    Every measurement runs in a fresh process (no backend's threads or compiled code
    affect another), after a warm-up, --repeats times: p50/p90/p99 latency per batch,
    images/s, GFLOP/s and the fraction of the machine's measured float32 matmul rate;
    a whole training epoch of lenet and of the tutorial pipeline; with MNIST at hand,
    the time `lenet train --epochs 1` takes and the test accuracy it reaches.
    """
    request = api.BenchRequest(
        weights=weights, device=device_spec(device), batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()), seconds=seconds, quick=quick,
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
    for k, v in data.get("skipped", {}).items():
        warn(f"skipped {k.replace('_', ' ')}: {v}")
    if report.output is not None:
        out.print(f"Report written to {report.output}")
