"""Timing harness for `lenet bench`: plans the measurements, runs each in a fresh process, summarises.

Measures on the machine it runs on, side by side:
* inference latency (p50/p90/p99 per batch) and throughput for each backend and batch size:
  PyTorch eager, PyTorch compiled, onnxruntime on the CPU (all cores, one thread), and
  onnxruntime on CUDA;
* one whole training epoch of lenet (its real `recipe.train_step`, default TrainConfig) and of
  the pipeline LeNet tutorials use (tutorial.py), and the ratio between them;
* the time `lenet train --epochs 1` takes to train, and whether its test accuracy reaches 99.0%;
* the predict path: preprocessing ms per image kind, and a folder's files/s against a plain loop;
* the machine's float32 matrix-multiply rate, so every figure can be read as a fraction
  of what the hardware does on its best-suited work.

Each measurement runs in a process of its own (bench_worker.py; the 1-epoch run is `lenet
train` itself), so that no backend's thread pool, compiled code or allocator state changes
the figures of another. Each is repeated `repeats` times, every repeat in a fresh process,
and reported as min / median / max: on a shared machine the spread is part of the answer.
Repeats go round-robin (every measurement once, then every one again), so a slow spell of the
machine spreads over all rows instead of landing on one. No figure here is hard-coded.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from lenet_cli.bench.plan import ACCURACY_TARGET, BenchConfig, plan
from lenet_cli.bench.processes import run_worker, time_to_accuracy
from lenet_cli.bench.report import build_report
from lenet_cli.errors import BenchError
from lenet_cli.export.exporter import export_onnx
from lenet_cli.model.weights import load_model

if TYPE_CHECKING:  # pragma: no cover
    import torch


def run_bench(weights: Path, cfg: BenchConfig, device: "torch.device",
              progress: Callable[[str, int, int], None] = lambda *_: None,
              accuracy_skip: str | None = None) -> dict[str, Any]:
    """Run every measurement on `device`, each in a fresh process, and return a JSON-ready report.

    `progress(label, done, total)` before each process starts (label: the one that starts) and at
    the end. `accuracy_skip`: why the 1-epoch run is not made (None: it is made, on cfg.data_dir).
    """
    dev = str(device)
    load_model(weights, "cpu")  # a bad weights file: one error now, not one per worker minutes later
    skipped: dict[str, str] = {}
    answers: dict[str, list[dict[str, Any]]] = {}
    run_accuracy = cfg.accuracy and accuracy_skip is None and cfg.data_dir is not None
    with tempfile.TemporaryDirectory(prefix="lenet-bench-") as folder:
        onnx = None
        if cfg.predict_path or cfg.serve or any(b.startswith("onnxruntime") for b in cfg.backends):
            # Exported once here, so that onnxruntime's processes import onnxruntime alone (not torch).
            onnx = Path(folder) / "model.onnx"
            images = np.random.default_rng(0).integers(0, 256, (256, 28, 28)).astype(np.uint8)
            try:
                export_onnx(weights, onnx, images=images)
            except Exception as exc:  # the torch rows still stand
                skipped["onnxruntime"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                cfg = _without_onnxruntime(cfg)
        mix = None
        if cfg.predict_path and onnx is not None:
            from lenet_cli.bench.predict_path import write_mix

            mix = Path(folder) / "mix"
            write_mix(mix, {"data_dir": cfg.data_dir, "mnist_files": cfg.mix_files[0], "photo_files": cfg.mix_files[1]})
        tasks = plan(cfg, dev, weights, onnx, mix)
        total = len(tasks) + (1 if run_accuracy else 0)
        for done, task in enumerate(tasks):
            progress(task.label, done, total)
            if task.key in skipped:  # failed in an earlier repeat: its row is gone already
                continue
            try:
                answers.setdefault(task.key, []).append(run_worker(task.job, cfg.worker_timeout))
            except BenchError as exc:
                if task.required:
                    raise BenchError(f"The {task.label} measurement failed: {exc.message}",
                                     exc.hint) from None
                skipped[task.key] = exc.message
                answers.pop(task.key, None)
    accuracy = None
    if run_accuracy:
        progress(f"lenet train --epochs 1 (to {ACCURACY_TARGET:.1%} test accuracy)", total - 1, total)
        try:
            accuracy = time_to_accuracy(dev, str(cfg.data_dir), cfg.worker_timeout)
        except BenchError as exc:
            skipped["time_to_accuracy"] = exc.message
    elif cfg.accuracy:
        skipped["time_to_accuracy"] = accuracy_skip or "no MNIST data."
    progress("done", total, total)
    return build_report(weights, cfg, device, answers, skipped, accuracy)


def _without_onnxruntime(cfg: BenchConfig) -> BenchConfig:
    from dataclasses import replace

    return replace(cfg, backends=tuple(b for b in cfg.backends if not b.startswith("onnxruntime")), predict_path=False,
                   serve=False)
