"""`lenet bench`'s processes: one measurement per fresh Python process, and `lenet train --epochs 1` itself.

A fresh process per measurement keeps one backend's thread pool, compiled code or allocator
state from changing another's figures (worker.py says how much they did). Every failure
becomes one BenchError line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lenet_cli
from lenet_cli.bench.plan import ACCURACY_TARGET
from lenet_cli.errors import BenchError

if TYPE_CHECKING:  # pragma: no cover
    pass


WORKER_MODULE = "lenet_cli.bench.worker"  # run as `python -m`; a module attribute so tests can break it


def _worker_env() -> dict[str, str]:
    """The environment of a worker: this one, with this copy of lenet_cli first on the path.

    The worker must run the code the parent runs, whatever else an installed lenet_cli says.
    """
    env = dict(os.environ)
    root = str(Path(lenet_cli.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_process(cmd: list[str], stdin: str, timeout: float) -> tuple[int, str, str, int]:
    """Run a command to its end: (exit status, stdout, stderr, pid); BenchError when it outlives `timeout` s."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_worker_env())
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"timed out after {timeout:g} s (pid {proc.pid}).",
                         "Give it longer with --worker-timeout, or measure less (--backends, --batch-sizes).") from None
    except BaseException:  # Ctrl-C: the worker goes with us
        proc.kill()
        proc.wait()
        raise
    return proc.returncode, out, err, proc.pid


def _last_json(text: str) -> dict[str, Any] | None:
    """`text` as one JSON object (`lenet train --json` indents it), else its last line that is one, or None."""
    try:
        whole = json.loads(text)
        if isinstance(whole, dict):
            return whole
    except ValueError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _failure(status: int, err: str, pid: int) -> str:
    """One line for a process that failed without answering: the last line it wrote on stderr, or how it ended."""
    lines = [line.strip() for line in err.strip().splitlines() if line.strip()]
    if lines:
        return f"{lines[-1][:300]} (pid {pid}, exit status {status})."
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    return f"the process {how} without a word (pid {pid})."


def run_worker(job: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Run one bench_worker job in a fresh Python process and return its answer (with the worker's "pid").

    BenchError, one line, when the worker reports an error, crashes or times out.
    """
    status, out, err, pid = run_process([sys.executable, "-m", WORKER_MODULE], json.dumps(job), timeout)
    answer = _last_json(out)
    if answer is not None and "error" in answer:
        raise BenchError(f"{answer['error']} (pid {answer.get('pid', pid)}).")
    if status != 0 or answer is None:
        raise BenchError(_failure(status, err, pid))
    return answer


def time_to_accuracy(device: str, data_dir: str, timeout: float) -> dict[str, Any]:
    """`lenet train --epochs 1` on MNIST, in a fresh process: its training seconds and test accuracy.

    The command itself, not a copy of it: whatever `lenet train` does for a 1-epoch budget is
    what is timed. Its run folder is a temporary one; wall_seconds includes starting Python.
    """
    with tempfile.TemporaryDirectory(prefix="lenet-bench-train-") as tmp:
        cmd = [sys.executable, "-m", "lenet_cli", "train", "--epochs", "1", "--device", device, "--data-dir", data_dir,
               "--no-download", "--output-dir", str(Path(tmp) / "run"), "--json"]
        t0 = time.perf_counter()
        status, out, err, pid = run_process(cmd, "", timeout)
        wall = time.perf_counter() - t0
    answer = _last_json(out)
    if status != 0:
        raise BenchError(_failure(status, err, pid))
    if answer is None or answer.get("test_accuracy") is None:
        raise BenchError(f"`lenet train --epochs 1` gave no test accuracy in its JSON report (pid {pid}).")
    accuracy = float(answer["test_accuracy"])
    return {"command": "lenet train --epochs 1", "epochs": 1, "seed": answer["config"]["seed"],
            "batch_size": answer["config"]["batch_size"], "precision": answer["config"].get("precision", "float32"),
            "target": ACCURACY_TARGET,
            "train_seconds": float(answer["train_seconds"]), "wall_seconds": wall, "test_accuracy": accuracy,
            "reached": accuracy >= ACCURACY_TARGET, "pid": pid}
