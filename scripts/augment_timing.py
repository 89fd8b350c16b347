"""Why `recipe.augment_batch` writes its sampling grid out instead of calling F.affine_grid.

    python scripts/augment_timing.py [--batch-size 256] [--repeats 300]

Times, in one process and alternating, the augmentation of one training batch two ways:
lenet's (the affine map's grid written out, then F.grid_sample) and the library's
(F.affine_grid, then the same F.grid_sample), and one whole training step (`recipe.train_step`)
for scale. Prints milliseconds per batch (medians over rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from lenet_cli.model.cpu_paths import speed_up
    from lenet_cli.model.lenet5 import build_model
    from lenet_cli.training.recipe import augment_batch, build_optimizer, build_schedule, train_step
    from lenet_cli.training.config import TrainConfig

    cfg = TrainConfig(batch_size=args.batch_size, precision="float32")  # the same step on every CPU
    b = args.batch_size
    x = torch.randint(0, 256, (b, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (b,))
    gen = torch.Generator().manual_seed(0)

    def library(images: torch.Tensor) -> torch.Tensor:
        u = torch.rand(b, 4, generator=gen) * 2 - 1  # the same draws as augment_batch
        angle = u[:, 0] * math.radians(cfg.max_rotation)
        scale = 1 + u[:, 1] * cfg.max_scale
        shift = u[:, 2:] * (cfg.max_shift / 14.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([cos, -sin, shift[:, 0], sin, cos, shift[:, 1]], 1).view(b, 2, 3)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    model = build_model(cfg.preset).train()
    net = speed_up(model, torch.device("cpu"))
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    sched = build_schedule(opt, cfg, 10_000)
    calls = {
        "written-out grid (lenet)": lambda: augment_batch(x.unsqueeze(1).float(), cfg, gen),
        "F.affine_grid": lambda: library(x.unsqueeze(1).float()),
        "whole training step": lambda: train_step(net, opt, sched, x, y, cfg, gen),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    per_round = max(1, args.repeats // 10)
    for _ in range(10):  # rounds, alternating, so a change in machine load hits all three
        for name, fn in calls.items():
            fn()
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            times[name].append((time.perf_counter() - t0) / per_round * 1e3)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, ms in med.items():
        print(f"{name:26s} {ms:7.2f} ms per batch of {b}")
    ours, lib, step = med["written-out grid (lenet)"], med["F.affine_grid"], med["whole training step"]
    print(f"F.affine_grid is {lib / ours:.1f}x the written-out grid; the difference is {(lib - ours) / step:.0%} "
          "of a training step")


if __name__ == "__main__":
    main()
