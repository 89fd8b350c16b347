"""`lenet bench`: every backend and training, measured on this machine, each in a fresh process."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenet_cli.bench.harness import run_bench
from lenet_cli.bench.plan import ACCURACY_TARGET, BenchConfig
from lenet_cli.data.mnist import ensure_mnist, missing_files, resolve_data_dir
from lenet_cli.devices import AUTO, DeviceSpec, resolve_device
from lenet_cli.errors import UsageError
from lenet_cli.events import Events
from lenet_cli.model.weights import resolve_weights_path
from lenet_cli.utils.fileio import atomic_write_text, ensure_dir, refuse_existing
from lenet_cli.utils.serialization import json_safe

BENCH_BACKENDS = ("torch", "torch-compile", "onnxruntime")
FAST_BACKENDS = ("torch", "onnxruntime")  # torch.compile alone takes a minute to compile: --full only


@dataclass(frozen=True)
class BenchMode:
    """The defaults of one kind of run: `lenet bench --quick`, `lenet bench`, `lenet bench --full`."""

    backends: tuple[str, ...]
    seconds: float  # timing budget per backend, batch size and repeat
    repeats: int
    epoch_fraction: float  # of a training epoch, timed and scaled
    warmup: int
    accuracy: bool  # the 1-epoch time-to-accuracy run


# The default fits in about 90 s on a 2-core machine (docs/performance.md); --full is the run it replaced.
MODES = {"quick": BenchMode(FAST_BACKENDS, 0.2, 1, 0.05, 3, False),
         "default": BenchMode(FAST_BACKENDS, 0.3, 1, 0.1, 5, False),
         "full": BenchMode(BENCH_BACKENDS, 1.0, 3, 1.0, 10, True)}
REPEATS, QUICK_REPEATS = MODES["full"].repeats, MODES["quick"].repeats
QUICK_EPOCH_FRACTION = MODES["quick"].epoch_fraction


@dataclass(frozen=True)
class BenchRequest:
    """`lenet bench`: what to measure, for how long, how often, and where the JSON goes."""

    weights: Path | None = None
    device: DeviceSpec = AUTO
    batch_sizes: tuple[int, ...] = (1, 64, 1024)
    backends: tuple[str, ...] | None = None  # None: the mode's
    seconds: float | None = None  # None: the mode's
    quick: bool = False  # a fast look: small budget, no torch.compile, a fraction of an epoch, no 1-epoch run
    full: bool = False  # every backend, whole epochs, 3 repeats, the 1-epoch run: minutes
    predict_path: bool = True  # preprocessing per image kind and a folder predict against a plain loop
    serve: bool = False  # req/s of `lenet serve` beside a bare FastAPI upload endpoint
    output: Path | None = None
    train_batch_size: int | None = None  # None: lenet train's
    tutorial: bool = True
    repeats: int | None = None  # None: REPEATS (QUICK_REPEATS with quick)
    data_dir: Path | None = None  # None: the default MNIST folder, where it holds MNIST
    accuracy: bool | None = None  # the 1-epoch time-to-accuracy run; None: with --full only (never with quick)
    exist_ok: bool = False  # may replace an existing output file
    worker_timeout: float = 600.0


@dataclass
class BenchReport:
    """The measurements (`data`, as JSON) and where they were written."""

    data: dict[str, Any]
    output: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `lenet bench --json`."""
        return self.data | ({"output": str(self.output)} if self.output is not None else {})


def _mnist_dir(request: BenchRequest) -> Path | None:
    """The MNIST folder the training rows and the 1-epoch run use, or None for random images.

    A --data-dir given must hold MNIST (bench never downloads); the default folder is used where it does.
    """
    if request.data_dir is not None:
        return ensure_mnist(resolve_data_dir(request.data_dir), allow_download=False)
    default = resolve_data_dir(None)
    return default if default.is_dir() and not missing_files(default) else None


