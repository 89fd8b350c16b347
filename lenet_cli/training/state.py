"""What a training run produces and what it needs to continue: per-epoch records, result, full state.

Plain dataclasses with no torch at import: `EpochRecord` (one row of the per-epoch table),
`TrainResult` (what a run produced) and `TrainState` (everything a run needs to continue
exactly where it stopped; checkpoint.py writes and reads it), and the CPU copies they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lenet_cli.training.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class EpochRecord:
    """One row of the per-epoch table."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    images_per_s: float


@dataclass
class TrainResult:
    """What a run produced: history, best epoch and the models' states (CPU tensors)."""

    history: list[EpochRecord]
    best_epoch: int
    best_state: dict[str, "torch.Tensor"]
    last_state: dict[str, "torch.Tensor"]
    model: "torch.nn.Module"  # the trained LeNet5 (model.py), on its training device
    param_count: int
    device: str
    train_seconds: float
    interrupted: bool = False
    stopped_in: tuple[int, int, int] | None = None  # (epoch, steps done, steps) when stopped mid-epoch

    @property
    def best(self) -> EpochRecord | None:
        """The epoch saved as best.safetensors (see `train.select_best`)."""
        return next((r for r in self.history if r.epoch == self.best_epoch), None)


@dataclass
class TrainState:
    """The complete state of a training run between two steps (CPU tensors)."""

    config: TrainConfig
    epochs_done: int  # completed epochs
    step: int  # steps done in epoch `epochs_done + 1` (0: at an epoch boundary)
    model: dict[str, "torch.Tensor"]
    optimizer: dict[str, Any]  # torch.optim state_dict
    scheduler: dict[str, Any]  # torch.optim.lr_scheduler state_dict
    rng_shuffle: "torch.Tensor"
    rng_torch: "torch.Tensor"
    rng_cuda: "torch.Tensor | None"
    history: list[EpochRecord]
    best_epoch: int
    best_score: float
    best_state: dict[str, "torch.Tensor"]
    perm: "torch.Tensor | None" = None  # this epoch's order, when step > 0
    sums: "torch.Tensor | None" = None  # (loss sum, correct, seen, seconds so far) of this epoch
    train_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # The model the run trains. A resumed run rebuilds exactly this one, even when the
    # preset's defaults have changed since (lenet 0.1.0 checkpoints pool last).
    model_config: Any = None  # a model.ModelConfig (model.py builds on this module, not the reverse)
    device: str = "auto"  # the device the run was started with (`--device`), for resuming
    ema: dict[str, "torch.Tensor"] | None = None  # the weights' moving average (AveragedModel state), if the run keeps one


def cpu_state(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    """A copy of the model's state dict on the CPU (the live tensors change at the next step)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def copied(value: Any) -> Any:
    """A deep copy of an optimizer state_dict's tensors."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copied(v) for v in value]
    return value
