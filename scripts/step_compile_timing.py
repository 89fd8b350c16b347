"""Do torch.compile and bf16 autocast pay on lenet's training step? Times `recipe.train_step` several ways.

    python scripts/step_compile_timing.py [--batch-size 256] [--steps 40] [--rounds 5] [--ways WAY ...]

Each way runs in its own fresh process (compiled code and thread pools stay out of each other's
figures): `eager`, the step `lenet train` runs on the CPU in float32 (the model through `kernels.speed_up`;
the batch is --batch-size, 256 by default, the batch of the README's figures; `lenet train`'s is 128);
`compile-plain`, the plain model from `model.py` under `torch.compile`; `compile-kernels`, the
CPU paths under `torch.compile`; `eager-bf16`, the eager step with `--precision bf16` (the
forward pass under bfloat16 autocast); `plain` and `plain-bf16`, the plain model without the CPU
paths, in float32 and in bf16. The same step function (augmentation, forward, loss, backward,
fused AdamW, schedule) on a random batch of MNIST's shape. Prints the seconds the first three steps
took (compiling, for the compiled ways, from an empty compile cache) and milliseconds per step over `--rounds` rounds of
`--steps` steps (min, median, max). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

WAYS = ("eager", "compile-plain", "compile-kernels", "eager-bf16", "plain", "plain-bf16")


def measure(way: str, batch_size: int, steps: int, rounds: int) -> None:
    """Time one way in this process and print one line."""
    import torch

    from lenet_cli.model.cpu_paths import speed_up
    from lenet_cli.model.lenet5 import build_model
    from lenet_cli.training.recipe import build_optimizer, build_schedule, train_step
    from lenet_cli.training.config import TrainConfig

    torch.manual_seed(0)
    # The ways ending in -bf16 run train_step's bfloat16 autocast (--precision bf16); the rest float32.
    cfg = TrainConfig(batch_size=batch_size, precision="bf16" if way.endswith("-bf16") else "float32")
    device = torch.device("cpu")
    model = build_model(cfg.preset)
    net = {"eager": lambda: speed_up(model, device),
           "compile-plain": lambda: torch.compile(model),
           "compile-kernels": lambda: torch.compile(speed_up(model, device)),
           "plain": lambda: model}[way.removesuffix("-bf16")]()
    opt = build_optimizer(model, cfg, device)
    sched = build_schedule(opt, cfg, steps * rounds + 3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch_size, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (batch_size,))
    start = time.perf_counter()
    for _ in range(3):
        train_step(net, opt, sched, x, y, cfg, gen)
    first = time.perf_counter() - start
    per_step = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            train_step(net, opt, sched, x, y, cfg, gen)
        per_step.append((time.perf_counter() - start) / steps * 1000)
    print(f"{way:16} {first:10.1f} {min(per_step):8.2f} {statistics.median(per_step):8.2f} {max(per_step):8.2f}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS), help="the ways to time (default: all)")
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # the child process's one way
    args = parser.parse_args()
    if args.way:
        measure(args.way, args.batch_size, args.steps, args.rounds)
        return
    print(f"batch {args.batch_size}; ms per step over {args.rounds} rounds of {args.steps} steps", flush=True)
    print(f"{'way':16} {'first 3 s':>10} {'min':>8} {'median':>8} {'max':>8}", flush=True)
    for way in args.ways:
        # An empty compile cache per process: the first-step figure is what a first run pays.
        with tempfile.TemporaryDirectory() as cache:
            subprocess.run([sys.executable, __file__, "--way", way, "--batch-size", str(args.batch_size),
                            "--steps", str(args.steps), "--rounds", str(args.rounds)],
                           check=True, env=os.environ | {"TORCHINDUCTOR_CACHE_DIR": cache})


if __name__ == "__main__":
    main()
