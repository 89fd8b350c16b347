"""What the resume tests share: their run's settings, a stop at a given step, and equal weights."""

from __future__ import annotations

import torch

from lenet_cli.events import Events
from lenet_cli.training.config import TrainConfig
from lenet_cli.utils.signals import StopSignal

CPU = torch.device("cpu")
# Epoch 1 is augmented, epochs 2 and 3 are --clean-epochs: the stops below resume into both kinds.
CFG = TrainConfig(epochs=3, batch_size=64, val_size=100, seed=3, clean_epochs=2)


class StopAt(Events):
    """Requests a stop once training reaches (epoch, step), like a Ctrl-C would."""

    def __init__(self, stop: StopSignal, epoch: int, step: int) -> None:
        self.stop, self.epoch, self.step = stop, epoch, step

    def on_step(self, epoch, step, steps, loss, images_per_s):
        if (epoch, step) >= (self.epoch, self.step):
            self.stop.request()


def assert_same_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
