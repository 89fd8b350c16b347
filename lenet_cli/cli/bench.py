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
from lenet_cli.cli.options import DeviceOpt, JsonOpt, WeightsOpt, device_spec, examples
from lenet_cli.errors import UsageError

EPILOG = examples(
    "lenet bench --quick",
    "lenet bench --batch-sizes 1,64,1024 --device cuda --output bench.json",
    "lenet bench --backends onnxruntime --json",
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
    seconds: Annotated[float, typer.Option(help="Timing budget per backend and batch size.", min=0.0)] = 1.0,
    quick: Annotated[bool, typer.Option("--quick", help="A fast look: small budget, no torch.compile.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", help="Also write the JSON report to this file.")] = None,
    train_batch_size: Annotated[Optional[int], typer.Option(
        help="Batch size of the timed training step. [default: lenet train's]", min=1, show_default=False)] = None,
    tutorial: Annotated[bool, typer.Option("--tutorial/--no-tutorial",
                                           help="Also time a typical tutorial's DataLoader training pipeline.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Measure inference latency and throughput per backend, and training speed, on this machine.

    Every figure is measured in this run, after a warm-up: p50/p90/p99 latency per batch,
    images/s, GFLOP/s and the fraction of the machine's measured float32 matmul rate.
    """
    request = api.BenchRequest(
        weights=weights, device=device_spec(device), batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()), seconds=seconds, quick=quick,
        output=output, train_batch_size=train_batch_size, tutorial=tutorial)
    run_and_show(api.bench, request, render, json_out)


def _us(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _peak(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction:.1%}"


def render(report: api.BenchReport) -> None:
    """Header with the environment, then inference and training tables."""
    data: dict[str, Any] = report.data
    rows = [(k, str(v)) for k, v in data["environment"].items()]
    rows += [(f"matmul peak ({k})", f"{v:,.0f} GFLOP/s (float32, measured)") for k, v in data["peak_gflops"].items()]
    out.print(key_value_table("Environment", rows))
    table = columns_table("Inference: latency per batch (µs), throughput at the median",
                          ("backend", "batch", "p50 µs", "p90 µs", "p99 µs", "images/s", "GFLOP/s", "of peak"),
                          first_left=True)
    for r in data["inference"]:
        backend = r["backend"] if r["backend"].startswith("onnxruntime") else f"{r['backend']} ({r['device']})"
        table.add_row(backend, str(r["batch_size"]), _us(r["p50_us"]), _us(r["p90_us"]), _us(r["p99_us"]),
                      f"{r['images_per_s']:,.0f}", f"{r['gflops']:,.1f}", _peak(r.get("fraction_of_peak")))
    out.print(table)
    train = columns_table("Training: full steps, epoch = 55,000 images",
                          ("pipeline", "device", "batch", "images/s", "s/epoch", "GFLOP/s", "of peak"), first_left=True)
    for t in data["training"]:
        train.add_row(PIPELINE_LABELS.get(t["pipeline"], t["pipeline"]), t["device"], str(t["batch_size"]),
                      f"{t['images_per_s']:,.0f}", f"{t['seconds_per_epoch']:.2f}", f"{t['gflops']:,.1f}",
                      _peak(t.get("fraction_of_peak")))
    out.print(train)
    if data.get("training_speedup_vs_tutorial"):
        out.print(f"lenet's training step is {data['training_speedup_vs_tutorial']:.1f}x the tutorial pipeline's "
                  "throughput on this machine.")
    for k, v in data.get("skipped", {}).items():
        warn(f"skipped {k}: {v}")
    if report.output is not None:
        out.print(f"Report written to {report.output}")
