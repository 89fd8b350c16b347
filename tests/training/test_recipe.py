"""The training recipe on torch.optim: optimizer groups, the schedule, and old checkpoints that still resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lenet_cli.training.checkpoint import load_checkpoint
from lenet_cli.data.mnist import load_split, train_val_split
from lenet_cli.model.lenet5 import build_model
from lenet_cli.training.recipe import build_optimizer, build_schedule, train_step
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.loop import train

CPU = torch.device("cpu")
FIXTURES = Path(__file__).parents[1] / "fixtures"
# Written by lenet 0.2.0.dev0 (commit 8f4797e), whose flat-buffer optimizer kept torch.optim's
# state layout: AdamW, 2 epochs, batch 64, val-size 100, seed 5, stopped at the end of epoch 1,
# trained on conftest.write_mnist's synthetic set (the `tiny_mnist` fixture).
FLAT_CHECKPOINT = FIXTURES / "checkpoint-0.2.0.dev0-adamw.safetensors"


def test_optimizer_is_torch_optim_with_no_decay_on_biases_and_norms():
    model = build_model("modern")
    opt = build_optimizer(model, TrainConfig(), CPU)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == TrainConfig().weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert decay["fused"]  # the CPU has fused AdamW kernels
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd"), CPU)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]


@pytest.mark.parametrize("total", [1, 2, 5, 6, 60])
def test_one_cycle_schedule_runs_every_length(total):
    """torch's OneCycleLR divides by zero for 5 steps in all with a 20% warm-up; the recipe avoids it."""
    model = build_model("modern")
    cfg = TrainConfig(epochs=total)
    opt = build_optimizer(model, cfg, CPU)
    sched = build_schedule(opt, cfg, steps_per_epoch=1)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(0 < lr <= cfg.lr for lr in lrs)
    if total >= 5:
        assert max(lrs) == pytest.approx(cfg.lr, rel=0.2) and lrs[-1] < cfg.lr / 100


def test_train_step_moves_the_weights_and_the_schedule():
    torch.manual_seed(0)
    model = build_model("modern").train()
    cfg = TrainConfig(epochs=1)
    opt = build_optimizer(model, cfg, CPU)
    sched = build_schedule(opt, cfg, steps_per_epoch=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    loss, logits = train_step(model, opt, sched, x, torch.arange(8) % 10, cfg, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and logits.shape == (8, 10) and not loss.requires_grad
    assert sched.last_epoch == 1
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_checkpoint_of_the_flat_optimizer_resumes_on_torch_optim(tiny_mnist):
    state = load_checkpoint(FLAT_CHECKPOINT)
    # Predates --precision and --clean-epochs; records the peak rate and smoothing of its day.
    assert state.config == TrainConfig(epochs=2, batch_size=64, lr=6e-3, label_smoothing=0.0, val_size=100, seed=5,
                                       precision="float32", clean_epochs=0)
    assert (state.epochs_done, state.step) == (1, 0) and state.optimizer["state"]
    splits = train_val_split(load_split(tiny_mnist, "train", allow_download=False), state.config.val_size)
    result = train(state.config, *splits, CPU, resume=state)
    assert [r.epoch for r in result.history] == [1, 2]
    assert all(torch.isfinite(v).all() for v in result.last_state.values() if v.is_floating_point())
    fresh = train(state.config, *splits, CPU)
    assert result.history[-1].lr == pytest.approx(fresh.history[-1].lr)  # the schedule went on from its position
    assert result.history[0] == state.history[0]
