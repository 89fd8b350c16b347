"""How fast can lenet's epoch get with the convolution library it uses? A floor under the epoch, measured.

    python docs/conv_floor.py --data-dir path/to/mnist [--steps 40] [--repeats 3]

lenet's training step calls the convolutions of PyTorch's CPU backend (oneDNN) twice forward and
twice backward (C1, in its polyphase form on the CPU, and C3). This script profiles the real
`recipe.train_step` (as `lenet bench` times it: `lenet train`'s default settings, batch 256,
augmentation on) with `torch.profiler` and adds up the time spent inside those convolution calls;
times the number of steps of an epoch, that is a floor under lenet's epoch: the epoch could not be
faster than it even if every other part of the step (augmentation, batch norm, pooling, the linear
layers, the loss, AdamW) cost nothing. It then times the tutorial pipeline's epoch (`lenet bench`'s
own measurement, in a fresh process per repeat) and prints the best ratio that floor allows.

Each part runs in a fresh process (`lenet bench`'s rule: thread pools and caches stay out of each
other's figures). Run it on a quiet machine; the profiler adds a little to the small ops, not to
the convolutions' own time.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward")  # forward and backward on the CPU
EPOCH_IMAGES = 55_000  # MNIST's training split less the 5,000 validation images, as `lenet train` trains


def profile_step(steps: int) -> dict:
    """In this process: ms per step of `recipe.train_step`, and the ms of it inside the convolution calls."""
    import time

    import torch
    from torch.profiler import profile

    from lenet_cli.kernels import speed_up
    from lenet_cli.model import build_model
    from lenet_cli.recipe import (
        build_optimizer,
        build_schedule,
        keep_freed_memory,
        resolve_precision,
        seed_everything,
        train_step,
    )
    from lenet_cli.records import TrainConfig

    device = torch.device("cpu")
    cfg = resolve_precision(TrainConfig(), device)
    seed_everything(cfg.seed)
    keep_freed_memory()
    model = build_model(cfg.preset).train()
    net = speed_up(model, device)
    opt = build_optimizer(model, cfg, device)
    sched = build_schedule(opt, cfg, 3 * steps + 10)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (cfg.batch_size, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (cfg.batch_size,), generator=gen)
    for _ in range(10):
        train_step(net, opt, sched, x, y, cfg, gen)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(net, opt, sched, x, y, cfg, gen)
    step_ms = (time.perf_counter() - t0) / steps * 1000
    with profile() as prof:
        for _ in range(steps):
            train_step(net, opt, sched, x, y, cfg, gen)
    conv_us = {e.key: e.self_cpu_time_total for e in prof.key_averages() if e.key in CONV_OPS}
    return {"step_ms": step_ms, "conv_ms": sum(conv_us.values()) / steps / 1000,
            "conv_ms_by_op": {k: v / steps / 1000 for k, v in conv_us.items()},
            "batch_size": cfg.batch_size, "precision": cfg.precision}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="MNIST folder, for the tutorial's epoch (random images without)")
    parser.add_argument("--steps", type=int, default=40, help="training steps profiled per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--part", choices=["lenet"], help=argparse.SUPPRESS)  # the child process's part
    args = parser.parse_args()
    if args.part:
        print(json.dumps(profile_step(args.steps)))
        return 0

    from lenet_cli.bench import run_worker

    lenet = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--part", "lenet", "--steps", str(args.steps)],
                             check=True, capture_output=True, text=True).stdout
        lenet.append(json.loads(out.strip().splitlines()[-1]))
    job = {"kind": "train-epoch", "pipeline": "tutorial", "device": "cpu", "images": EPOCH_IMAGES,
           "data_dir": str(args.data_dir) if args.data_dir else None}
    tutorial = [run_worker(job)["seconds"] for _ in range(args.repeats)]

    steps = math.ceil(EPOCH_IMAGES / lenet[0]["batch_size"])
    step_ms = statistics.median(r["step_ms"] for r in lenet)
    middle = sorted(lenet, key=lambda r: r["conv_ms"])[len(lenet) // 2]  # the repeat with the median conv time
    conv_ms = middle["conv_ms"]
    tut = statistics.median(tutorial)
    floor = conv_ms * steps / 1000
    each = ", ".join(f"{r['step_ms']:.1f}" for r in lenet)
    print(f"lenet step ({lenet[0]['precision']}, batch {lenet[0]['batch_size']}): {step_ms:.1f} ms "
          f"(repeats {each}); inside the convolution calls: "
          f"{conv_ms:.1f} ms ({100 * conv_ms / step_ms:.0f}%; "
          + ", ".join(f"{k.removeprefix('aten::')} {v:.1f}" for k, v in middle["conv_ms_by_op"].items()) + ")")
    print(f"lenet epoch ({steps} steps): {step_ms * steps / 1000:.2f} s; its convolutions alone: {floor:.2f} s")
    print(f"tutorial epoch: {tut:.2f} s (repeats {', '.join(format(t, '.2f') for t in tutorial)})")
    print(f"ratio today: {tut / (step_ms * steps / 1000):.1f}x; with everything but the convolutions free: "
          f"{tut / floor:.1f}x at most; 5x needs an epoch of {tut / 5:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
