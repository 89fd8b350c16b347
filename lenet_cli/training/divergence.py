"""Divergence: a NaN or infinite loss or weight ends the run with one message, before anything is saved.

The losses are kept on the device and checked where the loop reads the device anyway (progress,
a stop, the epoch's end); the weights are checked once per checkpoint, which catches the update
of a step whose loss was still finite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lenet_cli.errors import DivergedError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _hint(lr: float) -> str:
    return f"Train again with a lower --lr (this run's peak was {lr:g}); no weights of this epoch were saved."


def check_losses(losses: "torch.Tensor", start: int, stop: int, epoch: int, steps: int, lr: float) -> None:
    """DivergedError naming the first step in [start, stop) whose loss was NaN or infinite."""
    import torch

    bad = torch.nonzero(~torch.isfinite(losses[start:stop])).flatten()
    if bad.numel():
        step = start + int(bad[0]) + 1
        value = float(losses[step - 1])
        raise DivergedError(f"Training diverged: the loss was {value} at step {step}/{steps} of epoch {epoch}.",
                            _hint(lr), epoch=epoch, step=step)


def check_states(states: list[dict[str, "torch.Tensor"]], epoch: int, step: int, steps: int, lr: float) -> None:
    """DivergedError when a floating-point tensor of the state dicts is NaN or infinite (one device read)."""
    import torch

    tensors = [t for sd in states for t in sd.values() if t.is_floating_point()]
    if not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        raise DivergedError(
            f"Training diverged: the weights became NaN or infinite by step {step}/{steps} of epoch {epoch}.",
            _hint(lr), epoch=epoch, step=step)
