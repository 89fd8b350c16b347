"""One training setup: the model, the network the steps call, optimizer, schedule, EMA and generator.

`lenet train`, every process of a torchrun launch and `lenet bench`'s training epoch build
their run through `build_setup`, and step through `TrainingSetup.step`, so the benchmark
times the step that training runs, with the same settings (precision, CPU paths, memory
policy, cuDNN flags, EMA). The order of the calls below is part of the recipe: it fixes
which random numbers the model's initialisation draws, so the same seed gives the same
weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lenet_cli.training.config import TrainConfig
from lenet_cli.training.recipe import (
    build_ema,
    build_optimizer,
    build_schedule,
    seed_everything,
    train_step,
)
from lenet_cli.utils.memory import TRAINING_TRIM_THRESHOLD, reuse_freed_memory

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lenet_cli.model.lenet5 import LeNet5, ModelConfig


@dataclass
class TrainingSetup:
    """Everything a training step touches. `net` is what the steps call; it shares `model`'s parameters."""

    cfg: TrainConfig  # precision already resolved for `device`
    device: "torch.device"
    model: "LeNet5"
    net: "torch.nn.Module"  # the CPU paths where they apply (model.cpu_paths.speed_up)
    opt: "torch.optim.Optimizer"
    sched: Any
    ema: Any  # torch.optim.swa_utils.AveragedModel, or None without --ema
    gen: "torch.Generator"  # CPU generator: shuffling and augmentation draw from it on every device
    steps_per_epoch: int

    @property
    def clean_cfg(self) -> TrainConfig:
        """The recipe of the last --clean-epochs epochs: the same, without augmentation."""
        return dataclasses.replace(self.cfg, augment=False)

    @property
    def result_model(self) -> "torch.nn.Module":
        """What validation sees and what is saved: the moving average with --ema, else the model."""
        return self.model if self.ema is None else self.ema.module

    def step(self, x: "torch.Tensor", y: "torch.Tensor", augment: bool = True,
             net: "torch.nn.Module | None" = None) -> tuple["torch.Tensor", "torch.Tensor"]:
        """One `recipe.train_step` on a uint8 batch (B, 28, 28): returns (loss, logits).

        `net` replaces `self.net` (torchrun's DistributedDataParallel wrapper around it).
        """
        cfg = self.cfg if augment else self.clean_cfg
        return train_step(net or self.net, self.opt, self.sched, x, y, cfg, self.gen, self.ema)


def build_setup(cfg: TrainConfig, model_cfg: "ModelConfig | str", device: "torch.device",
                steps_per_epoch: int) -> TrainingSetup:
    """Seed, set the device's policies, build the model and its optimizer, schedule and EMA.

    `cfg.precision` must already be resolved for `device` (recipe.resolve_precision), so the
    files record what ran. The schedule spans `cfg.epochs * steps_per_epoch` steps.
    """
    import torch

    from lenet_cli.model.cpu_paths import speed_up
    from lenet_cli.model.lenet5 import build_model

    seed_everything(cfg.seed)
    if device.type == "cpu":
        reuse_freed_memory(TRAINING_TRIM_THRESHOLD)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    model = build_model(model_cfg).to(device)
    net = speed_up(model, device)
    opt = build_optimizer(model, cfg, device)
    sched = build_schedule(opt, cfg, steps_per_epoch)
    ema = build_ema(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    return TrainingSetup(cfg, device, model, net, opt, sched, ema, gen, steps_per_epoch)
