"""Fixtures of the CLI tests: a digit image, file permissions that apply (even to root), no CUDA."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def digit_png(tmp_path) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (120, 120), 250)
    ImageDraw.Draw(img).text((30, 10), "7", fill=10, font=ImageFont.load_default(size=90))
    path = tmp_path / "digit.png"
    img.save(path)
    return path


@pytest.fixture(scope="session")
def permissions_apply(tmp_path_factory) -> list[str]:
    """A command prefix under which file permissions apply to this process's children.

    A normal user: nothing. Root reads and writes anything, so root runs the CLI in a subprocess
    without the two capabilities that let it ignore permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH).
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, which reads any file, and setpriv is missing to drop that power")
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    probe = tmp_path_factory.mktemp("perm") / "locked"
    probe.write_text("secret")
    probe.chmod(0)
    check = subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe)!r}).read()"], capture_output=True)
    if check.returncode == 0 or b"PermissionError" not in check.stderr:
        pytest.skip("running as root and cannot drop the capability to ignore file permissions")
    return prefix


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine without CUDA, whatever it has: torch and onnxruntime both say there is none."""
    import onnxruntime as ort
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
