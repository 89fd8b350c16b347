"""AdamW and SGD over one flat parameter buffer, and the one-cycle learning-rate schedule.

The same updates and the same schedule as torch.optim.AdamW (decoupled weight decay),
torch.optim.SGD (Nesterov momentum) and torch.optim.lr_scheduler.OneCycleLR, with the
same state_dict layout, so checkpoints written with either resume with the other.

Why not torch.optim itself: its first use imports torch._dynamo (every optimizer method
is wrapped to disable the compiler), which costs ~1.3 s at start-up and ~1 s more at
interpreter exit on a 2-core machine, a third of `lenet train`'s fixed cost. And
LeNet-5's 61,728 parameters in 12 tensors update as one buffer: a handful of
vectorised ops per parameter group and step.

How: every parameter becomes a view into one flat tensor, and its `.grad` a view into
one flat gradient, so backward accumulates straight into the flat gradient and a step is
a few whole-buffer operations per parameter group. Anything that replaces a parameter's
storage afterwards (model.to() to another device or dtype, load_state_dict(assign=True))
detaches it from the buffer; zero_grad() checks for that and raises.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


class FlatOptimizer:
    """AdamW (decoupled weight decay) or SGD with Nesterov momentum over a flat buffer.

    `groups` is a list of {"params": [...], "weight_decay": float}; parameters are laid
    out in group order, and their index in state_dict() counts across groups in that
    order, as torch.optim does. `param_groups` holds each group's hyperparameters (lr,
    betas or momentum, ...) for the schedule to change between steps.
    """

    def __init__(
        self,
        groups: list[dict[str, Any]],
        kind: str,
        lr: float,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        momentum: float = 0.9,
    ) -> None:
        import torch

        if kind not in ("adamw", "sgd"):
            raise ValueError(f"unknown optimizer {kind!r}")
        self.kind = kind
        self.params: list[torch.nn.Parameter] = [p for g in groups for p in g["params"]]
        if not self.params:
            raise ValueError("no parameters to optimize")
        first = self.params[0]
        if any(p.device != first.device or p.dtype != first.dtype for p in self.params):
            raise ValueError("all parameters must share one device and dtype")
        total = sum(p.numel() for p in self.params)
        self.flat = torch.empty(total, device=first.device, dtype=first.dtype)
        self.flat_grad = torch.zeros_like(self.flat)
        self._slices: list[slice] = []  # each group's range in the flat buffer
        self._spans: list[slice] = []  # each parameter's range, in self.params order
        self._group_sizes: list[int] = []  # parameters per group
        offset = 0
        with torch.no_grad():
            for g in groups:
                start = offset
                for p in g["params"]:
                    span = slice(offset, offset + p.numel())
                    self.flat[span].copy_(p.reshape(-1))
                    p.data = self.flat[span].view_as(p)
                    self._spans.append(span)
                    offset = span.stop
                self._slices.append(slice(start, offset))
                self._group_sizes.append(len(g["params"]))
        self._bind_grads()
        # The per-group hyperparameters, named as torch.optim names them.
        self.param_groups: list[dict[str, Any]] = []
        for g in groups:
            if kind == "adamw":
                group = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": float(g.get("weight_decay", 0.0)),
                         "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                         "differentiable": False, "fused": None, "decoupled_weight_decay": True}
            else:
                group = {"lr": lr, "momentum": momentum, "dampening": 0, "weight_decay": float(g.get("weight_decay", 0.0)),
                         "nesterov": True, "maximize": False, "foreach": None, "differentiable": False, "fused": None}
            self.param_groups.append(group)
        self.steps = 0
        # AdamW: first and second moments; SGD: the momentum buffer (exp_avg) only.
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat) if kind == "adamw" else None

    def _bind_grads(self) -> None:
        for p, span in zip(self.params, self._spans):
            p.grad = self.flat_grad[span].view_as(p)

    def zero_grad(self) -> None:
        """Zero the flat gradient (backward then accumulates into it in place)."""
        base, grad_base, size = self.flat.data_ptr(), self.flat_grad.data_ptr(), self.flat.element_size()
        for p, span in zip(self.params, self._spans):
            if p.data_ptr() != base + span.start * size:
                raise RuntimeError("a parameter was moved out of the optimizer's buffer (model.to()?): "
                                   "build the optimizer after the model is on its device")
        for p, span in zip(self.params, self._spans):
            if p.grad is None or p.grad.data_ptr() != grad_base + span.start * size:
                # Something replaced the gradient views (model.zero_grad() sets them to None).
                self._bind_grads()
                break
        self.flat_grad.zero_()

    def step(self) -> None:
        """One update of every parameter from the gradient accumulated since zero_grad()."""
        import torch

        self.steps += 1
        with torch.no_grad():
            for group, sl in zip(self.param_groups, self._slices):
                if sl.start == sl.stop:
                    continue
                p, g, m = self.flat[sl], self.flat_grad[sl], self.exp_avg[sl]
                lr, wd = group["lr"], group["weight_decay"]
                if self.kind == "adamw":
                    beta1, beta2 = group["betas"]
                    v = self.exp_avg_sq[sl]
                    if wd:
                        p.mul_(1 - lr * wd)
                    m.lerp_(g, 1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    step_size = lr / (1 - beta1**self.steps)
                    denom = (v.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(group["eps"])
                    p.addcdiv_(m, denom, value=-step_size)
                else:
                    mom = group["momentum"]
                    d = g.add(p, alpha=wd) if wd else g
                    if self.steps == 1:
                        m.copy_(d)
                    else:
                        m.mul_(mom).add_(d)
                    p.add_(d.add(m, alpha=mom), alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: per-parameter state by index, and the param groups."""
        import torch

        state: dict[int, dict[str, Any]] = {}
        if self.steps:
            for i, (p, span) in enumerate(zip(self.params, self._spans)):
                if self.kind == "adamw":
                    state[i] = {"step": torch.tensor(float(self.steps)), "exp_avg": self.exp_avg[span].view_as(p).clone(),
                                "exp_avg_sq": self.exp_avg_sq[span].view_as(p).clone()}
                else:
                    # SGD keeps no step count; the buffer's existence says the first step is done.
                    state[i] = {"momentum_buffer": self.exp_avg[span].view_as(p).clone()}
        groups, index = [], 0
        for group, count in zip(self.param_groups, self._group_sizes):
            groups.append(dict(group) | {"params": list(range(index, index + count))})
            index += count
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore from state_dict() or from the matching torch.optim optimizer's state_dict()."""
        import torch

        groups, state = sd["param_groups"], sd["state"]
        sizes = [len(g["params"]) for g in groups]
        if sizes != self._group_sizes:
            raise ValueError(f"parameter groups of sizes {sizes} do not match this model's {self._group_sizes}")
        names = ("exp_avg", "exp_avg_sq") if self.kind == "adamw" else ("momentum_buffer",)
        if state and set(state) != set(range(len(self.params))):
            raise ValueError("optimizer state does not cover every parameter")
        steps = 0
        with torch.no_grad():
            exp_avg = torch.zeros_like(self.exp_avg)
            exp_avg_sq = None if self.exp_avg_sq is None else torch.zeros_like(self.exp_avg_sq)
            bufs = [exp_avg] if self.kind == "sgd" else [exp_avg, exp_avg_sq]  # in the order of `names`
            for i, (p, span) in enumerate(zip(self.params, self._spans)):
                if state:
                    entry = state[i]
                    missing = [k for k in names if k not in entry]
                    if missing:
                        raise ValueError(f"optimizer state of parameter {i} lacks {missing}")
                    for name, buf in zip(names, bufs):
                        value = entry[name]
                        if tuple(value.shape) != tuple(p.shape):
                            raise ValueError(f"optimizer state {name} of parameter {i} has shape "
                                             f"{tuple(value.shape)}, expected {tuple(p.shape)}")
                        buf[span].copy_(value.reshape(-1))
                    if self.kind == "adamw":
                        step = float(entry["step"])
                        if not (math.isfinite(step) and step == int(step) and step >= 1):
                            raise ValueError(f"optimizer step count {step!r} is not a positive whole number")
                        if i and int(step) != steps:
                            raise ValueError("parameters with different step counts")
                        steps = int(step)
                    else:
                        steps = 1  # SGD: only "has stepped" matters (the buffer is initialised)
            self.exp_avg.copy_(exp_avg)
            if exp_avg_sq is not None:
                self.exp_avg_sq.copy_(exp_avg_sq)
        updates = []
        for group, saved in zip(self.param_groups, groups):
            update = {k: v for k, v in saved.items() if k != "params"}
            _check_hyperparameters(update)
            updates.append(update)
        self.steps = steps
        for group, update in zip(self.param_groups, updates):
            group.update(update)
            if "betas" in group:
                group["betas"] = tuple(group["betas"])


