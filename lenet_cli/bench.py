"""Timing harness for `lenet bench`.

Measures on the machine it runs on, side by side:
* inference latency (p50/p90/p99 per batch) and throughput for each backend and batch size:
  PyTorch eager, PyTorch compiled, onnxruntime on the CPU, and onnxruntime on CUDA;
* training throughput of lenet's real training step, and of the pipeline LeNet tutorials
  use (torchvision-style dataset with per-sample transforms, DataLoader, batch 64);
* the machine's float32 matrix-multiply rate, so every figure can be read as a fraction
  of what the hardware does on its best-suited work.

Every measurement warms up first, then repeats for a time budget and reports medians and
percentiles. Timing code synchronises CUDA before reading the clock. No figure here is
hard-coded: they all come from the run.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from lenet_cli import __version__
from lenet_cli.errors import first_line
from lenet_cli.export import export_onnx
from lenet_cli.onnx_io import make_session
from lenet_cli.recipe import (
    build_optimizer,
    build_schedule,
    keep_freed_memory,
    train_step,
)
from lenet_cli.records import TrainConfig
from lenet_cli.timing import time_calls, time_steps
from lenet_cli.tutorial import TUTORIAL_BATCH, time_tutorial_steps
from lenet_cli.weights import load_model

if TYPE_CHECKING:  # pragma: no cover
    import torch

# LeNet-5 forward multiply-accumulates per image (modern preset; classic is within 1%):
# C1 6*25*28*28 + C3 16*6*25*10*10 + C5 400*120 + F6 120*84 + out 84*10.
MACS_PER_IMAGE = 416_520
C1_MACS = 6 * 25 * 28 * 28  # the first layer needs no gradient for its input (the image)
# A training step: the forward pass, the weight gradients (same MACs), the input gradients (all but C1).
TRAIN_FLOPS_PER_IMAGE = 2 * (3 * MACS_PER_IMAGE - C1_MACS)
TRAIN_EPOCH_IMAGES = 55_000  # MNIST's 60,000 training images minus the default 5,000 held out


@dataclass(frozen=True)
class BenchConfig:
    """What `lenet bench` measures."""

    batch_sizes: tuple[int, ...] = (1, 64, 1024)
    backends: tuple[str, ...] = ("torch", "torch-compile", "onnxruntime")
    min_seconds: float = 1.0  # time budget per (backend, batch size), after warm-up
    warmup: int = 10
    train_steps: int = 40
    train_batch_size: int = 256  # lenet train's default
    tutorial: bool = True  # also time the tutorial pipeline
    tutorial_steps: int = 60


@dataclass(frozen=True)
class InferenceResult:
    """Latency percentiles (microseconds per batch) and throughput for one backend and batch size."""

    backend: str
    device: str
    batch_size: int
    p50_us: float
    p90_us: float
    p99_us: float
    images_per_s: float
    runs: int
    gflops: float = 0.0  # 2 * MACs * images/s
    fraction_of_peak: float | None = None  # gflops / the measured matmul rate


@dataclass(frozen=True)
class TrainingResult:
    """Throughput of one training pipeline (forward, backward, optimiser, data handling)."""

    pipeline: str
    device: str
    batch_size: int
    images_per_s: float
    seconds_per_epoch: float  # for TRAIN_EPOCH_IMAGES images
    steps: int
    gflops: float = 0.0
    fraction_of_peak: float | None = None


@dataclass
class Plan:
    """The list of measurements, so a progress bar knows its length."""

    steps: list[str] = field(default_factory=list)
    done: int = 0


def environment(device: "Any") -> dict[str, Any]:
    """The machine and library versions, for the report header."""
    import onnxruntime as ort
    import torch

    env = {
        "lenet_cli": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ", ".join(ort.get_available_providers()),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summarize_times(backend: str, device: str, batch_size: int, times: list[float],
                    peak_gflops: float | None = None) -> InferenceResult:
    """Percentiles and throughput (from the median) of per-call times."""
    arr = np.asarray(times)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    ips = batch_size / float(p50)
    gflops = ips * 2 * MACS_PER_IMAGE / 1e9
    frac = gflops / peak_gflops if peak_gflops else None
    return InferenceResult(backend, device, batch_size, p50 * 1e6, p90 * 1e6, p99 * 1e6, ips, len(times), gflops, frac)


def matmul_peak_gflops(device: "Any", seconds: float = 0.3) -> float:
    """float32 matrix-multiply rate of the device: the practical ceiling for dense arithmetic."""
    import torch

    n = 2048 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = time_calls(lambda: torch.mm(a, b), warmup=3, min_seconds=seconds, sync=sync, max_runs=200)
    return 2 * n**3 / float(np.median(times)) / 1e9


def plan(cfg: BenchConfig, cuda: bool) -> Plan:
    """The measurements `run_bench` will make, in order."""
    p = Plan()
    p.steps.append("matmul peak")
    p.steps.append("lenet training step")
    if cfg.tutorial:
        p.steps.append("tutorial training pipeline")
    for backend in measurement_order(cfg.backends):
        for variant in _variants(backend, cuda):
            p.steps += [f"{variant} batch {bs}" for bs in cfg.batch_sizes]
    return p


def measurement_order(backends: tuple[str, ...]) -> list[str]:
    """torch.compile last: after it has run, everything measured in the same process is slower
    (onnxruntime's batch-1 latency went from 37 to 64 µs on the 2-core machine), so it goes
    after the training steps and the other backends."""
    return sorted(backends, key=lambda b: b == "torch-compile")


def _variants(backend: str, cuda: bool) -> list[str]:
    if backend == "onnxruntime":
        # One intra-op thread has the lowest batch-1 latency (no thread hand-offs); all cores
        # have the highest large-batch throughput. Both are shown, so users can pick.
        names = ["onnxruntime-cpu", "onnxruntime-cpu-1t"] if (os.cpu_count() or 1) > 1 else ["onnxruntime-cpu"]
        return names + (["onnxruntime-cuda"] if cuda else [])
    return [backend]


def run_bench(weights: Path, cfg: BenchConfig, device: "torch.device",
              progress: Callable[[str, int, int], None] = lambda *_: None) -> dict[str, Any]:
    """Run every measurement on `device` and return a JSON-ready report. `progress(label, done, total)` after each."""
    import torch

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    steps = plan(cfg, cuda)
    total = len(steps.steps)

    def tick(label: str) -> None:  # `label` has finished; show the one that runs next
        steps.done += 1
        progress(steps.steps[steps.done] if steps.done < total else "done", steps.done, total)

    progress(steps.steps[0], 0, total)
    peak = {"cpu": matmul_peak_gflops(torch.device("cpu"))}
    if cuda:
        peak["cuda"] = matmul_peak_gflops(device)
    tick("matmul peak")

    model, info = load_model(weights, device)
    rng = np.random.default_rng(0)
    results: list[InferenceResult] = []
    skipped: dict[str, str] = {}
    device_peak = peak["cuda" if cuda else "cpu"]
    training = [bench_training(info.config.preset, device, cfg, device_peak)]
    tick("lenet training step")
    if cfg.tutorial:
        try:
            training.append(bench_tutorial(device, cfg, device_peak))
        except Exception as exc:  # torchvision missing or broken: the rest of the report still stands
            skipped["tutorial"] = first_line(exc, 200)
        tick("tutorial training pipeline")

    for backend in measurement_order(cfg.backends):
        for variant in _variants(backend, cuda):
            try:
                runner_for, dev_name = _runner(variant, model, weights, device, rng)
            except Exception as exc:  # a backend missing on this machine is reported, not fatal
                skipped[variant] = first_line(exc, 200)
                for bs in cfg.batch_sizes:
                    tick(f"{variant} batch {bs}")
                continue
            for bs in cfg.batch_sizes:
                try:
                    times = time_calls(runner_for(bs), cfg.warmup, cfg.min_seconds,
                                       sync if dev_name.startswith("cuda") else (lambda: None))
                    results.append(summarize_times(variant, dev_name, bs, times,
                                                   peak["cuda" if dev_name.startswith("cuda") else "cpu"]))
                except Exception as exc:
                    skipped[f"{variant}@{bs}"] = first_line(exc, 200)
                tick(f"{variant} batch {bs}")

    speedup = None
    if len(training) == 2 and training[1].images_per_s > 0:
        speedup = training[0].images_per_s / training[1].images_per_s
    return {
        "environment": environment(device),
        "weights": str(weights),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "peak_gflops": peak,
        "macs_per_image": MACS_PER_IMAGE,
        "inference": [asdict(r) for r in results],
        "training": [asdict(t) for t in training],
        "training_speedup_vs_tutorial": speedup,
        "skipped": skipped,
    }


def _runner(variant: str, model, weights: Path, device, rng) -> tuple[Callable[[int], Callable[[], Any]], str]:
    """A factory of timed calls for one backend: batch size -> zero-argument call."""
    import torch

    if variant in ("torch", "torch-compile"):
        from lenet_cli.kernels import speed_up  # kernels.py imports torch

        net = speed_up(model, device)  # what `lenet eval` and `lenet predict --weights X.safetensors` run
        if variant == "torch-compile":
            import logging

            # Inductor logs a warning about CUDA_HOME on machines without CUDA; not the user's concern.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            net = torch.compile(net, dynamic=False)

        def make(bs: int):
            x = torch.from_numpy(rng.integers(0, 256, (bs, 1, 28, 28)).astype(np.float32)).to(device)

            def call():
                with torch.inference_mode():
                    net(x)

            return call

        return make, str(device)
    if variant.startswith("onnxruntime"):
        on_cuda = variant == "onnxruntime-cuda"
        images = rng.integers(0, 256, (256, 28, 28)).astype(np.uint8)
        # The session holds the model in memory, so the exported file can go at once.
        with tempfile.TemporaryDirectory(prefix="lenet-bench-") as folder:
            tmp = Path(folder) / "model.onnx"
            export_onnx(weights, tmp, images=images)
            session = make_session(tmp, str(device) if on_cuda else "cpu", 1 if variant.endswith("-1t") else None)
        name = session.get_inputs()[0].name

        def make_ort(bs: int):
            x = rng.integers(0, 256, (bs, 1, 28, 28)).astype(np.float32)
            return lambda: session.run(None, {name: x})

        return make_ort, "cuda" if on_cuda else "cpu"
    raise ValueError(f"unknown backend {variant!r}")


def _train_result(pipeline: str, device, bs: int, images: int, seconds: float, steps: int,
                  peak: float | None) -> TrainingResult:
    ips = images / seconds
    gflops = ips * TRAIN_FLOPS_PER_IMAGE / 1e9
    return TrainingResult(pipeline, str(device), bs, ips, TRAIN_EPOCH_IMAGES / ips, steps, gflops,
                          gflops / peak if peak else None)


def bench_training(preset: str, device: "torch.device", cfg: BenchConfig, peak: float | None = None) -> TrainingResult:
    """Images/s of lenet's training step, `recipe.train_step` itself, on random MNIST-shaped batches."""
    import torch

    from lenet_cli.kernels import speed_up
    from lenet_cli.model import build_model

    bs = cfg.train_batch_size
    if device.type == "cpu":
        keep_freed_memory()
    tcfg = TrainConfig(preset=preset, batch_size=bs)
    model = build_model(preset).to(device).train()
    net = speed_up(model, device)  # what `lenet train` runs on this device
    opt = build_optimizer(model, tcfg, device)
    sched = build_schedule(opt, tcfg, 1000)
    gen = torch.Generator().manual_seed(0)
    x_all = torch.randint(0, 256, (bs * 8, 28, 28), dtype=torch.uint8, generator=gen).to(device)
    y_all = torch.randint(0, 10, (bs * 8,), generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    state = {"i": 0}

    def step() -> None:
        i = state["i"] % 8
        state["i"] += 1
        train_step(net, opt, sched, x_all[i * bs : (i + 1) * bs], y_all[i * bs : (i + 1) * bs], tcfg, gen)

    seconds = time_steps(step, cfg.train_steps, sync)
    return _train_result("lenet", device, bs, cfg.train_steps * bs, seconds, cfg.train_steps, peak)


def bench_tutorial(device: "torch.device", cfg: BenchConfig, peak: float | None = None) -> TrainingResult:
    """Images/s of the tutorial pipeline (tutorial.py) on random MNIST-shaped images."""
    seconds = time_tutorial_steps(device, cfg.tutorial_steps)
    return _train_result("tutorial", device, TUTORIAL_BATCH, cfg.tutorial_steps * TUTORIAL_BATCH, seconds,
                         cfg.tutorial_steps, peak)
