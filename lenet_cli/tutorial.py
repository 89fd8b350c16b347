"""The pipeline LeNet tutorials use, kept as they write it: what `lenet bench` compares training with.

docs/tutorial_baseline.py runs the same model on the real MNIST for whole epochs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lenet_cli.timing import time_steps

if TYPE_CHECKING:  # pragma: no cover
    import torch

TUTORIAL_BATCH = 64


def tutorial_lenet() -> "torch.nn.Module":
    """The LeNet-5 of the usual PyTorch tutorial (ReLU, max pooling, no batch norm); docs/tutorial_baseline.py too."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def time_tutorial_steps(device: "torch.device", steps: int) -> float:
    """Seconds for `steps` steps of the pipeline LeNet tutorials use, on random MNIST-shaped images.

    A dataset that, like torchvision's `datasets.MNIST`, turns each uint8 image into a
    PIL image and runs `ToTensor()` and `Normalize()` on it; a shuffling DataLoader at
    batch 64 in the main process; a plain LeNet-5 with Adam; each batch moved to the device.
    """
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    gen = torch.Generator().manual_seed(0)
    n = TUTORIAL_BATCH * (steps + 5)
    images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=gen).numpy()
    labels = torch.randint(0, 10, (n,), generator=gen)

    class TutorialMnist(Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):
            return tf(Image.fromarray(images[i], mode="L")), int(labels[i])

    model = tutorial_lenet().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(TutorialMnist(), batch_size=TUTORIAL_BATCH, shuffle=True, generator=gen)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batches = iter(loader)

    def step() -> None:
        x, y = next(batches)
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return time_steps(step, steps, sync)
