"""scripts/gpu_check.sh and gpu_check.py where there is no GPU: they end at once, non-zero, saying so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
NO_GPU = "no GPU was found"


def _run(cmd: list[str], **env: str) -> tuple[subprocess.CompletedProcess, float]:
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    return proc, time.monotonic() - t


@pytest.mark.parametrize("hidden", [True, False])
def test_the_script_stops_at_once_without_a_gpu(hidden, tmp_path):
    if not hidden and (Path("/dev/nvidia0").exists() or any(
            (Path(d) / "nvidia-smi").exists() for d in os.environ.get("PATH", "").split(os.pathsep))):
        pytest.skip("this machine has an NVIDIA device: only CUDA_VISIBLE_DEVICES='' hides it")
    env = {"CUDA_VISIBLE_DEVICES": ""} if hidden else {}
    proc, seconds = _run(["bash", str(SCRIPTS / "gpu_check.sh")], **env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith(f"gpu_check: FAIL: {NO_GPU}")
    assert seconds < 30  # it stops before any Python starts (a few ms); 30 s leaves room for a loaded machine


@pytest.mark.slow
def test_the_python_steps_stop_after_checks_when_torch_sees_no_cuda(tiny_mnist, tmp_path):
    """A GPU device file without a CUDA torch (or a driver torch cannot use) is found by `lenet checks`."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees CUDA here")
    out = tmp_path / "out"
    proc, _ = _run([sys.executable, str(SCRIPTS / "gpu_check.py"), "run", "--data-dir", str(tiny_mnist),
                    "--out", str(out)], PYTHONPATH=str(SCRIPTS.parent))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("gpu_check: checks   FAIL  no CUDA GPU;") and NO_GPU in lines[-1]
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "no GPU" and [s["step"] for s in report["steps"]] == ["checks"]