def bench_mode(request: BenchRequest) -> BenchMode:
    """The request's mode; a UsageError for --quick with --full."""
    if request.quick and request.full:
        raise UsageError("--quick and --full ask for opposite runs; choose one.")
    return MODES["quick" if request.quick else "full" if request.full else "default"]


def bench_config(request: BenchRequest, data_dir: Path | None = None) -> BenchConfig:
    """The measurement plan for a request; UsageError for settings that cannot work."""
    mode = bench_mode(request)
    backends = mode.backends if request.backends is None else request.backends
    seconds = mode.seconds if request.seconds is None else request.seconds
    if not backends:
        raise UsageError("--backends is empty.", f"Choose from: {', '.join(sorted(BENCH_BACKENDS))}.")
    if not (math.isfinite(seconds) and 0 <= seconds <= 600):
        raise UsageError(f"--seconds must be between 0 and 600, got {seconds}.")
    unknown = set(backends) - set(BENCH_BACKENDS)
    if unknown:
        raise UsageError(f"Unknown backend(s): {', '.join(sorted(unknown))}.",
                         f"Choose from: {', '.join(sorted(BENCH_BACKENDS))}.")
    if request.repeats is not None and not 1 <= request.repeats <= 100:
        raise UsageError(f"--repeats must be between 1 and 100, got {request.repeats}.")
    if not (math.isfinite(request.worker_timeout) and request.worker_timeout > 0):
        raise UsageError(f"--worker-timeout must be a positive number of seconds, got {request.worker_timeout}.")
    if request.quick:
        backends = tuple(b for b in backends if b != "torch-compile")
        seconds = min(seconds, mode.seconds)
    return BenchConfig(batch_sizes=request.batch_sizes, backends=backends, min_seconds=seconds,
                       warmup=mode.warmup, repeats=request.repeats or mode.repeats,
                       train_batch_size=request.train_batch_size, epoch_fraction=mode.epoch_fraction,
                       tutorial=request.tutorial, accuracy=_wants_accuracy(request, mode),
                       data_dir=str(data_dir) if data_dir is not None else None,
                       worker_timeout=request.worker_timeout, predict_path=request.predict_path,
                       serve=request.serve)


def _wants_accuracy(request: BenchRequest, mode: BenchMode) -> bool:
    return mode.accuracy if request.accuracy is None else request.accuracy and not request.quick


def _accuracy_skip(request: BenchRequest, data_dir: Path | None) -> str | None:
    """Why the 1-epoch run is not made, or None when it is."""
    if request.quick:
        return "not with --quick (it trains a whole epoch)."
    if data_dir is None:
        return (f"no MNIST in {resolve_data_dir(None)}; pass --data-dir with the four MNIST files "
                f"to time `lenet train --epochs 1` to {ACCURACY_TARGET:.1%} (bench never downloads).")
    return None


def bench(request: BenchRequest, events: Events | None = None) -> BenchReport:
    """Measure every backend and training on this machine, each in a fresh process; optionally save the JSON."""
    events = events or Events()
    bench_config(request)  # usage errors before anything is read
    data_dir = _mnist_dir(request)
    cfg = bench_config(request, data_dir)
    path = resolve_weights_path(request.weights)
    if request.output is not None:
        ensure_dir(request.output.parent)  # an unwritable --output fails before the measurements, not after
        refuse_existing(request.output, "--output", request.exist_ok)
    device = resolve_device(request.device)
    data = run_bench(path, cfg, device, accuracy_skip=_accuracy_skip(request, data_dir),
                     progress=lambda label, done, total: events.progress(f"Benchmarking {label}", done, total))
    config = data["config"]  # in the order the report has always had
    data["config"] = ({"batch_sizes": config.pop("batch_sizes"), "device": str(request.device)} | config
                      | {"quick": request.quick, "full": request.full})
    if request.output is not None:
        atomic_write_text(request.output, json.dumps(json_safe(data), indent=2))
    return BenchReport(data, request.output)
