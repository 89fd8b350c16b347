"""`lenet serve --workers N`: N serving processes accepting on one pre-bound socket.

Each process loads the model itself (its own onnxruntime session; no torch for a .onnx model)
and runs uvicorn (server.run) on the socket the parent bound, so they share one port and the
kernel hands each new connection to one of them. The parent only supervises: it waits for all
of them to be ready, restarts one that dies, and on Ctrl-C or SIGTERM sends each SIGTERM (they
answer the requests in flight, refuse new ones and exit), then sums what they classified.
Processes are spawned, not forked: a fork would copy the parent's threads and onnxruntime state.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lenet_cli.errors import LenetError, ServeError, first_line
from lenet_cli.serve.classify import ServeConfig
from lenet_cli.serve.server import url_of
from lenet_cli.utils.memory import reuse_freed_memory
from lenet_cli.utils.signals import StopSignal, follow_parent

START_TIMEOUT_S = 120.0  # a process that is not serving by then has failed to start (a loaded machine is slow)
POLL_S = 0.1
MAX_RESTARTS = 5  # crashes within RESTART_WINDOW_S before `lenet serve` gives up
RESTART_WINDOW_S = 60.0


@dataclass(frozen=True)
class WorkerSpec:
    """What each serving process loads: the model file and the app's settings (picklable for spawn)."""

    path: Path
    bundled: bool
    cfg: ServeConfig


@dataclass
class _Slot:
    process: Any  # multiprocessing.Process
    ready: Any  # multiprocessing.Event, set when its uvicorn listens
    count: Any  # multiprocessing.Value, the images it classified, written when it stops


def _serve_one(spec: WorkerSpec, sock: socket.socket, ready: Any, count: Any, parent: int) -> None:
    """A serving process: load the model, serve until SIGTERM, leave the number of images classified in `count`."""
    # Ctrl-C reaches every process of the terminal's group: the parent decides, and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed outright cannot send SIGTERM: the process sends it to itself (a graceful stop),
    # instead of serving on as an orphan that holds the port.
    follow_parent(parent, lambda: os.kill(os.getpid(), signal.SIGTERM))
    reuse_freed_memory()  # spawned: nothing is inherited, and every request preprocesses an image
    from lenet_cli.serve.app import create_app
    from lenet_cli.serve.classify import served_model
    from lenet_cli.serve.server import run

    try:
        app = create_app(served_model(spec.path, spec.bundled), spec.cfg)
        try:
            run(app, sock, StopSignal(), lambda _url: ready.set(), spec.cfg.limits)
        finally:
            count.value = app.state.requests
    except LenetError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - one line, as the parent's errors are, never a traceback
        print(f"Error: the serving process failed: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # a second SIGTERM: stopped without waiting
        sys.exit(130)


def _start(ctx: Any, spec: WorkerSpec, sock: socket.socket) -> _Slot:
    ready, count = ctx.Event(), ctx.Value("q", 0)
    process = ctx.Process(target=_serve_one, args=(spec, sock, ready, count, os.getpid()), name="lenet-serve", daemon=True)
    process.start()
    return _Slot(process, ready, count)


def _wait_ready(slots: list[_Slot], stop: StopSignal) -> None:
    """Until every process listens; ServeError if one exits first or none is ready in time."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(s.ready.is_set() for s in slots) and not stop.requested:
        dead = next((s for s in slots if s.process.exitcode is not None), None)
        if dead is not None:
            raise ServeError(f"A serving process failed to start (exit code {dead.process.exitcode}).",
                             "Its error is printed above; `lenet serve --workers 1` runs in one process.")
        if time.monotonic() > deadline:
            raise ServeError(f"The serving processes were not ready within {START_TIMEOUT_S:g} s.",
                             "Try fewer --workers on a loaded machine.")
        time.sleep(POLL_S)


def _stop_all(slots: list[_Slot], grace_s: float) -> None:
    """SIGTERM to each (requests in flight are answered), then SIGKILL to any still running after `grace_s`."""
    for slot in slots:
        if slot.process.exitcode is None:
            slot.process.terminate()
    deadline = time.monotonic() + grace_s
    for slot in slots:
        slot.process.join(max(0.0, deadline - time.monotonic()))
        if slot.process.exitcode is None:
            slot.process.kill()
            slot.process.join(5)


def _note_crash(crashes: list[float], exitcode: int) -> list[float]:
    """The crash times of the last RESTART_WINDOW_S, this one included; ServeError when there are too many.

    A process that dies at once (out of memory, a broken model) would otherwise be restarted every
    POLL_S seconds, forever.
    """
    now = time.monotonic()
    recent = [t for t in crashes if now - t < RESTART_WINDOW_S] + [now]
    if len(recent) > MAX_RESTARTS:
        raise ServeError(f"The serving processes died {len(recent)} times within {RESTART_WINDOW_S:g} s "
                         f"(the last with exit status {exitcode}); stopping.",
                         "Run with `lenet --debug serve --workers 1` to see why.")
    time.sleep(min(2.0, 0.1 * 2 ** len(recent)))  # back off: a crash loop must not eat the machine
    return recent


def run_processes(spec: WorkerSpec, sock: socket.socket, workers: int, stop: StopSignal,
                  on_ready: Callable[[str], None]) -> int:
    """Serve with `workers` processes on `sock` until Ctrl-C or SIGTERM; the number of images they classified.

    The first signal stops them gracefully (at most the shutdown limit plus a few seconds); a
    second one kills them and raises KeyboardInterrupt (exit 130), as with one process.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    grace_s = spec.cfg.limits.shutdown_s + 5.0  # uvicorn's own graceful limit, then the process's exit
    slots: list[_Slot] = []
    counted = 0  # images classified by processes that died and were replaced
    with stop.catch_signals():
        try:
            slots = [_start(ctx, spec, sock) for _ in range(workers)]
            _wait_ready(slots, stop)
            if not stop.requested:
                on_ready(url_of(sock))
            crashes: list[float] = []
            while not stop.requested:
                time.sleep(POLL_S)
                for i, slot in enumerate(slots):
                    if slot.process.exitcode is not None and not stop.requested:  # crashed: serve on
                        counted += slot.count.value
                        crashes = _note_crash(crashes, slot.process.exitcode)
                        slots[i] = _start(ctx, spec, sock)
            _stop_all(slots, grace_s)
        except BaseException:
            for slot in slots:
                if slot.process.exitcode is None:
                    slot.process.kill()
            raise
        finally:
            with contextlib.suppress(OSError):
                sock.close()
    return counted + sum(slot.count.value for slot in slots)
