"""Timing harness for `lenet bench`: inference latency/throughput per backend and batch size,
and training throughput of the real training step.

Every measurement warms up first, repeats, and reports medians and percentiles.
Timing code synchronises CUDA before reading the clock.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lenet_cli import __version__
from lenet_cli.errors import first_line

MACS_PER_IMAGE = 416_520  # LeNet-5 forward multiply-accumulates per image (modern preset)


@dataclass(frozen=True)
class BenchConfig:
    """What `lenet bench` measures."""

    batch_sizes: tuple[int, ...] = (1, 64, 1024)
    device: str = "auto"
    backends: tuple[str, ...] = ("torch", "torch-compile", "onnxruntime")
    min_seconds: float = 1.0  # time budget per (backend, batch size)
    warmup: int = 10
    train_steps: int = 50
    train_batch_size: int = 128
    quick: bool = False


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


@dataclass(frozen=True)
class TrainingResult:
    """Throughput of the real training step (forward, backward, optimiser, augmentation)."""

    device: str
    batch_size: int
    images_per_s: float
    seconds_per_epoch: float
    steps: int


def environment(device: str) -> dict[str, Any]:
    """The machine and library versions, for the report header."""
    import os

    import onnxruntime as ort
    import torch

    env = {
        "lenet_cli": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def time_calls(fn: Callable[[], Any], warmup: int, min_seconds: float, sync: Callable[[], None] = lambda: None,
               max_runs: int = 100_000) -> list[float]:
    """Call fn repeatedly; per-call wall times in seconds after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while (time.perf_counter() - start < min_seconds or len(times) < 5) and len(times) < max_runs:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def summarize_times(backend: str, device: str, batch_size: int, times: list[float]) -> InferenceResult:
    """Percentiles and throughput from per-call times."""
    arr = np.asarray(times)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return InferenceResult(backend, device, batch_size, p50 * 1e6, p90 * 1e6, p99 * 1e6, batch_size / float(p50), len(times))


def run_bench(weights: Path, cfg: BenchConfig, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run every available measurement and return a JSON-ready report."""
    import torch

    from lenet_cli.devices import resolve_device
    from lenet_cli.weights import load_model

    device = resolve_device(cfg.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model, info = load_model(weights, device)
    rng = np.random.default_rng(0)
    results: list[InferenceResult] = []
    skipped: dict[str, str] = {}

    for backend in cfg.backends:
        runner_for: Callable[[int], Callable[[], Any]] | None = None

        def torch_runner(net):
            def make(bs):
                x = torch.from_numpy(rng.integers(0, 256, (bs, 1, 28, 28)).astype(np.float32)).to(device)

                def call():
                    with torch.inference_mode():
                        net(x)

                return call

            return make

        if backend == "torch":
            runner_for = torch_runner(model)
        elif backend == "torch-compile":
            try:
                runner_for = torch_runner(torch.compile(model, dynamic=False))
            except Exception as exc:  # pragma: no cover - depends on platform
                skipped[backend] = f"torch.compile unavailable: {exc}"
                continue
        elif backend == "onnxruntime":
            from lenet_cli.onnx_io import export_onnx, make_session

            try:
                images = rng.integers(0, 256, (256, 28, 28)).astype(np.uint8)
                # The session holds the model in memory, so the exported file can go at once.
                with tempfile.TemporaryDirectory(prefix="lenet-bench-") as folder:
                    tmp = Path(folder) / "model.onnx"
                    export_onnx(weights, tmp, images=images)
                    session = make_session(tmp, str(device) if device.type == "cuda" else "cpu")
            except Exception as exc:
                skipped[backend] = first_line(exc)
                continue
            name = session.get_inputs()[0].name
            def runner_for(bs, session=session, name=name):
                x = rng.integers(0, 256, (bs, 1, 28, 28)).astype(np.float32)
                return lambda: session.run(None, {name: x})
        else:
            skipped[backend] = "unknown backend"
            continue
        dev_name = str(device) if backend != "onnxruntime" else ("cuda" if device.type == "cuda" else "cpu")
        for bs in cfg.batch_sizes:
            progress(f"inference: {backend} batch {bs}")
            try:
                times = time_calls(runner_for(bs), cfg.warmup, cfg.min_seconds, sync)
            except Exception as exc:
                skipped[f"{backend}@{bs}"] = first_line(exc, 200)
                continue
            results.append(summarize_times(backend, dev_name, bs, times))

    progress("training step")
    training = bench_training(info.config.preset, device, cfg)
    return {
        "environment": environment(str(device)),
        "weights": str(weights),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "inference": [asdict(r) for r in results],
        "training": asdict(training),
        "skipped": skipped,
        "macs_per_image": MACS_PER_IMAGE,
    }


def bench_training(preset: str, device, cfg: BenchConfig) -> TrainingResult:
    """Images/s of the real training step on random MNIST-shaped data."""
    import torch
    import torch.nn.functional as F

    from lenet_cli.model import build_model
    from lenet_cli.train import TrainConfig, _optimizer, augment_batch

    tcfg = TrainConfig(preset=preset, batch_size=cfg.train_batch_size)
    model = build_model(preset).to(device).train()
    opt = _optimizer(model, tcfg)
    gen = torch.Generator().manual_seed(0)
    bs = cfg.train_batch_size
    x_all = torch.randint(0, 256, (bs * 8, 28, 28), dtype=torch.uint8, generator=gen).to(device)
    y_all = torch.randint(0, 10, (bs * 8,), generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    state = {"i": 0}

    def step() -> None:
        i = state["i"] % 8
        state["i"] += 1
        x = augment_batch(x_all[i * bs : (i + 1) * bs].unsqueeze(1).float(), tcfg, gen)
        loss = F.cross_entropy(model(x), y_all[i * bs : (i + 1) * bs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(cfg.train_steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    ips = cfg.train_steps * bs / dt
    return TrainingResult(str(device), bs, ips, 55_000 / ips, cfg.train_steps)
