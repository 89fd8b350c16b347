"""What the tests of bad input through the real CLI share: invoking it, and what a clean error looks like.

A clean error: the exit code, one line on stderr that says what was wrong and what to do, and
never a traceback (tests/cli/test_errors*.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from lenet_cli.cli import app as cli_app
from lenet_cli.cli.app import app

runner = CliRunner()
ASSETS = Path(cli_app.__file__).parents[1] / "assets"
BUNDLED_ST = ASSETS / "lenet5-modern.safetensors"
BUNDLED_ONNX = ASSETS / "lenet5-modern.onnx"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, code: int, *words: str, after_progress: bool = False) -> str:
    """Exit code, no traceback, and exactly one 'Error: ...' line on stderr holding every word."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Unexpected" not in result.output, result.output
    return assert_one_line(result.stderr, *words, after_progress=after_progress)


def assert_one_line(stderr: str, *words: str, after_progress: bool = False) -> str:
    """The error is one line, and the only line on stderr (or, after_progress: the last one, after
    the progress lines of work that was under way)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), stderr
    assert len(lines) == 1 or (after_progress and not any(ln.startswith("Error") for ln in lines[:-1])), stderr
    for word in words:
        assert word.lower() in lines[-1].lower(), (word, lines[-1])
    return lines[-1]


def assert_usage_error(result, *words: str) -> None:
    """Typer's own usage errors (a value outside an option's range) come in its boxed format:
    exit code 2, the option and the allowed range on one line, and where to get help."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    if result.stderr.startswith("Error: "):  # ours: one line
        assert_one_line(result.stderr, *words)
        return
    assert "for help" in result.stderr, result.stderr
    line = next((ln for ln in result.stderr.splitlines() if "Invalid value" in ln), "")
    for word in words:
        assert word.lower() in line.lower(), (word, result.stderr)


def run_cli(prefix: list[str], args: list, cwd: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr): in-process when `prefix` is empty, else in a subprocess under it."""
    args = [str(a) for a in args]
    if not prefix:
        result = runner.invoke(app, args)
        return result.exit_code, result.stdout, result.stderr
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.run([*prefix, sys.executable, "-m", "lenet_cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr
