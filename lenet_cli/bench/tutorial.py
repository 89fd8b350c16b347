"""The pipeline LeNet tutorials use, kept as they write it: what `lenet bench` compares training with.

scripts/tutorial_baseline.py runs the same model on the real MNIST for whole epochs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

TUTORIAL_BATCH = 64
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the constants every tutorial's Normalize() uses


def tutorial_lenet() -> "torch.nn.Module":
    """The LeNet-5 of the usual PyTorch tutorial (ReLU, max pooling, no batch norm); scripts/tutorial_baseline.py too."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def time_tutorial_epoch(device: "torch.device", images: "np.ndarray", labels: "np.ndarray",
                        warmup: int = 5) -> tuple[float, int]:
    """Seconds for one whole epoch of the tutorial pipeline over `images` (N, 28, 28) uint8, and its steps.

    A dataset that, like torchvision's `datasets.MNIST`, turns each uint8 image into a PIL
    image and runs `ToTensor()` and `Normalize()` on it; a shuffling DataLoader at batch 64
    in the main process (the tutorials' default: no workers); a plain LeNet-5 with Adam; each
    batch moved to the device. `warmup` untimed steps run first, from a loader of their own,
    so the epoch is timed as every epoch after a run's first one; the clock then runs from
    the epoch's `iter(loader)` to its last optimizer step.
    """
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])

    class TutorialMnist(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            return tf(Image.fromarray(images[i], mode="L")), int(labels[i])

    gen = torch.Generator().manual_seed(0)
    model = tutorial_lenet().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TutorialMnist(), batch_size=TUTORIAL_BATCH, shuffle=True, generator=gen)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(x: "torch.Tensor", y: "torch.Tensor") -> None:
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _, (x, y) in zip(range(warmup), loader):
        step(x, y)
    sync()
    steps = 0
    t0 = time.perf_counter()
    for x, y in loader:
        step(x, y)
        steps += 1
    sync()
    return time.perf_counter() - t0, steps
