"""The Rich consoles and everything the CLI draws: tables, progress, messages.

Data (tables, JSON) goes to stdout; progress, warnings and errors go to stderr, so
`lenet eval --json > out.json` stays clean. Rich turns off live display and colour
when the stream is not a terminal, and honours NO_COLOR.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:  # pragma: no cover
    from lenet_cli.evaluate import EvalResult
    from lenet_cli.train import EpochRecord

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    """One clear line on stderr."""
    err.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)  # a file name may hold "[...]"


def warn(message: str) -> None:
    """A warning on stderr."""
    err.print(f"[yellow]Warning:[/] {escape(message)}", soft_wrap=True)


def info(message: str) -> None:
    """A status line on stderr (not data)."""
    err.print(message, soft_wrap=True)


def pct(x: float) -> str:
    """0.99312 -> '99.31%'."""
    return "n/a" if x != x else f"{100 * x:.2f}%"


def epoch_table(history: list["EpochRecord"], best_epoch: int | None = None) -> Table:
    """One row per epoch: train/val loss and accuracy, learning rate, time."""
    table = Table(title="Training", title_justify="left")
    for name in ("epoch", "train loss", "train acc", "val loss", "val acc", "lr", "time", "img/s"):
        table.add_column(name, justify="right")
    for r in history:
        mark = " *" if r.epoch == best_epoch else ""
        table.add_row(
            f"{r.epoch}{mark}",
            f"{r.train_loss:.4f}",
            pct(r.train_acc),
            f"{r.val_loss:.4f}",
            pct(r.val_acc),
            f"{r.lr:.2e}",
            f"{r.seconds:.1f}s",
            f"{r.images_per_s:,.0f}",
        )
    if best_epoch:
        table.caption = "* best.safetensors: a finished run's last epoch, else the best val acc"
    return table


def summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column key/value table."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for k, v in rows:
        table.add_row(k, v)
    return table


def per_class_table(result: "EvalResult") -> Table:
    """Precision, recall, F1 and support per digit."""
    table = Table(title="Per class", title_justify="left")
    for name in ("class", "precision", "recall", "F1", "support"):
        table.add_column(name, justify="right")
    for c in result.per_class:
        table.add_row(c.label, pct(c.precision), pct(c.recall), pct(c.f1), str(c.support))
    return table


def confusion_table(confusion: list[list[int]]) -> Table:
    """The confusion matrix; the diagonal in green, errors in red."""
    table = Table(title="Confusion matrix (rows: true, columns: predicted)", title_justify="left")
    table.add_column("", style="bold", justify="right")
    for j in range(len(confusion)):
        table.add_column(str(j), justify="right")
    for i, row in enumerate(confusion):
        cells = []
        for j, v in enumerate(row):
            if i == j:
                cells.append(f"[green]{v}[/]")
            elif v:
                cells.append(f"[red]{v}[/]")
            else:
                cells.append("[dim]·[/]")
        table.add_row(str(i), *cells)
    return table
