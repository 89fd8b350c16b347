"""Timing harness for `lenet bench`: plans the measurements, runs each in a fresh process, summarises.

Measures on the machine it runs on, side by side:
* inference latency (p50/p90/p99 per batch) and throughput for each backend and batch size:
  PyTorch eager, PyTorch compiled, onnxruntime on the CPU (all cores, one thread), and
  onnxruntime on CUDA;
* one whole training epoch of lenet (its real `recipe.train_step`, default TrainConfig) and of
  the pipeline LeNet tutorials use (tutorial.py), and the ratio between them;
* the time `lenet train --epochs 1` takes to train, and whether its test accuracy reaches 99.0%;
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

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

import lenet_cli
from lenet_cli import __version__
from lenet_cli.errors import BenchError
from lenet_cli.export import export_onnx
from lenet_cli.records import TrainConfig
from lenet_cli.timing import spread
from lenet_cli.weights import load_model

if TYPE_CHECKING:  # pragma: no cover
    import torch

# LeNet-5 forward multiply-accumulates per image (modern preset; classic is within 1%):
# C1 6*25*28*28 + C3 16*6*25*10*10 + C5 400*120 + F6 120*84 + out 84*10.
MACS_PER_IMAGE = 416_520
C1_MACS = 6 * 25 * 28 * 28  # the first layer needs no gradient for its input (the image)
# A training step: the forward pass, the weight gradients (same MACs), the input gradients (all but C1).
TRAIN_FLOPS_PER_IMAGE = 2 * (3 * MACS_PER_IMAGE - C1_MACS)
MNIST_TRAIN_IMAGES = 60_000
TRAIN_EPOCH_IMAGES = MNIST_TRAIN_IMAGES - TrainConfig().val_size  # what one epoch of `lenet train` sees
ACCURACY_TARGET = 0.99
WORKER_MODULE = "lenet_cli.bench_worker"  # run as `python -m`; a module attribute so tests can break it


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


@dataclass(frozen=True)
class InferenceResult:
    """One backend at one batch size: latency percentiles (µs per batch) and throughput, over `repeats`.

    p50/p90/p99 are the medians over the repeats of each repeat's percentiles; images_per_s is
    batch_size / p50. The _min/_max fields give the spread of the repeats.
    """

    backend: str
    device: str
    batch_size: int
    p50_us: float
    p90_us: float
    p99_us: float
    images_per_s: float
    runs: int  # timed calls, all repeats together
    gflops: float = 0.0  # 2 * MACs * images/s
    fraction_of_peak: float | None = None  # gflops / the measured matmul rate
    repeats: int = 1
    p50_us_min: float = 0.0
    p50_us_max: float = 0.0
    images_per_s_min: float = 0.0
    images_per_s_max: float = 0.0
    pids: tuple[int, ...] = ()  # the process of each repeat


@dataclass(frozen=True)
class TrainingResult:
    """One training pipeline's epoch (forward, backward, optimiser, data handling), over `repeats`.

    seconds_per_epoch is the median over the repeats for TRAIN_EPOCH_IMAGES images (scaled from
    `images` when epoch_fraction < 1); images_per_s is TRAIN_EPOCH_IMAGES / seconds_per_epoch.
    """

    pipeline: str
    device: str
    batch_size: int
    images_per_s: float
    seconds_per_epoch: float
    steps: int  # timed steps per repeat
    gflops: float = 0.0
    fraction_of_peak: float | None = None
    repeats: int = 1
    seconds_per_epoch_min: float = 0.0
    seconds_per_epoch_max: float = 0.0
    images_per_s_min: float = 0.0
    images_per_s_max: float = 0.0
    images: int = 0  # timed images per repeat
    epoch_fraction: float = 1.0  # images / TRAIN_EPOCH_IMAGES
    data: str = "synthetic"  # or "mnist": MNIST's training images
    pids: tuple[int, ...] = ()
    precision: str = "float32"  # of the forward pass: lenet's is what `lenet train --precision auto` picks


@dataclass(frozen=True)
class Task:
    """One measurement in its own process: a label for progress and errors, the job, whether the report needs it."""

    label: str
    key: str  # where its answers are collected
    job: dict[str, Any]
    required: bool = False  # a failure ends the bench (else the row is skipped, with the reason)


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


# ------------------------------------------------------------------ processes


def _worker_env() -> dict[str, str]:
    """The environment of a worker: this one, with this copy of lenet_cli first on the path.

    The worker must run the code the parent runs, whatever else an installed lenet_cli says.
    """
    env = dict(os.environ)
    root = str(Path(lenet_cli.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_process(cmd: list[str], stdin: str, timeout: float) -> tuple[int, str, str, int]:
    """Run a command to its end: (exit status, stdout, stderr, pid); BenchError when it outlives `timeout` s."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_worker_env())
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"timed out after {timeout:g} s (pid {proc.pid}).",
                         "Give it longer with --worker-timeout, or measure less (--backends, --batch-sizes).") from None
    except BaseException:  # Ctrl-C: the worker goes with us
        proc.kill()
        proc.wait()
        raise
    return proc.returncode, out, err, proc.pid


