"""How fast can lenet's epoch get with the convolution library it uses? A floor under the epoch, measured.

    python scripts/conv_floor.py --data-dir path/to/mnist [--steps 40] [--repeats 3]

lenet's training step calls the convolutions of PyTorch's CPU backend (oneDNN) twice forward and
twice backward (C1, in its polyphase form on the CPU, and C3). This script profiles the real
`recipe.train_step` (as `lenet bench` times it: `lenet train`'s default settings and batch,
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


def profile_step(steps: int) -> dict:
    """In this process: ms per step of `recipe.train_step`, and the ms of it inside the convolution calls."""
    import time

    import torch
    from torch.profiler import profile

    from lenet_cli.training import recipe
    from lenet_cli.model.cpu_paths import speed_up
    from lenet_cli.model.lenet5 import build_model
    from lenet_cli.training.config import TrainConfig
    from lenet_cli.utils.memory import TRAINING_TRIM_THRESHOLD, reuse_freed_memory

    device = torch.device("cpu")
    cfg = recipe.resolve_precision(TrainConfig(), device)  # what `lenet train` runs here
    recipe.seed_everything(cfg.seed)
    reuse_freed_memory(TRAINING_TRIM_THRESHOLD)  # as the training setup does on the CPU
    model = build_model(cfg.preset).train()
    net = speed_up(model, device)
    opt = recipe.build_optimizer(model, cfg, device)
    sched = recipe.build_schedule(opt, cfg, 3 * steps + 10)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (cfg.batch_size, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (cfg.batch_size,), generator=gen)

    def run(n: int) -> None:
        for _ in range(n):
            recipe.train_step(net, opt, sched, x, y, cfg, gen)

    run(10)  # warm-up: oneDNN builds its kernels on the first calls
    t0 = time.perf_counter()
    run(steps)
    step_ms = (time.perf_counter() - t0) / steps * 1000
    with profile() as prof:
        t0 = time.perf_counter()
        run(steps)
        profiled_ms = (time.perf_counter() - t0) / steps * 1000  # the share is taken of this: same steps
    conv_us = {e.key: e.self_cpu_time_total for e in prof.key_averages() if e.key in CONV_OPS}
    return {"step_ms": step_ms, "profiled_step_ms": profiled_ms, "conv_ms": sum(conv_us.values()) / steps / 1000,
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

    from lenet_cli.bench.plan import TRAIN_EPOCH_IMAGES
    from lenet_cli.bench.processes import run_worker

    lenet = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--part", "lenet", "--steps", str(args.steps)],
                             check=True, capture_output=True, text=True).stdout
        lenet.append(json.loads(out.strip().splitlines()[-1]))
    if not all(r["conv_ms"] > 0 for r in lenet):
        sys.exit(f"no time was recorded in {' or '.join(CONV_OPS)}: this torch build runs its CPU "
                 "convolutions through other operators, which this script does not know")
    job = {"kind": "train-epoch", "pipeline": "tutorial", "device": "cpu", "images": TRAIN_EPOCH_IMAGES,
           "data_dir": str(args.data_dir) if args.data_dir else None}
    tutorial = [run_worker(job)["seconds"] for _ in range(args.repeats)]

    steps = math.ceil(TRAIN_EPOCH_IMAGES / lenet[0]["batch_size"])
    # One repeat's figures throughout (the one with the median convolution time), so that the share and
    # the floor compare a step with its own convolutions.
    middle = sorted(lenet, key=lambda r: r["conv_ms"])[len(lenet) // 2]
    step_ms, conv_ms = middle["step_ms"], middle["conv_ms"]
    tut = statistics.median(tutorial)
    floor = conv_ms * steps / 1000
    each = ", ".join(f"{r['step_ms']:.1f}" for r in lenet)  # every repeat's step, for the noise
    print(f"lenet step ({lenet[0]['precision']}, batch {lenet[0]['batch_size']}): {step_ms:.1f} ms "
          f"(repeats {each}); inside the convolution calls: "
          f"{conv_ms:.1f} ms ({100 * conv_ms / middle['profiled_step_ms']:.0f}% of the profiled step; "
          + ", ".join(f"{k.removeprefix('aten::')} {v:.1f}" for k, v in middle["conv_ms_by_op"].items()) + ")")
    print(f"lenet epoch ({steps} steps): {step_ms * steps / 1000:.2f} s; its convolutions alone: {floor:.2f} s")
    print(f"tutorial epoch: {tut:.2f} s (repeats {', '.join(format(t, '.2f') for t in tutorial)})")
    print(f"ratio today: {tut / (step_ms * steps / 1000):.1f}x; with everything but the convolutions free: "
          f"{tut / floor:.1f}x at most; 5x needs an epoch of {tut / 5:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
