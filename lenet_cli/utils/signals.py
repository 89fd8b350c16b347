"""Stopping a run between two steps: Ctrl-C (SIGINT) and SIGTERM become a request the loop reads."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator


class StopSignal:
    """A request to stop after the current step, set by Ctrl-C or SIGTERM (see `catch_signals`) or by a caller."""

    def __init__(self, repeat_aborts: bool = True) -> None:
        self.requested = False
        self.repeat_aborts = repeat_aborts  # False: a second signal is the same request (see catch_signals)
        self.on_request: list[Callable[[], None]] = []

    def request(self) -> None:
        """Ask the loop to stop at the end of the current step."""
        if not self.requested:
            self.requested = True
            for callback in self.on_request:
                callback()

    @contextlib.contextmanager
    def catch_signals(self) -> Iterator["StopSignal"]:
        """While active, the first Ctrl-C (SIGINT) or SIGTERM requests a stop; a second one aborts at once
        (unless `repeat_aborts` is False: under torchrun, which passes its own signal on to every process).

        Stopping between steps (not wherever the signal lands) is what makes the saved
        checkpoint consistent: the optimizer and the schedule have both stepped. SIGTERM is
        what job schedulers and `kill` send before they give up on a process.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return

        def handler(signum, frame):  # noqa: ARG001 - signal handler signature
            if self.requested and self.repeat_aborts:
                raise KeyboardInterrupt
            self.request()

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:  # e.g. a background job of a script: ignored stays ignored
                continue
            previous[sig] = old
            signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                # None: the old handler was not set from Python; the default is the closest match.
                default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
                signal.signal(sig, old if old is not None else default)


PARENT_POLL_S = 0.5  # how soon a worker process notices that its parent is gone


def follow_parent(parent: int, on_orphan: Callable[[], None]) -> None:
    """Call `on_orphan` (in a daemon thread) once process `parent` is no longer this process's parent.

    A worker process (predict's preprocessing pool, serve's processes) is stopped by its parent; a
    parent killed outright (SIGKILL, the OOM killer) cannot do that, and the worker would run on as
    an orphan, holding a port or sleeping forever. An orphan is adopted by another process, so its
    parent id changes. `parent` is the pid the parent passed down (read in the child, a parent that
    died before the child looked would already be the adopter).
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        on_orphan()

    threading.Thread(target=watch, name="lenet-follow-parent", daemon=True).start()
