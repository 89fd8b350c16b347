"""PNG figures: training curves, confusion matrix, a grid of misclassified digits.

matplotlib is imported lazily, and figures are `Figure` objects drawn on the Agg canvas:
no display needed, and no pyplot global state (no figure to close, none left behind by an
error). Every figure is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from lenet_cli.training.state import EpochRecord
from lenet_cli.utils.fileio import atomic_write_with

if TYPE_CHECKING:  # pragma: no cover
    import torch



def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)  # savefig to .png draws on the Agg canvas


def _save(fig, path: Path) -> Path:
    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")

    return atomic_write_with(path, write)


def save_training_curves(history: Sequence["EpochRecord"], path: Path) -> Path:
    """Loss and accuracy per epoch, train and validation, side by side."""
    epochs = [r.epoch for r in history]
    fig = _figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r.train_loss for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r.val_loss for r in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.plot(epochs, [100 * r.train_acc for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r.val_acc for r in history], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def save_confusion_matrix(confusion: list[list[int]], path: Path, title: str = "Confusion matrix") -> Path:
    """Confusion matrix as a heat map with counts; rows are true classes."""
    import numpy as np

    cm = np.asarray(confusion)
    fig = _figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    # Log scale so the few errors are visible next to ~1,000 correct per class.
    im = ax.imshow(np.log1p(cm), cmap="Blues")
    n = cm.shape[0]
    for i in range(n):
        for j in range(n):
            color = "white" if cm[i, j] > cm.max() / 4 else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color=color)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, label="log(1 + count)")
    fig.tight_layout()
    return _save(fig, path)


def save_misclassified_grid(
    images: "torch.Tensor",
    labels: Sequence[int],
    preds: Sequence[int],
    path: Path,
    max_images: int = 64,
) -> Path:
    """A grid of misclassified digits, each titled 'true -> predicted'."""
    n = min(len(labels), max_images)
    cols = 8
    rows = max(1, -(-n // cols))
    fig = _figure(figsize=(cols * 1.2, rows * 1.4))
    axes = fig.subplots(rows, cols)
    flat = axes.flatten() if hasattr(axes, "flatten") else [axes]
    for i, ax in enumerate(flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].cpu().numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{labels[i]} → {preds[i]}", fontsize=9, color="crimson")
    fig.suptitle(f"Misclassified test digits (true → predicted), {n} shown")
    fig.tight_layout()
    return _save(fig, path)
