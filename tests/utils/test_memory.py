"""lenet's own processes reuse the memory they free: a photo's arrays no longer come back as fresh pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Make and drop two 156 KiB arrays 200 times, as preprocessing a 200x200 photo does many times over,
# and count the page faults that took.
FAULTS = """
import resource, sys
import numpy as np
from lenet_cli.utils.memory import reuse_freed_memory
print(reuse_freed_memory() if sys.argv[1] == "on" else False)
for _ in range(10):
    np.ones(40_000, np.float32) / 255.0
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    np.ones(40_000, np.float32) / 255.0
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(setting: str, env: dict | None = None) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS, setting], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds: Linux only")
def test_freed_arrays_are_reused_instead_of_faulted_in_again():
    was_set, with_setting = _faults("on")
    if was_set != "True":
        pytest.skip("this C library has no mallopt thresholds (not glibc)")
    _, without = _faults("off")
    assert with_setting < 100 < without, (with_setting, without)  # about 0 against about 9,000 here


@pytest.mark.parametrize("setting", [("MALLOC_TRIM_THRESHOLD_", "131072"),
                                     ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")])
def test_the_users_own_malloc_settings_win(setting):
    import os

    name, value = setting
    was_set, _ = _faults("on", {**os.environ, name: value})
    assert was_set == "False"


def test_nothing_happens_off_linux_or_without_glibc(monkeypatch):
    import ctypes

    from lenet_cli.utils import memory

    def refuse(*args, **kwargs):
        raise AssertionError("libc must not be loaded here")

    monkeypatch.setattr(ctypes, "CDLL", refuse)
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.reuse_freed_memory() is False
    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: (_ for _ in ()).throw(OSError("no glibc")))
    for name in (*memory.USER_SETTINGS, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert memory.reuse_freed_memory() is False  # musl and friends: nothing to tune, no error
