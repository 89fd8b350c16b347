"""Continuing a stopped run: the checkpoint must belong to this run, and its state must be sound.

A checkpoint's optimizer and schedule state follow torch.optim's layout, whoever wrote it:
torch.optim itself, or lenet 0.2.0's development builds, whose flat-buffer optimizer kept the
same layout (tests/fixtures holds one of their checkpoints). A file may have been edited, so
every number a step reads is checked here before it reaches torch.optim, which trusts it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lenet_cli.errors import UsageError, WeightsError, first_line
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.state import TrainState

if TYPE_CHECKING:  # pragma: no cover
    import torch

# The numbers a checkpoint may restore in each parameter group; every other key (the update rule:
# amsgrad, maximize, nesterov, ...; the implementation: fused, foreach, ...) is this run's, not the file's.
_NUMBERS = ("lr", "eps", "weight_decay", "momentum", "initial_lr", "max_lr", "min_lr", "max_momentum",
            "base_momentum")
_RESTORED = (*_NUMBERS, "betas")


def check_resumable(state: TrainState, cfg: TrainConfig, n: int, steps: int) -> None:
    """A checkpoint continues only the run it came from: same settings, same data size."""
    saved = state.config.to_dict()
    now = cfg.to_dict()
    differ = sorted(k for k in saved if saved[k] != now.get(k))
    if differ:
        raise UsageError(f"The checkpoint was made with different settings ({', '.join(differ)}).",
                         "Resume with the checkpoint's own settings (lenet train --resume PATH).")
    saved_n = state.extra.get("train_size", int(state.perm.numel()) if state.perm is not None else n)
    if saved_n != n or state.extra.get("steps_per_epoch", steps) != steps:
        raise UsageError(f"The checkpoint was made on {saved_n:,} training images, this data has {n:,}.",
                         "Resume with the same MNIST files and --val-size.")
    if state.epochs_done > cfg.epochs or (state.epochs_done == cfg.epochs and state.step):
        raise UsageError(f"The checkpoint is past the end of a {cfg.epochs}-epoch run.")
    if state.step >= steps:
        raise UsageError(f"The checkpoint's step {state.step} does not fit an epoch of {steps} steps.")


def restore(state: TrainState, model: "torch.nn.Module", opt: "torch.optim.Optimizer", sched: Any,
            gen: "torch.Generator", device: "torch.device", ema: Any = None) -> None:
    """Load a checkpoint's model, optimizer, schedule, generators and weights' average (`ema`).

    WeightsError if they do not fit.
    """
    import torch

    try:
        model.load_state_dict({k: v.to(device) for k, v in state.model.items()})
        if (ema is None) != (state.ema is None):
            raise ValueError("the run keeps a moving average of the weights and the checkpoint does not, "
                             "or the other way round")
        if ema is not None:
            ema.load_state_dict({k: v.to(device) for k, v in state.ema.items()})
        check_optimizer_state(state.optimizer, opt)
        ours = [{k: v for k, v in g.items() if k not in _RESTORED and k != "params"} for g in opt.param_groups]
        opt.load_state_dict(state.optimizer)
        for group, keep in zip(opt.param_groups, ours):
            for key in [k for k in group if k not in _RESTORED and k != "params"]:
                del group[key]
            group.update(keep)
        _place_step_counts(opt)
        check_schedule_state(state.scheduler, sched)
        # The schedule's shape (phases, anneal function, momentum cycling) is rebuilt from this run's
        # settings; only its position comes from the file.
        sched.last_epoch = state.scheduler["last_epoch"]
        sched._step_count = sched.last_epoch + 1
        sched._last_lr = [g["lr"] for g in opt.param_groups]
        gen.set_state(state.rng_shuffle)
        torch.set_rng_state(state.rng_torch)
        if device.type == "cuda" and state.rng_cuda is not None:
            torch.cuda.set_rng_state(state.rng_cuda, device)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError, ArithmeticError) as exc:
        raise WeightsError(f"The checkpoint does not fit this model or optimizer ({first_line(exc)}).",
                           "Resume from the checkpoint.safetensors `lenet train` wrote for this run.") from exc


def _place_step_counts(opt: "torch.optim.Optimizer") -> None:
    """Step counts where this run's kernels read them: on the parameter's device for fused or
    capturable updates, else on the CPU (torch.optim placed them by the file's own `fused` flag)."""
    import torch

    for group in opt.param_groups:
        on_device = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            entry = opt.state.get(p, {})
            if isinstance(entry.get("step"), torch.Tensor):
                entry["step"] = entry["step"].to(p.device if on_device else "cpu", torch.float32)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_optimizer_state(sd: dict[str, Any], opt: "torch.optim.Optimizer") -> None:
    """ValueError unless `sd` is a sound state of `opt`'s kind for `opt`'s parameters."""
    groups, state = sd["param_groups"], sd["state"]
    sizes = [len(g["params"]) for g in groups]
    ours = [len(g["params"]) for g in opt.param_groups]
    if sizes != ours:
        raise ValueError(f"parameter groups of sizes {sizes} do not match this model's {ours}")
    for group in groups:
        for key in _NUMBERS:
            if key in group and not _number(group[key]):
                raise ValueError(f"optimizer setting {key!r} is not a finite number: {group[key]!r}")
        betas = group.get("betas", (0.9, 0.999))
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_number(b) for b in betas)):
            raise ValueError(f"optimizer setting 'betas' is not two numbers: {betas!r}")
    offset = 0
    for group, n in zip(groups, ours):
        if list(group["params"]) != list(range(offset, offset + n)):
            raise ValueError("parameter groups do not list their parameters in order")
        offset += n
    params = [p for g in opt.param_groups for p in g["params"]]
    if state and set(state) != set(range(len(params))):
        raise ValueError("optimizer state does not cover every parameter")
    adam = "betas" in opt.param_groups[0]
    names = ("exp_avg", "exp_avg_sq") if adam else ("momentum_buffer",)
    steps = set()
    for i, entry in state.items():
        missing = [k for k in names if k not in entry]
        if missing:
            raise ValueError(f"optimizer state of parameter {i} lacks {missing}")
        for name in names:
            if tuple(entry[name].shape) != tuple(params[i].shape):
                raise ValueError(f"optimizer state {name} of parameter {i} has shape "
                                 f"{tuple(entry[name].shape)}, expected {tuple(params[i].shape)}")
        if adam:
            step = float(entry["step"])
            if not (math.isfinite(step) and step == int(step) and step >= 1):
                raise ValueError(f"optimizer step count {step!r} is not a positive whole number")
            steps.add(step)
    if len(steps) > 1:
        raise ValueError("parameters with different step counts")


def check_schedule_state(sd: Any, sched: Any) -> None:
    """ValueError unless `sd` is a position of this schedule (same length, a step within it)."""
    if not isinstance(sd, dict):
        raise ValueError("schedule state is not an object")
    total = getattr(sched, "total_steps", None)
    if total is not None and sd.get("total_steps", total) != total:
        raise ValueError(f"a schedule of {sd['total_steps']} steps, this run has {total}")
    value = sd["last_epoch"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (total is not None and value > total):
        raise ValueError(f"schedule position {value!r} is not a step of this schedule")
