"""The two Rich consoles and everything the command line draws: tables, progress, messages.

Data (tables, JSON) goes to stdout; progress, warnings and errors go to stderr, so
`lenet eval --json > out.json` stays clean. Rich turns off live display and colour when
the stream is not a terminal, and honours NO_COLOR.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from lenet_cli.events import Events
from lenet_cli.training.distributed import process_label
from lenet_cli.training.state import EpochRecord
from lenet_cli.utils.serialization import json_safe

if TYPE_CHECKING:  # pragma: no cover
    from rich.live import Live
    from rich.progress import Progress

    from lenet_cli.model.metrics import EvalResult

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def pct(x: float) -> str:
    """0.99312 -> '99.31%' (NaN: 'n/a')."""
    return "n/a" if x != x else f"{100 * x:.2f}%"


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(json_safe(data), indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    """One clear line on stderr; under torchrun it names the process it comes from (each reports its own)."""
    err.print(f"[bold red]Error{escape(process_label())}:[/] {escape(message)}", soft_wrap=True)  # a file name may hold "[...]"


def warn(message: str) -> None:
    """A warning on stderr."""
    err.print(f"[yellow]Warning:[/] {escape(message)}", soft_wrap=True)


def note(message: str) -> None:
    """A line on stderr exactly as given (a command to copy)."""
    err.print(message, soft_wrap=True, markup=False, highlight=False)


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column key/value table."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    for k, v in rows:
        table.add_row(k, v)
    return table


def columns_table(title: str, columns: tuple[str, ...], first_left: bool = False) -> Table:
    """A table with right-aligned columns (and, optionally, a left-aligned first one)."""
    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if first_left and i == 0 else "right")
    return table


def loss_text(loss: float) -> str:
    """A loss to 4 places; 'n/a' for NaN (a run without a validation split), like `pct`."""
    return "n/a" if loss != loss else f"{loss:.4f}"


def epoch_table(history: list[EpochRecord], best_epoch: int | None = None) -> Table:
    """One row per epoch: train/val loss and accuracy, learning rate, time."""
    table = columns_table("Training", ("epoch", "train loss", "train acc", "val loss", "val acc", "lr", "time", "img/s"))
    for r in history:
        mark = " *" if r.epoch == best_epoch else ""
        table.add_row(f"{r.epoch}{mark}", f"{r.train_loss:.4f}", pct(r.train_acc), loss_text(r.val_loss),
                      pct(r.val_acc), f"{r.lr:.2e}", f"{r.seconds:.1f}s", f"{r.images_per_s:,.0f}")
    if best_epoch:
        table.caption = "* best.safetensors: a finished run's last epoch, else the best val acc"
    return table


def per_class_table(result: "EvalResult") -> Table:
    """Precision, recall, F1 and support per digit."""
    table = columns_table("Per class", ("class", "precision", "recall", "F1", "support"))
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
        cells = [f"[green]{v}[/]" if i == j else (f"[red]{v}[/]" if v else "[dim]·[/]") for j, v in enumerate(row)]
        table.add_row(str(i), *cells)
    return table


def _count(n: int, noun: str) -> str:
    """1 epoch, 15 epochs."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


class RichEvents(Events):
    """Progress of any command on stderr: spinners, bars, warnings, and training's live epoch table.

    In a terminal, training shows a live progress bar (loss, images/s, time left) above a
    table that grows by one row per epoch; otherwise one plain line per epoch.
    """

    # rich.progress and rich.live are imported where a bar is first drawn: `lenet --help` has no use for them.

    def __init__(self) -> None:
        self.history: list[EpochRecord] = []
        self.epochs = 0
        self.bar: Progress | None = None
        self.bar_task: Any = None
        self.train_progress: Progress | None = None
        self.train_task: Any = None
        self.live: Live | None = None

    def __enter__(self) -> "RichEvents":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    @contextlib.contextmanager
    def stage(self, message: str) -> Iterator[None]:
        with err.status(escape(message)):
            yield

    def warn(self, message: str) -> None:
        warn(message)

    def note(self, message: str) -> None:
        note(message)

    def progress(self, label: str, done: int, total: int | None) -> None:
        """A transient bar on stderr (silent when stderr is not a terminal)."""
        if self.bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            # redirect_stdout=False: data written to stdout meanwhile (predict --jsonl) stays on stdout.
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=err, transient=True, redirect_stdout=False,
                                redirect_stderr=False)
            self.bar.start()
            self.bar_task = self.bar.add_task(label, total=total)
        self.bar.update(self.bar_task, description=escape(label), completed=done, total=total)

    # Training.
    def _render(self) -> Group:
        return Group(epoch_table(self.history), self.train_progress or "")

    def on_start(self, info: dict[str, Any]) -> None:
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.train_progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:,.0f} img/s"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=err)
        self.history, self.epochs = list(info.get("history", [])), info["epochs"]
        err.print(
            f"Training LeNet-5 '{info['preset']}' ({info['param_count']:,} parameters) on {info['device']}"
            f"{', bf16 autocast' if info.get('precision') == 'bf16' else ''}: "
            f"{info['train_size']:,} train / {info['val_size']:,} validation images, "
            f"{_count(self.epochs, 'epoch')} of {_count(info['steps_per_epoch'], 'step')}.",
            soft_wrap=True,
        )
        if info.get("resumed_from"):
            epoch, step = info["resumed_from"]
            if epoch > self.epochs:
                done = "The 1 epoch was done" if self.epochs == 1 else f"All {self.epochs:,} epochs were done"
                err.print(f"{done}; evaluating and saving the weights.")
            else:
                err.print(f"Resuming at epoch {epoch}, step {step + 1}.")
        if err.is_terminal:
            self.live = Live(self._render(), console=err, refresh_per_second=8, transient=True)
            self.live.__enter__()

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        assert self.train_progress is not None, "on_start comes first"
        if self.train_task is not None:
            self.train_progress.remove_task(self.train_task)
        self.train_task = self.train_progress.add_task("train", total=steps, epoch=epoch, epochs=self.epochs,
                                                       loss=float("nan"), ips=0.0)

    def on_step(self, epoch: int, step: int, steps: int, loss: float, images_per_s: float) -> None:
        assert self.train_progress is not None, "on_start comes first"
        self.train_progress.update(self.train_task, completed=step, loss=loss, ips=images_per_s)
        if self.live is not None:
            self.live.update(self._render())

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.history.append(record)
        if self.live is not None:
            self.live.update(self._render())
            return
        err.print(
            f"epoch {record.epoch:>3}/{self.epochs}  train loss {record.train_loss:.4f} acc {pct(record.train_acc)}  "
            f"val loss {loss_text(record.val_loss)} acc {pct(record.val_acc)}  lr {record.lr:.2e}  "
            f"{record.seconds:.1f}s  {record.images_per_s:,.0f} img/s",
            soft_wrap=True,
        )


Report = TypeVar("Report")


def run_and_show(api_call: Callable[[Any, Events], Report], request: Any, render: Callable[[Report], None],
                 json_out: bool) -> Report:
    """Call one API function with progress on stderr, then print its report: JSON or `render`'s tables."""
    with RichEvents() as events:
        report = api_call(request, events)
    if json_out:
        print_json(report.to_dict())  # type: ignore[attr-defined]
    else:
        render(report)
    return report
