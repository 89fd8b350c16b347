"""The flat-buffer AdamW/SGD and the one-cycle schedule against torch.optim, step for step."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lenet_cli.model import build_model
from lenet_cli.optim import Constant, FlatOptimizer, OneCycle
from lenet_cli.train import TrainConfig, _optimizer, _scheduler

STEPS_PER_EPOCH = 4  # x 15 epochs: a 60-step schedule, so 40 steps cross the one-cycle peak at step 12


def _torch_pair(model, cfg: TrainConfig):
    """torch.optim's optimizer and schedule, set up as lenet 0.1.0 set them up."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.schedule == "constant":
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs,
                                                    steps_per_epoch=STEPS_PER_EPOCH, pct_start=0.2)


def _twins(cfg: TrainConfig):
    """Two identical models: one with lenet's optimizer, one with torch.optim's."""
    torch.manual_seed(0)
    ours = build_model("modern").train()
    theirs = build_model("modern").train()
    theirs.load_state_dict(ours.state_dict())
    opt = _optimizer(ours, cfg)
    return (ours, opt, _scheduler(opt, cfg, STEPS_PER_EPOCH)), (theirs, *_torch_pair(theirs, cfg))


def _run(trio, steps: int, x: torch.Tensor, y: torch.Tensor) -> None:
    model, opt, sched = trio
    for i in range(steps):
        torch.manual_seed(i)  # the same dropout masks in both models
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def _max_diff(a, b) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.state_dict().values(), b.state_dict().values()))


CASES = [("adamw", "onecycle", 6e-3), ("adamw", "constant", 1e-3), ("sgd", "onecycle", 0.05), ("sgd", "constant", 0.02)]


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(32, 1, 28, 28, generator=g) * 255, torch.randint(0, 10, (32,), generator=g)


@pytest.mark.parametrize("kind, schedule, lr", CASES, ids=[f"{k}-{s}" for k, s, _ in CASES])
def test_same_updates_and_schedule_as_torch_optim(batch, kind, schedule, lr):
    cfg = TrainConfig(optimizer=kind, schedule=schedule, lr=lr)
    ours, theirs = _twins(cfg)
    start = {k: v.clone() for k, v in ours[0].state_dict().items()}
    _run(ours, 40, *batch)
    _run(theirs, 40, *batch)
    moved = max((v - start[k]).abs().max().item() for k, v in ours[0].state_dict().items())
    assert moved > 1e-3  # the comparison below is not between two untouched models
    assert _max_diff(ours[0], theirs[0]) < 1e-5
    for mine, torch_group in zip(ours[1].param_groups, theirs[1].param_groups):
        assert mine["lr"] == pytest.approx(torch_group["lr"], rel=1e-12)
        key = "betas" if kind == "adamw" else "momentum"
        assert mine[key] == pytest.approx(torch_group[key], rel=1e-12)


@pytest.mark.parametrize("kind, schedule, lr", CASES, ids=[f"{k}-{s}" for k, s, _ in CASES])
def test_state_dicts_carry_over_both_ways(batch, kind, schedule, lr):
    """A checkpoint of torch.optim (lenet 0.1.0) resumes with ours, and ours with torch.optim."""
    cfg = TrainConfig(optimizer=kind, schedule=schedule, lr=lr)
    ours, theirs = _twins(cfg)
    _run(theirs, 20, *batch)
    # torch -> ours: load the model, the optimizer and the schedule, then both go on.
    ours[0].load_state_dict(theirs[0].state_dict())
    ours[1].load_state_dict(theirs[1].state_dict())
    ours[2].load_state_dict(theirs[2].state_dict())
    _run(ours, 20, *batch)
    _run(theirs, 20, *batch)
    assert _max_diff(ours[0], theirs[0]) < 1e-5
    # ours -> a fresh torch.optim pair.
    torch.manual_seed(5)
    fresh = build_model("modern").train()
    fresh.load_state_dict(ours[0].state_dict())
    opt, sched = _torch_pair(fresh, cfg)
    opt.load_state_dict(ours[1].state_dict())
    sched.load_state_dict(ours[2].state_dict())
    _run((fresh, opt, sched), 10, *batch)
    _run(ours, 10, *batch)
    assert _max_diff(ours[0], fresh) < 1e-5


