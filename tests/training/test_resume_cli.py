"""`lenet train` stopped by Ctrl-C or SIGTERM in a real process saves a checkpoint, and `--resume`
finishes the run; a clashing option or a finished run are handled plainly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from resumable import CFG, CPU, StopAt, assert_same_states
from safetensors.torch import load_file

from lenet_cli.training.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
)
from lenet_cli.training.loop import train
from lenet_cli.utils.signals import StopSignal


def _lenet(*args: str) -> list[str]:
    return [sys.executable, "-m", "lenet_cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}  # read at call time: fixtures patch it


def _train_then_signal(train_args: list[str], sig: int) -> tuple[int, str]:
    """Start `lenet train`, send `sig` once the first epoch is reported; (exit code, stderr).

    The child gets the default SIGINT disposition even when the tests run as a background job
    (where SIGINT is inherited as ignored). Skips if the run ends before the signal lands.
    """
    proc = subprocess.Popen(_lenet("train", *train_args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for the first epoch line
        line = proc.stderr.readline()
        seen.append(line)
        if line.lstrip().startswith("epoch") or not line:
            break
    proc.send_signal(sig)
    _, errs = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    return proc.returncode, "".join(seen) + errs


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_the_run(tiny_mnist, tmp_path):
    """A real SIGINT to a real `lenet train`, then `lenet train --resume`: same weights as without Ctrl-C."""
    common = ["--epochs", "6", "-b", "16", "--val-size", "100", "--seed", "5", "--device", "cpu",
              "--data-dir", str(tiny_mnist)]
    run = tmp_path / "run"
    returncode, errs = _train_then_signal([*common, "-o", str(run)], signal.SIGINT)
    assert returncode == 130, errs
    assert "Traceback" not in errs
    assert "lenet train --resume" in errs and (run / CHECKPOINT_NAME).is_file()

    resumed = subprocess.run(_lenet("train", "--resume", str(run / CHECKPOINT_NAME), "--data-dir", str(tiny_mnist)),
                             capture_output=True, text=True, env=_env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming at epoch" in resumed.stderr

    straight = tmp_path / "straight"
    full = subprocess.run(_lenet("train", *common, "-o", str(straight)), capture_output=True, text=True, env=_env(),
                          timeout=300)
    assert full.returncode == 0, full.stderr
    a, b = load_file(run / "last.safetensors"), load_file(straight / "last.safetensors")
    assert_same_states(a, b)


def test_cli_resume_with_clashing_option_is_a_usage_error(splits, tmp_path):
    from typer.testing import CliRunner

    from lenet_cli.cli.app import app

    ckpt = tmp_path / CHECKPOINT_NAME
    stop = StopSignal()
    train(CFG, *splits, CPU, StopAt(stop, 1, 1), stop=stop, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    result = CliRunner().invoke(app, ["train", "--resume", str(ckpt), "--epochs", "9"])
    assert result.exit_code == 2
    assert "--epochs differs" in result.output and "Traceback" not in result.output
    # Typed, a setting counts even where its value is the default: --epochs 15 on a 2-epoch run clashes.
    result = CliRunner().invoke(app, ["train", "--resume", str(ckpt), "--epochs", "15", "--ema", "0"])
    assert result.exit_code == 2, result.output
    assert "--epochs differs" in result.output  # --ema 0 agrees with the checkpoint: no clash


def test_resume_of_a_finished_run_writes_its_weights(tiny_mnist, tmp_path):
    """Killed after the last epoch's checkpoint but before the weights were saved: --resume saves them."""
    from typer.testing import CliRunner

    from lenet_cli.cli.app import app

    run = tmp_path / "run"
    args = ["train", "--epochs", "2", "-b", "64", "--val-size", "100", "--device", "cpu", "--data-dir", str(tiny_mnist)]
    first = CliRunner().invoke(app, [*args, "-o", str(run)])
    assert first.exit_code == 0, first.output
    before = load_file(run / "best.safetensors")
    for name in ("best.safetensors", "last.safetensors"):
        (run / name).unlink()
    again = CliRunner().invoke(app, ["train", "--resume", str(run), "--data-dir", str(tiny_mnist)])  # a run folder
    assert again.exit_code == 0, again.output
    assert "All 2 epochs were done" in again.stderr
    assert_same_states(before, load_file(run / "best.safetensors"))
    assert (run / "last.safetensors").is_file()


@pytest.mark.slow
def test_sigterm_also_stops_at_a_step_and_saves_a_checkpoint(tiny_mnist, tmp_path):
    """`kill` (SIGTERM, what job schedulers send) gets the same clean stop as Ctrl-C."""
    run = tmp_path / "run"
    returncode, errs = _train_then_signal(["--epochs", "30", "-b", "16", "--val-size", "100", "--device", "cpu",
                                           "--data-dir", str(tiny_mnist), "-o", str(run)], signal.SIGTERM)
    assert returncode == 130, errs
    assert "Traceback" not in errs and "lenet train --resume" in errs
    assert load_checkpoint(run / CHECKPOINT_NAME).epochs_done >= 1
