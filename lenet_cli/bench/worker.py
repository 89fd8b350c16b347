"""One measurement of `lenet bench`, in a process of its own: `python -m lenet_cli.bench.worker`.

`bench.py` starts this module once per measurement and repeat, with a job as JSON on stdin,
and reads one JSON object back from stdout. A fresh process per measurement is the point:
torch's and onnxruntime's thread pools, torch.compile's compiled code, oneDNN's primitive
caches and the allocator's state all live as long as the process, and each of them changed
the figures of whatever was measured after it (after torch.compile, onnxruntime's batch-1
latency in the same process went from 37 to 64 µs; after a torch run, onnxruntime's
batch-1024 throughput dropped by 7-10%).

Jobs (the "kind" field):
* "matmul": the float32 matrix-multiply rate of each device in "devices";
* "inference": per-call times of one backend ("variant") at each of "batch_sizes";
* "train-epoch": one whole training epoch of "pipeline" "lenet" (lenet's `recipe.train_step`
  with the default TrainConfig) or "tutorial" (tutorial.py), over "images" images;
* "preprocess", "folder-predict": the predict path (predict_path.py);
* "serve": `lenet serve` and a bare FastAPI endpoint under the same load (serve_load.py).

Every answer carries "pid", so the report shows which process measured what. A failure is
answered as {"error": "one line"} with exit status 1; the parent turns it into one message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lenet_cli.errors import LenetError, first_line
from lenet_cli.training.config import TrainConfig
from lenet_cli.utils.timing import time_calls

WARMUP_STEPS = 5  # untimed training steps before an epoch is timed: as every epoch after a run's first


def _sync(device: Any) -> Callable[[], None]:
    """A function that waits for the device: CUDA launches return before the work is done."""
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def measure_matmul(job: dict[str, Any]) -> dict[str, Any]:
    """float32 matrix-multiply rate per device: the practical ceiling for dense arithmetic."""
    import torch

    peaks = {}
    for name in job["devices"]:
        device = torch.device(name)
        n = 2048 if device.type == "cuda" else 1024
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        times = time_calls(lambda: torch.mm(a, b), warmup=3, min_seconds=job.get("seconds", 0.3),
                           sync=_sync(device), max_runs=200)
        peaks[device.type] = 2 * n**3 / float(np.median(times)) / 1e9
    return {"peak_gflops": peaks}


def _inference_call(variant: str, job: dict[str, Any], rng: np.random.Generator
                    ) -> tuple[Callable[[int], Callable[[], Any]], str, Callable[[], None]]:
    """For one backend: a factory (batch size -> zero-argument timed call), the device it runs on, its sync."""
    if variant in ("torch", "torch-compile"):
        import torch

        from lenet_cli.model.cpu_paths import speed_up
        from lenet_cli.model.weights import load_model

        device = torch.device(job["device"])
        model, _ = load_model(Path(job["weights"]), device)
        net = speed_up(model, device)  # what `lenet eval` and `lenet predict --weights X.safetensors` run
        if variant == "torch-compile":
            import logging

            # Inductor logs a warning about CUDA_HOME on machines without CUDA; not the user's concern.
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            net = torch.compile(net, dynamic=False)

        def make(bs: int) -> Callable[[], Any]:
            x = torch.from_numpy(rng.integers(0, 256, (bs, 1, 28, 28)).astype(np.float32)).to(device)

            def call() -> None:
                with torch.inference_mode():
                    net(x)

            return call

        return make, str(device), _sync(device)
    if variant.startswith("onnxruntime"):
        # Only onnxruntime and numpy in this process: the ONNX file was exported by the parent.
        from lenet_cli.inference.onnx_session import make_session

        on_cuda = variant == "onnxruntime-cuda"
        session = make_session(Path(job["onnx"]), job["device"] if on_cuda else "cpu",
                               1 if variant.endswith("-1t") else None)
        name = session.get_inputs()[0].name

        def make_ort(bs: int) -> Callable[[], Any]:
            x = rng.integers(0, 256, (bs, 1, 28, 28)).astype(np.float32)
            return lambda: session.run(None, {name: x})

        return make_ort, "cuda" if on_cuda else "cpu", (lambda: None)
    raise ValueError(f"unknown backend {variant!r}")


def measure_inference(job: dict[str, Any]) -> dict[str, Any]:
    """Per-call times of one backend at each batch size; a batch size that fails is answered with its error."""
    rng = np.random.default_rng(job.get("seed", 0))
    make, device, sync = _inference_call(job["variant"], job, rng)
    rows = []
    for bs in job["batch_sizes"]:
        try:
            times = time_calls(make(bs), job["warmup"], job["min_seconds"], sync)
            rows.append({"batch_size": bs, "times": times})
        except Exception as exc:  # e.g. out of memory at the largest batch: the others still stand
            rows.append({"batch_size": bs, "error": first_line(exc, 200)})
    return {"device": device, "rows": rows}


def _training_images(job: dict[str, Any], cfg: TrainConfig) -> tuple[Any, Any, str]:
    """`job["images"]` uint8 images (N, 28, 28) and labels: MNIST's training split when a folder is given, else random."""
    import torch

    n = int(job["images"])
    if job.get("data_dir"):
        from lenet_cli.data.mnist import load_split, train_val_split

        full = load_split(Path(job["data_dir"]), "train", allow_download=False)
        train_split, _ = train_val_split(full, cfg.val_size)  # the images `lenet train` trains on
        return train_split.images[:n], train_split.labels[:n].long(), "mnist"
    gen = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=gen),
            torch.randint(0, 10, (n,), generator=gen), "synthetic")