def test_backward_accumulates_into_the_flat_gradient(batch):
    torch.manual_seed(0)
    model = build_model("modern")
    opt = _optimizer(model, TrainConfig())
    opt.zero_grad()
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    per_param = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert opt.flat_grad.abs().sum() > 0
    assert torch.equal(torch.sort(per_param).values, torch.sort(opt.flat_grad).values)
    # model.zero_grad() drops the views; the optimizer binds them again instead of stepping on nothing.
    model.zero_grad()
    opt.zero_grad()
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert opt.flat_grad.abs().sum() > 0


def test_state_dict_of_another_model_is_refused():
    torch.manual_seed(0)
    opt = _optimizer(build_model("modern"), TrainConfig())
    other = _optimizer(build_model("classic"), TrainConfig())
    with pytest.raises(ValueError, match="groups"):
        opt.load_state_dict(other.state_dict())
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="lacks"):
        bad = {"state": {i: {"step": torch.tensor(1.0)} for i in range(len(opt.params))}, "param_groups": sd["param_groups"]}
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="shape"):
        bad = {"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}
                         for i in range(len(opt.params))}, "param_groups": sd["param_groups"]}
        opt.load_state_dict(bad)


def test_schedule_refuses_another_length_and_overruns():
    opt = FlatOptimizer([{"params": [torch.nn.Parameter(torch.zeros(3))]}], "adamw", 1e-3)
    sched = OneCycle(opt, 1e-3, 10)
    with pytest.raises(ValueError, match="10"):
        sched.load_state_dict({"total_steps": 20, "last_epoch": 3})
    for _ in range(10):
        sched.step()  # the last step's rate (step 10, one past the end) is what torch reports too
    with pytest.raises(ValueError, match="stepped 11"):
        sched.step()
    opt = FlatOptimizer([{"params": [torch.nn.Parameter(torch.zeros(3))]}], "sgd", 0.1)
    const = Constant(opt)
    const.step()
    assert opt.param_groups[0]["lr"] == 0.1 and const.state_dict()["last_epoch"] == 1


def test_training_does_not_import_the_compiler(tiny_mnist):
    """torch.optim imports torch._dynamo (seconds at start-up and exit); lenet's training path must not."""
    code = (
        "import sys, torch\n"
        "from lenet_cli.data import load_split, train_val_split\n"
        "from lenet_cli.train import TrainConfig, train\n"
        f"splits = train_val_split(load_split({str(tiny_mnist)!r}, 'train', allow_download=False), 100)\n"
        "train(TrainConfig(epochs=1, batch_size=64, val_size=100, device='cpu'), *splits, torch.device('cpu'))\n"
        "print('DYNAMO' if 'torch._dynamo' in sys.modules else 'NODYNAMO')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NODYNAMO"), out.stdout + out.stderr


@pytest.mark.parametrize("total", [1, 2, 4, 6, 60, 859])
@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_one_cycle_rates_equal_torch_at_every_step(total, kind):
    """Learning rate and momentum (AdamW's beta1) at every step, the one past the end included."""
    ours = FlatOptimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], kind, 1e-3)
    sched = OneCycle(ours, 6e-3, total, pct_start=0.2)
    ref_opt = (torch.optim.AdamW if kind == "adamw" else torch.optim.SGD)([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=6e-3, total_steps=total, pct_start=0.2)
    key = "betas" if kind == "adamw" else "momentum"
    for _ in range(total + 1):
        assert ours.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        assert ours.param_groups[0][key] == pytest.approx(ref_opt.param_groups[0][key], rel=1e-12)
        if sched.last_epoch < total:
            ref_opt.step()  # torch warns when the schedule steps before the optimizer
            sched.step()
            ref.step()


def test_a_five_step_schedule_warms_up_in_no_time():
    """pct_start * 5 steps = one step: torch's OneCycleLR divides by zero there; this one is at its peak."""
    opt = FlatOptimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], "adamw", 1e-3)
    sched = OneCycle(opt, 6e-3, 5, pct_start=0.2)
    rates = [opt.param_groups[0]["lr"]]
    for _ in range(4):
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(6e-3) and rates == sorted(rates, reverse=True)


def test_a_parameter_moved_off_the_buffer_is_an_error():
    model = build_model("modern")
    opt = _optimizer(model, TrainConfig())
    model.to(torch.float64)  # new storage for every parameter: updates would no longer reach them
    with pytest.raises(RuntimeError, match="buffer"):
        opt.zero_grad()
