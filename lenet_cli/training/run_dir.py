"""The run folder: where a training run's files go, writing them, and one writer at a time.

A run folder holds best.safetensors, last.safetensors, checkpoint.safetensors,
history.csv, history.json and curves.png, each written atomically, and while a run writes
into it, its lock (.lenet-train.lock). A new run never replaces another run's files unless
asked to (--exist-ok); `--resume` continues the run in its own folder.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import shlex
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lenet_cli.errors import OutputError
from lenet_cli.model.weights import save_state
from lenet_cli.training.checkpoint import CHECKPOINT_NAME
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.plots import save_training_curves
from lenet_cli.training.state import EpochRecord, TrainResult
from lenet_cli.utils.fileio import atomic_write_text, ensure_dir
from lenet_cli.utils.serialization import json_safe

RUNS_DIR = Path("runs")


def new_run_dir(prefix: str, output_dir: Path | None = None) -> Path:
    """`output_dir`, else runs/<prefix>-<timestamp> (a -2, -3 ... suffix: never an earlier run's folder)."""
    if output_dir is not None:
        return Path(output_dir)
    base = RUNS_DIR / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path  # two runs started in the same second may pick one name: the folder lock tells them apart


def checkpoint_path(path: Path) -> Path:
    """`--resume` takes a run folder or its checkpoint file."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


def resume_command(checkpoint: Path, data_dir: Path | None, device: str, launcher: list[str] | None = None,
                   allow_download: bool = True) -> str:
    """The exact command that continues a stopped run (`launcher`: the torchrun words before `train`)."""
    parts = [*(launcher or ["lenet"]), "train", "--resume", str(checkpoint)]
    if data_dir is not None:
        parts += ["--data-dir", str(data_dir)]
    if device != "auto":
        parts += ["--device", device]
    if not allow_download:
        parts.append("--no-download")  # an offline run's continuation stays offline
    return " ".join(shlex.quote(p) for p in parts)


def history_rows(history: list[EpochRecord]) -> list[dict[str, Any]]:
    """History as a list of dicts (for JSON and CSV)."""
    return [dataclasses.asdict(r) for r in history]


def history_csv(history: list[EpochRecord]) -> str:
    """History as CSV text."""
    buf = io.StringIO()
    fields = [f.name for f in dataclasses.fields(EpochRecord)]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in history_rows(history):
        writer.writerow(row)
    return buf.getvalue()


def save_run(
    result: TrainResult,
    cfg: TrainConfig,
    out_dir: Path,
    test_metrics: dict[str, Any] | None = None,
    device: str = "auto",
    launch: dict[str, Any] | None = None,
    model_configs: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write best/last weights, history (CSV and JSON) and curves (PNG) into out_dir, all atomically.

    `device` is the one asked for (`--device`); the one used is in `result.device`. `launch`, for a
    run trained under torchrun, is its world size and backend, recorded beside them. `model_configs`
    gives "best" and "last" their own model config (their fitted temperatures); default: the run's.
    """
    ensure_dir(out_dir)
    training = cfg.to_dict(device) | {"best_epoch": result.best_epoch, "device_used": result.device}
    if launch:
        training |= launch
    paths: dict[str, Path] = {}
    for name, state in (("best", result.best_state), ("last", result.last_state)):
        if not state:  # resumed mid-epoch and stopped again: the earlier session wrote this file
            continue
        record = result.best if name == "best" else result.history[-1]
        metrics: dict[str, Any] = {}
        if record is not None:
            metrics = {"epoch": record.epoch, "val_accuracy": record.val_acc, "val_loss": record.val_loss}
        if name == "best" and test_metrics:
            metrics |= test_metrics
        model_cfg = (model_configs or {}).get(name, result.model.cfg)
        paths[name] = save_state(out_dir / f"{name}.safetensors", model_cfg, state,
                                 training=training, metrics=json_safe(metrics))
    paths["history_csv"] = atomic_write_text(out_dir / "history.csv", history_csv(result.history))
    history = {"config": cfg.to_dict(device), "best_epoch": result.best_epoch,
               "history": history_rows(result.history)}
    paths["history_json"] = atomic_write_text(out_dir / "history.json", json.dumps(json_safe(history), indent=2))
    paths["curves"] = save_training_curves(result.history, out_dir / "curves.png")
    return paths


RUN_FILES = ("best.safetensors", "last.safetensors", CHECKPOINT_NAME, "history.csv", "history.json", "curves.png")
LOCK_NAME = ".lenet-train.lock"


def run_files(folder: Path) -> list[str]:
    """The files of a run that `folder` already holds (empty for a new or empty folder)."""
    return [name for name in RUN_FILES if (Path(folder) / name).exists()]


@contextlib.contextmanager
def run_lock(folder: Path, warn: Callable[[str], None]) -> Iterator[Path]:
    """Hold `folder`'s lock while a run writes into it: one writer per run folder.

    The lock is the kernel's (flock on .lenet-train.lock), so it ends with its process however that
    ends (kill -9 and power cuts included): no process id has to be guessed alive or dead. The file
    holds the holder's process id and host, for the message a second run gets; a file left by a
    holder that is gone is taken over with a warning.
    """
    path = Path(folder) / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise OutputError(f"Cannot lock {folder}: {exc.strerror or exc}.",
                              "Choose a writable location with --output-dir.") from exc
        if not _try_lock(fd):
            holder = _read_lock(path)
            os.close(fd)
            pid, host = holder.get("pid", "unknown"), holder.get("host")
            who = f"process {pid}" + ("" if host in (None, me["host"]) else f" on {host}")
            raise OutputError(f"{folder} is in use by another `lenet train` ({who}).",
                              "Wait for it to finish, or choose another --output-dir.") from None
        # The holder before us may have removed the file between our open and our lock: then the
        # lock we hold is on a file nobody else will see. Lock the file that is at the path.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _read_lock(path)
    if stale:
        warn(f"{folder} was locked by process {stale.get('pid', 'unknown')}, which is no longer running; "
             "taking the lock over.")
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(me).encode())
    try:
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)  # while still holding the lock: no one else can own this file now
            removed = True
        except OSError:  # Windows cannot remove an open file: there, close it first
            removed = False
        os.close(fd)
        if not removed:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def _try_lock(fd: int) -> bool:
    """Take the kernel's exclusive lock on an open file without waiting; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: a lock on the file's first byte, also released when its process ends
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _read_lock(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # being written right now, or damaged: treated as held by an unknown process
    return data if isinstance(data, dict) else {}
