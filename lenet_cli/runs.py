"""The run folder: where a training run's files go, and writing them.

A run folder holds best.safetensors, last.safetensors, checkpoint.safetensors,
history.csv, history.json and curves.png, each written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shlex
import time
from pathlib import Path
from typing import Any

from lenet_cli.checkpoint import CHECKPOINT_NAME
from lenet_cli.fileio import atomic_write_text, ensure_dir
from lenet_cli.plots import save_training_curves
from lenet_cli.records import EpochRecord, TrainConfig, TrainResult
from lenet_cli.weights import save_state

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
    return path


def checkpoint_path(path: Path) -> Path:
    """`--resume` takes a run folder or its checkpoint file."""
    path = Path(path).expanduser()
    return path / CHECKPOINT_NAME if path.is_dir() else path


def resume_command(checkpoint: Path, data_dir: Path | None, device: str) -> str:
    """The exact command that continues a stopped run."""
    parts = ["lenet", "train", "--resume", str(checkpoint)]
    if data_dir is not None:
        parts += ["--data-dir", str(data_dir)]
    if device != "auto":
        parts += ["--device", device]
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
) -> dict[str, Path]:
    """Write best/last weights, history (CSV and JSON) and curves (PNG) into out_dir, all atomically.

    `device` is the one asked for (`--device`); the one used is in `result.device`.
    """
    ensure_dir(out_dir)
    training = cfg.to_dict(device) | {"best_epoch": result.best_epoch, "device_used": result.device}
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
        paths[name] = save_state(out_dir / f"{name}.safetensors", result.model.cfg, state,
                                 training=training, metrics=metrics)
    paths["history_csv"] = atomic_write_text(out_dir / "history.csv", history_csv(result.history))
    history = {"config": cfg.to_dict(device), "best_epoch": result.best_epoch,
               "history": history_rows(result.history)}
    paths["history_json"] = atomic_write_text(out_dir / "history.json", json.dumps(history, indent=2))
    paths["curves"] = save_training_curves(result.history, out_dir / "curves.png")
    return paths
