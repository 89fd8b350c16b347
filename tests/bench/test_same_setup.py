"""`lenet bench` times the training step `lenet train` runs, built by the same function with the same settings."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

from lenet_cli.bench import worker
from lenet_cli.data.mnist import load_split, train_val_split
from lenet_cli.training import loop
from lenet_cli.training import setup as setup_mod
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.recipe import resolve_precision
from lenet_cli.training.setup import TrainingSetup


def _spy_setups(monkeypatch) -> tuple[list[TrainingSetup], collections.Counter]:
    """Record every TrainingSetup built, and count the steps each one runs."""
    built: list[TrainingSetup] = []
    steps: collections.Counter = collections.Counter()
    real_build, real_step = setup_mod.build_setup, TrainingSetup.step

    def build(*args, **kwargs) -> TrainingSetup:
        built.append(real_build(*args, **kwargs))
        return built[-1]

    def step(self, *args, **kwargs):
        steps[id(self)] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(setup_mod, "build_setup", build)
    monkeypatch.setattr(loop, "build_setup", build)
    monkeypatch.setattr(TrainingSetup, "step", step)
    return built, steps


def _group_settings(opt: torch.optim.Optimizer) -> list[dict]:
    """Each parameter group's hyperparameters, less those the one-cycle schedule moves (lr, betas)."""
    return [{k: v for k, v in g.items() if k not in ("params", "lr", "betas")} | {"sizes": [p.numel() for p in g["params"]]}
            for g in opt.param_groups]


@pytest.mark.slow
def test_bench_times_the_setup_and_step_that_train_runs(tiny_mnist, monkeypatch):
    built, steps = _spy_setups(monkeypatch)
    cpu = torch.device("cpu")
    # lenet train's recipe (the defaults), on the tiny set: only the length of the run and the split differ.
    cfg = resolve_precision(dataclasses.replace(TrainConfig(), epochs=1, val_size=100), cpu)
    train_split, val_split = train_val_split(load_split(tiny_mnist, "train", allow_download=False), cfg.val_size)
    loop.train(cfg, train_split, val_split, cpu)
    answer = worker.lenet_epoch({"device": "cpu", "images": 256})

    assert len(built) == 2, "lenet bench must build its run with training.setup.build_setup"
    trained, benched = built
    same_length = dataclasses.replace(benched.cfg, epochs=cfg.epochs, val_size=cfg.val_size)
    assert same_length == trained.cfg  # every setting of the recipe: precision, augmentation, optimizer, ...
    assert type(benched.net) is type(trained.net)  # the same CPU path
    assert type(benched.opt) is type(trained.opt) and benched.opt.defaults == trained.opt.defaults
    assert _group_settings(benched.opt) == _group_settings(trained.opt)
    assert type(benched.sched) is type(trained.sched)
    assert (benched.ema is None) == (trained.ema is None)
    # Both ran their steps through TrainingSetup.step: the bench's timed epoch plus its warm-up.
    assert steps[id(trained)] == trained.steps_per_epoch
    assert steps[id(benched)] == answer["steps"] + worker.WARMUP_STEPS
