"""What `lenet bench` measures: its config, the constants its figures are computed from, and the plan.

The plan is the ordered list of processes `harness.run_bench` starts: the matmul rate first,
then `repeats` rounds of every measurement. Repeats go round-robin (every measurement once,
then every one again), so a slow spell of the machine spreads over all rows instead of landing
on one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenet_cli.training.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    pass


# LeNet-5 forward multiply-accumulates per image (modern preset; classic is within 1%):
# C1 6*25*28*28 + C3 16*6*25*10*10 + C5 400*120 + F6 120*84 + out 84*10.
MACS_PER_IMAGE = 416_520
C1_MACS = 6 * 25 * 28 * 28  # the first layer needs no gradient for its input (the image)
# A training step: the forward pass, the weight gradients (same MACs), the input gradients (all but C1).
TRAIN_FLOPS_PER_IMAGE = 2 * (3 * MACS_PER_IMAGE - C1_MACS)
MNIST_TRAIN_IMAGES = 60_000
TRAIN_EPOCH_IMAGES = MNIST_TRAIN_IMAGES - TrainConfig().val_size  # what one epoch of `lenet train` sees
ACCURACY_TARGET = 0.99


@dataclass(frozen=True)
class BenchConfig:
    """What `lenet bench` measures."""

    batch_sizes: tuple[int, ...] = (1, 64, 1024)
    backends: tuple[str, ...] = ("torch", "torch-compile", "onnxruntime")
    min_seconds: float = 1.0  # time budget per (backend, batch size) and repeat, after warm-up
    warmup: int = 10
    repeats: int = 3  # fresh processes per measurement
    train_batch_size: int | None = None  # None: TrainConfig's
    epoch_fraction: float = 1.0  # of a 55,000-image epoch; below 1 (--quick) the epoch figures are scaled
    tutorial: bool = True  # also time the tutorial pipeline
    accuracy: bool = True  # also run `lenet train --epochs 1` and check it reaches ACCURACY_TARGET
    data_dir: str | None = None  # MNIST, for the training rows and the 1-epoch run; None: random images, no run
    worker_timeout: float = 600.0  # seconds per process
    predict_path: bool = True  # also time preprocessing per image kind and a folder predict against a plain loop
    mix_files: tuple[int, int] = (400, 100)  # the folder predict's MNIST-style PNGs and 200x200 photos
    serve: bool = False  # also req/s of `lenet serve` beside a bare FastAPI upload endpoint (serve_load.py)
    serve_seconds: float = 1.5  # per image kind, server and round of the serve load


@dataclass(frozen=True)
class Task:
    """One measurement in its own process: a label for progress and errors, the job, whether the report needs it."""

    label: str
    key: str  # where its answers are collected
    job: dict[str, Any]
    required: bool = False  # a failure ends the bench (else the row is skipped, with the reason)


def variants(backend: str, cuda: bool) -> list[str]:
    """The rows one --backends entry gives on this machine."""
    if backend == "onnxruntime":
        # One intra-op thread has the lowest batch-1 latency (no thread hand-offs); all cores
        # have the highest large-batch throughput. Both are shown, so users can pick.
        names = ["onnxruntime-cpu", "onnxruntime-cpu-1t"] if (os.cpu_count() or 1) > 1 else ["onnxruntime-cpu"]
        return names + (["onnxruntime-cuda"] if cuda else [])
    return [backend]


def epoch_images(cfg: BenchConfig) -> int:
    """Images in each timed training epoch: a whole one, or the --quick fraction of it."""
    return max(1, round(TRAIN_EPOCH_IMAGES * cfg.epoch_fraction))


def predict_tasks(cfg: BenchConfig, onnx: Path, folder: Path, repeat: int, round_: str) -> list[Task]:
    """The predict path's processes for one repeat: preprocessing per kind, then the folder, lenet's and plain."""
    mix = {"folders": [str(folder / "mnist"), str(folder / "photos")], "onnx": str(onnx), "data_dir": cfg.data_dir}
    return [Task(f"preprocessing per image kind{round_}", "predict:preprocess",
                 {"kind": "preprocess", "data_dir": cfg.data_dir, "min_seconds": cfg.min_seconds, "seed": repeat}),
            *(Task(f"folder predict, {name}{round_}", f"predict:folder-{pipeline}",
                   {"kind": "folder-predict", "pipeline": pipeline, "rows": str(folder / f"rows-{pipeline}.jsonl")}
                   | mix)
              for pipeline, name in (("lenet", "lenet predict"), ("plain", "plain loop")))]


def plan(cfg: BenchConfig, device: str, weights: Path, onnx: Path | None,
         folder: Path | None = None) -> list[Task]:
    """Every process `run_bench` starts, in order: the matmul rate, then `repeats` rounds of every measurement."""
    cuda = device.startswith("cuda")
    tasks = [Task("matmul peak", "matmul", {"kind": "matmul", "devices": ["cpu"] + ([device] if cuda else [])},
                  required=True)]
    train_job = {"kind": "train-epoch", "device": device, "images": epoch_images(cfg), "data_dir": cfg.data_dir}
    for r in range(1, cfg.repeats + 1):
        round_ = f" (repeat {r}/{cfg.repeats})" if cfg.repeats > 1 else ""
        tasks.append(Task(f"lenet training epoch{round_}", "train:lenet",
                          train_job | {"pipeline": "lenet", "batch_size": cfg.train_batch_size}, required=True))
        if cfg.tutorial:
            tasks.append(Task(f"tutorial training epoch{round_}", "train:tutorial",
                              train_job | {"pipeline": "tutorial"}))
        for backend in cfg.backends:
            for variant in variants(backend, cuda):
                tasks.append(Task(f"{variant}{round_}", f"inference:{variant}", {
                    "kind": "inference", "variant": variant, "device": device, "weights": str(weights),
                    "onnx": str(onnx) if onnx else None, "batch_sizes": list(cfg.batch_sizes),
                    "warmup": cfg.warmup, "min_seconds": cfg.min_seconds, "seed": r}))
        if cfg.predict_path and onnx is not None and folder is not None:
            tasks += predict_tasks(cfg, onnx, folder, r, round_)
    if cfg.serve and onnx is not None:
        # Once: the servers are driven in alternating rounds inside the one process (serve_load.py).
        tasks.append(Task("lenet serve beside a bare endpoint", "serve",
                          {"kind": "serve", "onnx": str(onnx), "data_dir": cfg.data_dir,
                           "seconds": cfg.serve_seconds, "rounds": max(2, cfg.repeats)}))
    return tasks
