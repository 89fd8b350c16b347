"""Nothing lost, nothing hangs: diverging runs, folders that hold a run, two writers, pipes, streamed results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import alive, children
from typer.testing import CliRunner

from lenet_cli.cli.app import app
from lenet_cli.training.run_dir import LOCK_NAME, RUN_FILES

runner = CliRunner()
FAST = ["--epochs", "1", "--batch-size", "64", "--val-size", "100", "--no-download", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, code: int, *words: str) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Unexpected" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ divergence


def test_a_diverging_run_stops_with_exit_1_and_writes_no_nan_weights(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", *FAST, "--epochs", "3", "--lr", "1e4", "--data-dir", tiny_mnist, "-o", out)
    line = one_error_line(result, 1, "diverged", "epoch", "--lr")
    assert "step" in line
    assert not (out / "best.safetensors").exists() and not (out / "last.safetensors").exists()
    assert not (out / LOCK_NAME).exists()
    if (out / "checkpoint.safetensors").exists():  # the last good epoch's checkpoint: finite, loadable
        from lenet_cli.training.checkpoint import load_checkpoint

        state = load_checkpoint(out / "checkpoint.safetensors")
        assert all(v.isfinite().all() for v in state.model.values() if v.is_floating_point())


def test_weights_with_nan_are_never_written(tmp_path):
    import torch

    from lenet_cli.errors import WeightsError
    from lenet_cli.model.lenet5 import build_model
    from lenet_cli.model.weights import save_weights

    model = build_model("modern")
    with torch.no_grad():
        model.c1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(WeightsError, match="NaN"):
        save_weights(tmp_path / "w.safetensors", model)
    assert not (tmp_path / "w.safetensors").exists()


# ------------------------------------------------------------------ run folders and the lock


def test_a_folder_that_holds_a_run_is_refused_and_kept_byte_for_byte(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    assert invoke("train", *FAST, "--data-dir", tiny_mnist, "-o", out).exit_code == 0
    before = snapshot(out)
    assert set(RUN_FILES) <= set(before)
    result = invoke("train", *FAST, "--seed", "7", "--data-dir", tiny_mnist, "-o", out)
    one_error_line(result, 1, str(out), "already holds a run", "--resume", "--exist-ok")
    assert snapshot(out) == before
    replaced = invoke("train", *FAST, "--seed", "7", "--data-dir", tiny_mnist, "-o", out, "--exist-ok")
    assert replaced.exit_code == 0, replaced.output
    assert "removed the earlier run's" in replaced.stderr and "best.safetensors" in replaced.stderr
    assert snapshot(out)["best.safetensors"] != before["best.safetensors"]


def test_exist_ok_never_leaves_the_earlier_run_beside_a_run_that_wrote_less(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    assert invoke("train", *FAST, "--data-dir", tiny_mnist, "-o", out).exit_code == 0
    # This run stops before its first epoch (here: a usage error found once the data is loaded).
    result = invoke("train", *FAST, "--val-size", "100000", "--data-dir", tiny_mnist, "-o", out, "--exist-ok")
    assert result.exit_code == 2, result.output
    assert not any((out / name).exists() for name in RUN_FILES)  # no old best.safetensors posing as this run's


HOLD = """
import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
print("locked", flush=True)
time.sleep(60)
"""


def test_a_folder_in_use_is_refused_naming_the_holder(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = invoke("train", *FAST, "--data-dir", tiny_mnist, "-o", out)
        one_error_line(result, 1, "in use", f"process {holder.pid}")
        assert not (out / "best.safetensors").exists()
    finally:
        holder.kill()  # like kill -9: the kernel drops its lock; its lock file stays behind
        holder.wait()
    result = invoke("train", *FAST, "--data-dir", tiny_mnist, "-o", out)
    assert result.exit_code == 0, result.output
    assert "no longer running" in result.stderr and not (out / LOCK_NAME).exists()


def test_a_stale_lock_with_a_live_or_reused_pid_is_taken_over(tiny_mnist, tmp_path):
    """After a restart the stale lock's pid may be ours, or another live process's: the kernel's lock decides."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    result = invoke("train", *FAST, "--data-dir", tiny_mnist, "-o", out)
    assert result.exit_code == 0, result.output
    assert "no longer running" in result.stderr


def test_a_usage_error_found_after_the_folder_was_made_leaves_no_empty_folder(tiny_mnist, tmp_path):
    out = tmp_path / "new"
    result = invoke("train", *FAST, "--batch-size", "100000", "--data-dir", tiny_mnist, "-o", out)
    assert result.exit_code == 2 and not out.exists()


def test_rows_of_failed_files_stream_without_waiting_for_a_batch(tmp_path):
    from lenet_cli.inference.pipeline import PredictConfig, iter_predictions

    seen = []
    rows = iter_predictions([tmp_path / f"missing-{i}.png" for i in range(10_000)], lambda x: x, PredictConfig(),
                            on_file=lambda: seen.append(1))
    first = next(rows)
    assert first["error_kind"] == "not_found" and len(seen) <= 1


