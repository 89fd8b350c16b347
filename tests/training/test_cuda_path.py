"""The CUDA training path, checked without a GPU: what goes to the device, and how."""

from __future__ import annotations

import dataclasses
from unittest.mock import MagicMock

import torch

from lenet_cli.training import recipe
from lenet_cli.training.config import TrainConfig


def test_copies_to_cuda_come_from_pinned_memory_without_blocking():
    t = MagicMock()
    cuda = torch.device("cuda", 1)
    recipe.to_device(t, cuda, torch.float32)
    t.pin_memory.assert_called_once_with()
    t.pin_memory.return_value.to.assert_called_once_with(cuda, torch.float32, non_blocking=True)
    t.to.assert_not_called()


def test_copies_to_the_cpu_are_plain():
    t = torch.arange(4)
    assert recipe.to_device(t, torch.device("cpu")) is t
    assert recipe.to_device(t, torch.device("cpu"), torch.float32).dtype == torch.float32


def test_every_augmentation_copy_goes_through_to_device(monkeypatch):
    """Affine parameters, elastic field and stroke jitter: the three per-step copies of CPU draws."""
    seen = []
    real = recipe.to_device

    def spy(t, device, dtype=None):
        seen.append(tuple(t.shape))
        return real(t, device, dtype)

    monkeypatch.setattr(recipe, "to_device", spy)
    cfg = dataclasses.replace(TrainConfig(), elastic=2.0, stroke=0.5)
    x = torch.rand(5, 1, 28, 28) * 255
    recipe.augment_batch(x, cfg, torch.Generator().manual_seed(0))
    assert seen == [(5, 6), (5, 2, 28, 28), (5,)]
