"""How the core reports progress without printing: one observer object, methods that do nothing.

The core API calls these methods; the command line subclasses `Events` to draw Rich
progress bars and messages on stderr, and tests subclass it to record or to stop a run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Events:
    """Progress and notices from a long-running command. Every method is a no-op here."""

    @contextlib.contextmanager
    def stage(self, message: str) -> Iterator[None]:
        """A step with no measurable progress ("Loading MNIST from ..."), while it runs."""
        yield

    def warn(self, message: str) -> None:
        """Something the user should know, that is not an error."""

    def note(self, message: str) -> None:
        """A line to show as it is (a command to copy, for example)."""

    def progress(self, label: str, done: int, total: int | None) -> None:
        """`done` of `total` items of work (files classified, measurements made)."""

    def on_result(self, row: dict[str, Any]) -> None:
        """One finished result (a file's prediction or error), as soon as it is known."""

    # Training.
    def on_start(self, info: dict[str, Any]) -> None:
        """Called once the data is on the device and the model is built."""

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        """Called before the first step of an epoch."""

    def on_step(self, epoch: int, step: int, steps: int, loss: float, images_per_s: float) -> None:
        """Called every few steps with the running loss."""

    def on_epoch_end(self, record: Any) -> None:
        """Called after validation at the end of an epoch with its `training.state.EpochRecord`.

        (Typed Any: this module sits below every domain package and imports none of them.)
        """
