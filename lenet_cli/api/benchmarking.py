"""`lenet bench`: every backend and the training step, measured on this machine."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenet_cli.bench import BenchConfig, run_bench
from lenet_cli.devices import AUTO, DeviceSpec, resolve_device
from lenet_cli.errors import UsageError
from lenet_cli.events import Events
from lenet_cli.fileio import atomic_write_text, ensure_dir
from lenet_cli.records import TrainConfig
from lenet_cli.weights import resolve_weights_path

BENCH_BACKENDS = ("torch", "torch-compile", "onnxruntime")


@dataclass(frozen=True)
class BenchRequest:
    """`lenet bench`: what to measure, for how long, and where the JSON goes."""

    weights: Path | None = None
    device: DeviceSpec = AUTO
    batch_sizes: tuple[int, ...] = (1, 64, 1024)
    backends: tuple[str, ...] = BENCH_BACKENDS
    seconds: float = 1.0
    quick: bool = False  # a fast look: small budget, no torch.compile
    output: Path | None = None
    train_batch_size: int | None = None  # None: lenet train's
    tutorial: bool = True


@dataclass
class BenchReport:
    """The measurements (`data`, as JSON) and where they were written."""

    data: dict[str, Any]
    output: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `lenet bench --json`."""
        return self.data | ({"output": str(self.output)} if self.output is not None else {})


def bench_config(request: BenchRequest) -> BenchConfig:
    """The measurement plan for a request; UsageError for settings that cannot work."""
    backends, seconds = request.backends, request.seconds
    if not backends:
        raise UsageError("--backends is empty.", f"Choose from: {', '.join(sorted(BENCH_BACKENDS))}.")
    if not (math.isfinite(seconds) and 0 <= seconds <= 600):
        raise UsageError(f"--seconds must be between 0 and 600, got {seconds}.")
    unknown = set(backends) - set(BENCH_BACKENDS)
    if unknown:
        raise UsageError(f"Unknown backend(s): {', '.join(sorted(unknown))}.",
                         f"Choose from: {', '.join(sorted(BENCH_BACKENDS))}.")
    if request.quick:
        backends = tuple(b for b in backends if b != "torch-compile")
        seconds = min(seconds, 0.2)
    return BenchConfig(batch_sizes=request.batch_sizes, backends=backends, min_seconds=seconds,
                       warmup=3 if request.quick else 10, train_steps=5 if request.quick else 40,
                       train_batch_size=request.train_batch_size or TrainConfig().batch_size,
                       tutorial=request.tutorial, tutorial_steps=5 if request.quick else 60)


def bench(request: BenchRequest, events: Events | None = None) -> BenchReport:
    """Measure every backend and the training step on this machine; optionally save the JSON report."""
    events = events or Events()
    cfg = bench_config(request)
    path = resolve_weights_path(request.weights)
    if request.output is not None:
        ensure_dir(request.output.parent)  # an unwritable --output fails before the measurements, not after
    device = resolve_device(request.device)
    data = run_bench(path, cfg, device, progress=lambda label, done, total: events.progress(f"Benchmarking {label}", done, total))
    config = data["config"]  # in the order the report has always had
    data["config"] = ({"batch_sizes": config.pop("batch_sizes"), "device": str(request.device)} | config
                      | {"quick": request.quick})
    if request.output is not None:
        atomic_write_text(request.output, json.dumps(data, indent=2))
    return BenchReport(data, request.output)