def _check_hyperparameters(group: dict[str, Any]) -> None:
    """ValueError unless the numbers a step reads are finite numbers (a checkpoint may be edited)."""

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for key in ("lr", "eps", "weight_decay", "momentum", "initial_lr", "max_lr", "min_lr", "max_momentum",
                "base_momentum"):
        if key in group and not number(group[key]):
            raise ValueError(f"optimizer setting {key!r} is not a finite number: {group[key]!r}")
    if "betas" in group:
        betas = group["betas"]
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(number(b) for b in betas)):
            raise ValueError(f"optimizer setting 'betas' is not two numbers: {betas!r}")


class OneCycle:
    """torch.optim.lr_scheduler.OneCycleLR with cosine annealing and two phases.

    The learning rate rises from max_lr/div_factor to max_lr over the first pct_start of
    the steps and falls to max_lr/div_factor/final_div_factor by the last; momentum (AdamW's
    beta1) moves the opposite way between max_momentum and base_momentum.
    """

    def __init__(self, opt: FlatOptimizer, max_lr: float, total_steps: int, *, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, base_momentum: float = 0.85,
                 max_momentum: float = 0.95) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.opt = opt
        self.total_steps = total_steps
        self._phases = ((float(pct_start * total_steps) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                        (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"))
        for group in opt.param_groups:
            group["initial_lr"] = max_lr / div_factor
            group["max_lr"] = max_lr
            group["min_lr"] = group["initial_lr"] / final_div_factor
            group["max_momentum"] = max_momentum
            group["base_momentum"] = base_momentum
        self.last_epoch = -1
        self.step()

    @staticmethod
    def _cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def step(self) -> None:
        """Advance one step and set the next step's learning rate and momentum."""
        self.last_epoch += 1
        self._apply()

    def _apply(self) -> None:
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(f"stepped {t} times; the schedule has {self.total_steps} steps")
        for group in self.opt.param_groups:
            start = 0.0
            for i, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
                if t <= end or i == len(self._phases) - 1:
                    # A phase of no length (5 steps in all: warm-up ends at step 0) is at its end.
                    pct = (t - start) / (end - start) if end != start else 1.0
                    group["lr"] = self._cos(group[lr0], group[lr1], pct)
                    momentum = self._cos(group[m0], group[m1], pct)
                    break
                start = end
            if "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum

    def state_dict(self) -> dict[str, Any]:
        """The fields torch's OneCycleLR keeps that a resumed run needs."""
        return {"total_steps": self.total_steps, "last_epoch": self.last_epoch, "_step_count": self.last_epoch + 1,
                "_last_lr": [g["lr"] for g in self.opt.param_groups]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore from state_dict() or from OneCycleLR.state_dict()."""
        if sd.get("total_steps", self.total_steps) != self.total_steps:
            raise ValueError(f"a schedule of {sd['total_steps']} steps, this run has {self.total_steps}")
        self.last_epoch = _step_count(sd, self.total_steps)
        self._apply()


class Constant:
    """A constant learning rate, with the schedule interface (torch's LambdaLR with factor 1)."""

    def __init__(self, opt: FlatOptimizer) -> None:
        self.opt = opt
        self.last_epoch = 0
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def step(self) -> None:
        """Count the step; the learning rate stays."""
        self.last_epoch += 1

    def state_dict(self) -> dict[str, Any]:
        """The step count, in LambdaLR's field names (its lambdas, being functions, save as None)."""
        return {"last_epoch": self.last_epoch, "_step_count": self.last_epoch + 1,
                "_last_lr": [g["lr"] for g in self.opt.param_groups], "lr_lambdas": [None] * len(self.opt.param_groups)}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore from state_dict() or LambdaLR.state_dict()."""
        self.last_epoch = _step_count(sd, None)


def _step_count(sd: dict[str, Any], most: int | None) -> int:
    """A schedule state's `last_epoch`: a whole number from 0 to `most` (ValueError otherwise)."""
    value = sd["last_epoch"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (most is not None and value > most):
        raise ValueError(f"schedule position {value!r} is not a step of this schedule")
    return value