@pytest.mark.slow
def test_two_runs_started_together_into_one_folder_leave_one_run(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lenet_cli", "train", *FAST, "--data-dir", str(tiny_mnist), "-o", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "in use" in loser or "already holds a run" in loser, loser
    assert "Traceback" not in loser
    from lenet_cli.model.weights import load_model

    load_model(out / "best.safetensors")  # one whole, valid run


# ------------------------------------------------------------------ only regular files are read


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def test_predict_reports_a_named_pipe_in_its_row_and_classifies_the_rest(fifo, tmp_path):
    from PIL import Image, ImageDraw

    good = tmp_path / "good.png"
    img = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(img).line([(30, 8), (30, 52)], fill=0, width=6)
    img.save(good)
    # A subprocess with a timeout: the old code blocked forever opening the pipe.
    proc = subprocess.run([sys.executable, "-m", "lenet_cli", "predict", str(fifo), str(good), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert rows[0]["error_kind"] == "not_a_file" and "named pipe" in rows[0]["error"]
    assert "prediction" in rows[1]


@pytest.mark.parametrize("option", ["--weights", "--resume"])
def test_weights_and_resume_refuse_a_named_pipe(fifo, tiny_mnist, option):
    command = ["train", *FAST, "--data-dir", tiny_mnist] if option == "--resume" else ["eval", "--no-plots"]
    result = invoke(*command, option, fifo)
    one_error_line(result, 1, "named pipe")


def test_an_mnist_file_that_is_a_named_pipe_is_an_error_not_a_download(tiny_mnist, tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for p in tiny_mnist.iterdir():
        (data / p.name).write_bytes(p.read_bytes())
    victim = next(p for p in data.iterdir() if p.name.startswith("t10k-images"))
    victim.unlink()
    os.mkfifo(victim)
    result = invoke("eval", "--no-plots", "--data-dir", data)
    one_error_line(result, 1, "named pipe", "MNIST")


# ------------------------------------------------------------------ streaming predict


def _digits(folder: Path, n: int) -> list[Path]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = Image.new("L", (40, 40), 255)
        ImageDraw.Draw(img).line([(20, 5), (20 + i % 7 - 3, 35)], fill=0, width=4)
        path = folder / f"{i:05d}.png"
        img.save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.slow
def test_predict_streams_every_row_to_stdout_and_to_a_file(tmp_path, suffix):
    import csv

    paths = _digits(tmp_path / "digits", 300)
    out = tmp_path / f"rows{suffix}"
    result = invoke("predict", tmp_path / "digits", "--jsonl", "--output", out)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["file"] for row in lines] == [str(p) for p in paths]
    if suffix == ".csv":
        with open(out, newline="") as fh:
            written = list(csv.DictReader(fh))
        assert [int(r["prediction"]) for r in written] == [row["prediction"] for row in lines]
    else:
        assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    table = invoke("predict", tmp_path / "digits")
    assert table.exit_code == 0 and "the first 200 of 300 files" in table.stdout
    glimpse = invoke("predict", tmp_path / "digits", "--output", tmp_path / "again.jsonl")
    assert glimpse.exit_code == 0 and "the first 20 of 300 files; every row is in" in glimpse.stdout
    assert len((tmp_path / "again.jsonl").read_text().splitlines()) == 300


@pytest.mark.slow
def test_a_killed_streaming_predict_leaves_every_finished_row(tmp_path):
    _digits(tmp_path / "digits", 1500)
    out = tmp_path / "rows.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "lenet_cli", "predict", str(tmp_path / "digits"), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 256):
        time.sleep(0.05)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = out.read_text().splitlines()
    assert 256 <= len(lines) < 1500, len(lines)  # killed mid-way, after at least one batch
    # Its preprocessing workers end with it, instead of sleeping on as orphans.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(workers):
        time.sleep(0.1)
    assert workers and not alive(workers), workers
    rows = [json.loads(line) for line in lines]  # every line whole
    full = invoke("predict", tmp_path / "digits", "--jsonl")
    expected = [json.loads(line) for line in full.stdout.splitlines()][: len(rows)]
    assert rows == expected


# ------------------------------------------------------------------ degenerate settings


def test_a_batch_larger_than_the_training_set_is_a_usage_error(tiny_mnist, tmp_path):
    result = invoke("train", *FAST, "--batch-size", "10000000", "--data-dir", tiny_mnist, "-o", tmp_path / "r")
    one_error_line(result, 2, "--batch-size 10000000", "500 training images", "one step")


def test_one_epoch_is_one_epoch(tiny_mnist, tmp_path):
    result = invoke("train", *FAST, "--data-dir", tiny_mnist, "-o", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "1 epoch of 8 steps" in result.stderr
