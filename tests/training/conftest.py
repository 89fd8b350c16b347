"""Fixtures of the training tests: the tiny MNIST split for the resume tests' run, and that run uninterrupted."""

from __future__ import annotations

import pytest
from resumable import CFG, CPU

from lenet_cli.data.mnist import load_split, train_val_split
from lenet_cli.training.loop import train


@pytest.fixture(scope="module")
def splits(tiny_mnist):
    return train_val_split(load_split(tiny_mnist, "train", allow_download=False), CFG.val_size)


@pytest.fixture(scope="module")
def uninterrupted(splits):
    return train(CFG, *splits, CPU)