def _last_json(text: str) -> dict[str, Any] | None:
    """`text` as one JSON object (`lenet train --json` indents it), else its last line that is one, or None."""
    try:
        whole = json.loads(text)
        if isinstance(whole, dict):
            return whole
    except ValueError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _failure(status: int, err: str, pid: int) -> str:
    """One line for a process that failed without answering: the last line it wrote on stderr, or how it ended."""
    lines = [line.strip() for line in err.strip().splitlines() if line.strip()]
    if lines:
        return f"{lines[-1][:300]} (pid {pid}, exit status {status})."
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    return f"the process {how} without a word (pid {pid})."


def run_worker(job: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Run one bench_worker job in a fresh Python process and return its answer (with the worker's "pid").

    BenchError, one line, when the worker reports an error, crashes or times out.
    """
    status, out, err, pid = run_process([sys.executable, "-m", WORKER_MODULE], json.dumps(job), timeout)
    answer = _last_json(out)
    if answer is not None and "error" in answer:
        raise BenchError(f"{answer['error']} (pid {answer.get('pid', pid)}).")
    if status != 0 or answer is None:
        raise BenchError(_failure(status, err, pid))
    return answer


def time_to_accuracy(device: str, data_dir: str, timeout: float) -> dict[str, Any]:
    """`lenet train --epochs 1` on MNIST, in a fresh process: its training seconds and test accuracy.

    The command itself, not a copy of it: whatever `lenet train` does for a 1-epoch budget is
    what is timed. Its run folder is a temporary one; wall_seconds includes starting Python.
    """
    with tempfile.TemporaryDirectory(prefix="lenet-bench-train-") as tmp:
        cmd = [sys.executable, "-m", "lenet_cli", "train", "--epochs", "1", "--device", device, "--data-dir", data_dir,
               "--no-download", "--output-dir", str(Path(tmp) / "run"), "--json"]
        t0 = time.perf_counter()
        status, out, err, pid = run_process(cmd, "", timeout)
        wall = time.perf_counter() - t0
    answer = _last_json(out)
    if status != 0:
        raise BenchError(_failure(status, err, pid))
    if answer is None or answer.get("test_accuracy") is None:
        raise BenchError(f"`lenet train --epochs 1` gave no test accuracy in its JSON report (pid {pid}).")
    accuracy = float(answer["test_accuracy"])
    return {"command": "lenet train --epochs 1", "epochs": 1, "seed": answer["config"]["seed"],
            "batch_size": answer["config"]["batch_size"], "precision": answer["config"].get("precision", "float32"),
            "target": ACCURACY_TARGET,
            "train_seconds": float(answer["train_seconds"]), "wall_seconds": wall, "test_accuracy": accuracy,
            "reached": accuracy >= ACCURACY_TARGET, "pid": pid}


# ------------------------------------------------------------------ the plan


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


def plan(cfg: BenchConfig, device: str, weights: Path, onnx: Path | None) -> list[Task]:
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
    return tasks


# ------------------------------------------------------------------ summaries


def _percentiles_us(times: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(np.asarray(times), [50, 90, 99]) * 1e6
    return float(p50), float(p90), float(p99)


def summarize_inference(variant: str, answers: list[dict[str, Any]], peaks: dict[str, float],
                        skipped: dict[str, str]) -> list[InferenceResult]:
    """One row per batch size from the repeats' answers; a batch size that failed in any repeat is skipped."""
    results = []
    for i, first in enumerate(answers[0]["rows"]):
        bs = first["batch_size"]
        rows = [a["rows"][i] for a in answers]
        errors = [r["error"] for r in rows if "error" in r]
        if errors:
            skipped[f"{variant}@{bs}"] = errors[0]
            continue
        p50s, p90s, p99s = zip(*(_percentiles_us(r["times"]) for r in rows))
        p50, p90, p99 = spread(list(p50s))["median"], spread(list(p90s))["median"], spread(list(p99s))["median"]
        device = answers[0]["device"]
        ips = bs / (p50 / 1e6)
        gflops = ips * 2 * MACS_PER_IMAGE / 1e9
        peak = peaks.get("cuda" if device.startswith("cuda") else "cpu")
        results.append(InferenceResult(
            variant, device, bs, p50, p90, p99, ips, sum(len(r["times"]) for r in rows), gflops,
            gflops / peak if peak else None, len(rows), min(p50s), max(p50s), bs / (max(p50s) / 1e6),
            bs / (min(p50s) / 1e6), tuple(a["pid"] for a in answers)))
    return results


def summarize_training(pipeline: str, answers: list[dict[str, Any]], peak: float | None) -> TrainingResult:
    """The repeats' epochs as seconds per TRAIN_EPOCH_IMAGES-image epoch (scaled for a fraction) and images/s."""
    per_epoch = [a["seconds"] * TRAIN_EPOCH_IMAGES / a["images"] for a in answers]
    s = spread(per_epoch)
    ips = TRAIN_EPOCH_IMAGES / s["median"]
    gflops = ips * TRAIN_FLOPS_PER_IMAGE / 1e9
    first = answers[0]
    return TrainingResult(
        pipeline, first["device"], first["batch_size"], ips, s["median"], first["steps"], gflops,
        gflops / peak if peak else None, len(answers), s["min"], s["max"], TRAIN_EPOCH_IMAGES / s["max"],
        TRAIN_EPOCH_IMAGES / s["min"], first["images"], first["images"] / TRAIN_EPOCH_IMAGES, first["data"],
        tuple(a["pid"] for a in answers), first.get("precision", "float32"))


# ------------------------------------------------------------------ the run


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
        if any(b.startswith("onnxruntime") for b in cfg.backends):
            # Exported once here, so that onnxruntime's processes import onnxruntime alone (not torch).
            onnx = Path(folder) / "model.onnx"
            images = np.random.default_rng(0).integers(0, 256, (256, 28, 28)).astype(np.uint8)
            try:
                export_onnx(weights, onnx, images=images)
            except Exception as exc:  # the torch rows still stand
                skipped["onnxruntime"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                cfg = _without_onnxruntime(cfg)
        tasks = plan(cfg, dev, weights, onnx)
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
    return _report(weights, cfg, device, answers, skipped, accuracy)


def _without_onnxruntime(cfg: BenchConfig) -> BenchConfig:
    from dataclasses import replace

    return replace(cfg, backends=tuple(b for b in cfg.backends if not b.startswith("onnxruntime")))


def _report(weights: Path, cfg: BenchConfig, device: "Any", answers: dict[str, list[dict[str, Any]]],
            skipped: dict[str, str], accuracy: dict[str, Any] | None) -> dict[str, Any]:
    peaks: dict[str, float] = answers["matmul"][0]["peak_gflops"]
    device_peak = peaks.get("cuda" if str(device).startswith("cuda") else "cpu")
    training = [summarize_training(p, answers[f"train:{p}"], device_peak)
                for p in ("lenet", "tutorial") if f"train:{p}" in answers]
    inference: list[InferenceResult] = []
    for key, found in answers.items():
        if key.startswith("inference:"):
            inference += summarize_inference(key.split(":", 1)[1], found, peaks, skipped)
    skipped = {k.split(":", 1)[-1]: v for k, v in skipped.items()}
    speedup = lo = hi = None
    if len(training) == 2:
        lenet, tutorial = training
        speedup = lenet.images_per_s / tutorial.images_per_s
        # The widest the ratio could be from these repeats: lenet's slowest against the tutorial's fastest, and back.
        lo, hi = lenet.images_per_s_min / tutorial.images_per_s_max, lenet.images_per_s_max / tutorial.images_per_s_min
    return {
        "environment": environment(device) | {"bench_pid": os.getpid()},
        "weights": str(weights),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "peak_gflops": peaks,
        "macs_per_image": MACS_PER_IMAGE,
        "epoch_images": TRAIN_EPOCH_IMAGES,
        "inference": [asdict(r) | {"pids": list(r.pids)} for r in inference],
        "training": [asdict(t) | {"pids": list(t.pids)} for t in training],
        "training_speedup_vs_tutorial": speedup,
        "training_speedup_vs_tutorial_min": lo,
        "training_speedup_vs_tutorial_max": hi,
        "time_to_accuracy": accuracy,
        "skipped": skipped,
    }