def lenet_epoch(job: dict[str, Any]) -> dict[str, Any]:
    """One epoch of lenet's training as `lenet train` runs it: the data on the device, batches drawn by index
    from a fresh permutation, and the run built by `training.setup.build_setup` and stepped by its
    `step` (augmentation, forward, loss, backward, optimizer, schedule, EMA), with the default
    TrainConfig, on augmented digits (every epoch but the last --clean-epochs is; those cost a little
    less). Not timed: the loop's bookkeeping of the running loss and the validation pass (the
    tutorial's epoch has neither).
    """
    import torch

    from lenet_cli.training.recipe import resolve_precision
    from lenet_cli.training.setup import build_setup

    device = torch.device(job["device"])
    cfg = resolve_precision(TrainConfig(), device)  # bf16 autocast where `lenet train` would use it
    if job.get("batch_size"):
        cfg = dataclasses.replace(cfg, batch_size=int(job["batch_size"]))
    x_cpu, y_cpu, data = _training_images(job, cfg)
    x_all, y_all = x_cpu.to(device), y_cpu.to(device)
    n, bs = int(x_all.shape[0]), min(cfg.batch_size, int(x_all.shape[0]))
    steps = -(-n // bs)  # the last batch may be short, as in training.loop
    # Sized for cfg.epochs epochs of `steps`, as `lenet train` sizes it: the warm-up never steps past its end.
    setup = build_setup(cfg, cfg.preset, device, steps)
    setup.net.train()  # as the loop does before each epoch
    sync = _sync(device)
    for i in range(WARMUP_STEPS):
        idx = torch.arange(i * bs, (i + 1) * bs, device=device) % n
        setup.step(x_all[idx], y_all[idx])
    sync()
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=setup.gen).to(device)
    for step in range(steps):
        idx = perm[step * bs : (step + 1) * bs]
        setup.step(x_all[idx], y_all[idx])
    sync()
    return {"seconds": time.perf_counter() - t0, "images": n, "steps": steps, "batch_size": bs,
            "precision": setup.cfg.precision, "device": str(device), "data": data}


def tutorial_epoch(job: dict[str, Any]) -> dict[str, Any]:
    """One epoch of the tutorial pipeline (tutorial.py) over the same images as lenet's."""
    import torch

    from lenet_cli.bench.tutorial import TUTORIAL_BATCH, time_tutorial_epoch

    device = torch.device(job["device"])
    x, y, data = _training_images(job, TrainConfig())
    seconds, steps = time_tutorial_epoch(device, x.numpy(), y.numpy(), WARMUP_STEPS)
    return {"seconds": seconds, "images": int(x.shape[0]), "steps": steps, "batch_size": TUTORIAL_BATCH,
            "device": str(device), "data": data}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Do one job (see the module's docstring) and return its answer."""
    kind = job.get("kind")
    if kind == "matmul":
        return measure_matmul(job)
    if kind == "inference":
        return measure_inference(job)
    if kind == "train-epoch":
        pipelines = {"lenet": lenet_epoch, "tutorial": tutorial_epoch}
        if job.get("pipeline") not in pipelines:
            raise ValueError(f"unknown training pipeline {job.get('pipeline')!r}")
        return pipelines[job["pipeline"]](job)
    if kind in ("preprocess", "folder-predict"):  # the predict path: numpy, Pillow, onnxruntime, never torch
        from lenet_cli.bench import predict_path

        return (predict_path.measure_preprocess if kind == "preprocess" else predict_path.measure_folder)(job)
    if kind == "serve":  # both servers are subprocesses; this process is their client
        from lenet_cli.bench.serve_load import measure_serve

        return measure_serve(job)
    raise ValueError(f"unknown bench job {kind!r}")


def main() -> int:
    """Read a job from stdin, answer with one JSON object on stdout; exit 1 with {"error": ...} on failure."""
    # Everything else written to file descriptor 1 while the job runs (a print, a C library's
    # message) goes to stderr, so that stdout carries the one JSON answer alone.
    sys.stdout.flush()
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        answer, status = run_job(json.loads(sys.stdin.read())), 0
    except Exception as exc:  # one line for the parent, which reports it as this measurement's failure
        message = str(exc) if isinstance(exc, LenetError) else f"{type(exc).__name__}: {first_line(exc, 300)}"
        answer, status = {"error": first_line(Exception(message), 300)}, 1
    answer["pid"] = os.getpid()
    sys.stdout.flush()
    os.write(answer_fd, (json.dumps(answer) + "\n").encode())
    return status


if __name__ == "__main__":
    sys.exit(main())
