"""`lenet bench`'s report: the repeats' answers summarised as rows (min / median / max), with the machine.

No figure here is hard-coded: every one comes from the measuring processes' answers.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lenet_cli import __version__
from lenet_cli.bench.plan import (
    MACS_PER_IMAGE,
    TRAIN_EPOCH_IMAGES,
    TRAIN_FLOPS_PER_IMAGE,
    BenchConfig,
)
from lenet_cli.utils.timing import spread

if TYPE_CHECKING:  # pragma: no cover
    pass


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


def summarize_predict(answers: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The predict path's rows: median (min, max) over repeats of each kind's ms, and files/s per pipeline."""
    out: dict[str, Any] = {}
    found = answers.get("predict:preprocess", [])
    if found:
        kinds = [r["kind"] for r in found[0]["preprocess"]]
        out["preprocess"] = [{"kind": k, **{f"{field}{suffix}": agg([a["preprocess"][i][field] for a in found])
                                            for field in ("preprocess_ms", "with_decode_ms")
                                            for suffix, agg in (("", statistics.median), ("_min", min),
                                                                ("_max", max))}}
                             for i, k in enumerate(kinds)]
    folder = {}
    for pipeline in ("lenet", "plain"):
        runs = answers.get(f"predict:folder-{pipeline}", [])
        if runs:
            rates = [r["files_per_s"] for r in runs]
            folder[pipeline] = {"files": runs[0]["files"], "files_per_s": statistics.median(rates),
                                "files_per_s_min": min(rates), "files_per_s_max": max(rates)}
    if folder:
        out["folder_predict"] = folder
        if len(folder) == 2:
            out["folder_predict_vs_plain"] = folder["lenet"]["files_per_s"] / folder["plain"]["files_per_s"]
    return out


def build_report(weights: Path, cfg: BenchConfig, device: "Any", answers: dict[str, list[dict[str, Any]]],
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
        **summarize_predict(answers),
        **({"serve": answers["serve"][0]["serve"], "serve_clients": answers["serve"][0]["clients"]}
           if answers.get("serve") else {}),
        "skipped": skipped,
    }
