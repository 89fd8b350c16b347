"""Decode and preprocess image files on every core, in input order, for `lenet predict` on a folder.

Preprocessing a real image costs milliseconds, the model a few microseconds per image: a
folder is bound by the decode and the preprocessing, so they run in worker processes while
the caller's one model session classifies what comes back, in batches. The workers import
numpy, Pillow and lenet_cli's data/ only (never torch, never onnxruntime).

* Order: chunks of files go out and come back in input order (a bounded window of futures).
* Memory: at most `IN_FLIGHT_PER_WORKER` chunks per worker are out at once, however big the folder.
* Ctrl-C: the workers ignore SIGINT; the caller's KeyboardInterrupt cancels what is queued and
  waits only for the chunks being worked on, so no worker prints a traceback.
* Small jobs: under `POOL_FROM_FILES` files (or one core) there is no pool at all.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lenet_cli.data.preprocess import Prepared, prepare_file, shape_notes
from lenet_cli.data.sources import STDIN
from lenet_cli.errors import ImageError, first_line
from lenet_cli.utils.memory import reuse_freed_memory
from lenet_cli.utils.signals import follow_parent

POOL_FROM_FILES = 64  # below this, starting processes costs more than it saves
CHUNK_FILES = 32  # files per task: amortises the hand-off (a few hundred microseconds) over ~10-100 ms of work
IN_FLIGHT_PER_WORKER = 4  # chunks out per worker: enough to keep it busy, few enough to bound memory

Row = tuple[dict[str, Any], "np.ndarray | None"]  # a file's row, and its 28x28 pixels unless it failed


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def prepare_row(row: dict[str, Any], prepare: Callable[[], Prepared], name: str) -> Prepared | None:
    """Run `prepare` (decode and preprocess one image) into `row`: what preprocessing decided, or
    the error and its kind (messages lose their `name: ` prefix: the row already names the image)."""
    try:
        prepared = prepare()
    except ImageError as exc:
        row["error"] = exc.message.removeprefix(f"{name}: ")
        row["error_kind"] = exc.kind
        return None
    except Exception as exc:  # noqa: BLE001 - one odd image must never cost the user the other rows
        row["error"] = f"cannot process this image ({type(exc).__name__}: {first_line(exc)})"
        row["error_kind"] = "corrupt"
        return None
    row["inverted"] = prepared.inverted
    row["passthrough"] = prepared.passthrough
    row["notes"] = shape_notes(prepared.pixels)  # "low confidence" joins them once classified
    return prepared


def prepare_chunk(paths: list[Path | str], invert: bool | None) -> list[Row]:
    """Each file's row (without its prediction) and pixels, in order: what one worker task returns."""
    rows = []
    for path in paths:
        row: dict[str, Any] = {"file": str(path)}
        prepared = prepare_row(row, lambda p=path: prepare_file(p, invert), str(path))
        rows.append((row, None if prepared is None else prepared.pixels))
    return rows


def _quiet_worker(parent: int) -> None:
    """Workers leave Ctrl-C to the parent, which stops them (otherwise each would print a traceback),
    and end with it, even when it is killed outright."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    follow_parent(parent, lambda: os._exit(0))
    # `lenet predict` set it before forking; a program calling the API did not, but the workers are lenet's.
    reuse_freed_memory()


def _context():
    """fork where it is safe and cheap (Linux: the workers start in milliseconds, nothing re-imported);
    spawn elsewhere (macOS and Windows, where fork is unsafe or missing)."""
    import multiprocessing

    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def uses_pool(paths: list[Path | str], workers: int | None = None) -> bool:
    """Whether `prepared_rows` will decode and preprocess these paths in worker processes."""
    workers = default_workers() if workers is None else workers
    return workers > 1 and len(paths) >= POOL_FROM_FILES and STDIN not in paths  # stdin belongs to this process


def prepared_rows(paths: list[Path | str], invert: bool | None, workers: int | None = None) -> Iterator[Row]:
    """Every file's row and pixels, in input order: in worker processes for a big job, else here."""
    workers = default_workers() if workers is None else workers
    if not uses_pool(paths, workers):
        for path in paths:
            yield from prepare_chunk([path], invert)
        return
    yield from _pooled(paths, invert, workers)


def _pooled(paths: list[Path | str], invert: bool | None, workers: int) -> Iterator[Row]:
    from concurrent.futures import ProcessPoolExecutor

    # Chunks small enough that a small job still keeps every worker busy, at most CHUNK_FILES.
    size = max(1, min(CHUNK_FILES, len(paths) // (workers * IN_FLIGHT_PER_WORKER)))
    chunks = (paths[i : i + size] for i in range(0, len(paths), size))
    executor = ProcessPoolExecutor(workers, mp_context=_context(), initializer=_quiet_worker,
                                   initargs=(os.getpid(),))
    window: deque = deque()
    try:
        for chunk in chunks:
            window.append(executor.submit(prepare_chunk, chunk, invert))
            if len(window) >= workers * IN_FLIGHT_PER_WORKER:
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()
    finally:
        # Normally nothing is queued; on Ctrl-C or an abandoned generator, drop what is queued.
        executor.shutdown(wait=True, cancel_futures=True)
