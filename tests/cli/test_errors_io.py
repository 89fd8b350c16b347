"""Data and outputs, through the real CLI: MNIST missing or damaged, outputs that cannot be written,
--debug's traceback, and stdout closed early (`| head`), each one clean error line (see test_errors.py)."""

from __future__ import annotations

import errno
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clean_errors import assert_clean_error, invoke

from lenet_cli.cli import app as cli_app


# ------------------------------------------------------------------ MNIST missing or damaged


@pytest.mark.parametrize("command", ["eval", "export"])
def test_mnist_missing_offline(command, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    # A plain export needs no MNIST (tests/export); int8 calibrates on training images.
    args = (["eval", "--output-dir", tmp_path / "ev"] if command == "eval"
            else ["export", "--onnx", "--quantize", "int8", "--output", tmp_path / "m.onnx"])
    result = invoke(*args, "--data-dir", empty, "--no-download")
    assert_clean_error(result, 1, "MNIST not found", "downloads are off", "t10k-images-idx3-ubyte.gz", "--data-dir")
    assert not (tmp_path / "m.onnx").exists()
    assert not (tmp_path / "ev").exists()  # no empty plot folder left behind


def _copy_mnist(src: Path, dst: Path, edit=None) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        data = f.read_bytes()
        (dst / f.name).write_bytes(edit(f.name, data) if edit else data)
    return dst


BAD_MNIST = {
    # Gzipped files are checked against the official MD5 sums: the synthetic set cannot pass.
    "checksum": (lambda name, data: None, ["fails its checksum", "download it again"]),
    "truncated": (lambda name, data: data[:-100] if name.startswith("t10k-images") else data,
                  ["truncated", "download MNIST again"]),
    "not-idx": (lambda name, data: b"GIF89a" + data[6:] if name.startswith("t10k-labels") else data,
                ["is not an IDX labels file", "download MNIST again"]),
    "small-images": (lambda name, data: (data[:8] + (5).to_bytes(4, "big") * 2 + bytes(200 * 25))
                     if name.startswith("t10k-images") else data, ["holds 5x5 images", "28x28"]),
    "bad-labels": (lambda name, data: data[:8] + bytes([42]) * (len(data) - 8) if name.startswith("t10k-labels")
                   else data, ["labels must be digits 0-9, found 42", "download it again"]),
}


@pytest.mark.parametrize("case", sorted(BAD_MNIST))
def test_damaged_mnist(case, tmp_path, tiny_mnist):
    edit, words = BAD_MNIST[case]
    if case == "checksum":
        folder = tmp_path / "gz"
        folder.mkdir()
        for f in tiny_mnist.iterdir():
            (folder / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
    else:
        folder = _copy_mnist(tiny_mnist, tmp_path / "data", edit)
    result = invoke("eval", "--data-dir", folder, "--no-download", "--no-plots", "--device", "cpu")
    assert_clean_error(result, 1, *words)


# ------------------------------------------------------------------ outputs that cannot be written


def _writing_command(command: str, out: Path, tiny_mnist: Path, digit_png: Path) -> tuple[list, str | None, str]:
    """(arguments that make `command` write into folder `out`, the option naming it, a file it writes)."""
    return {
        "train": (["train", "--data-dir", tiny_mnist, "--device", "cpu", "--epochs", "1", "--dry-run",
                   "--val-size", "100", "--output-dir", out], "--output-dir", "best.safetensors"),
        "eval": (["eval", "--data-dir", tiny_mnist, "--device", "cpu", "--output-dir", out], "--output-dir",
                 "confusion_matrix.png"),
        "predict": (["predict", digit_png, "--save-preview", out], "--save-preview", "digit.png"),
        "export": (["export", "--onnx", "--data-dir", tiny_mnist, "--output", out / "m.onnx"], "--output", "m.onnx"),
        "bench": (["bench", "--quick", "--device", "cpu", "--backends", "torch", "--batch-sizes", "1",
                   "--output", out / "bench.json"], None, "bench.json"),
    }[command]


@pytest.mark.parametrize("command", ["train", "eval", "predict", "export", "bench"])
def test_output_under_a_regular_file(command, tmp_path, tiny_mnist, digit_png):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    args, option, _ = _writing_command(command, blocker / "sub", tiny_mnist, digit_png)
    result = invoke(*args)
    words = [str(blocker), "is a file, not a directory", "writable location"]
    assert_clean_error(result, 1, *words, *([option] if option else []))
    assert blocker.read_text() == "in the way"


def test_output_that_is_a_directory(tmp_path, tiny_mnist):
    (tmp_path / "m.onnx").mkdir()
    result = invoke("export", "--onnx", "--data-dir", tiny_mnist, "--output", tmp_path / "m.onnx")
    assert_clean_error(result, 1, "is a directory", "file name")


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("command", ["train", "eval", "predict", "export", "bench"])
@pytest.mark.slow
def test_disk_full(command, monkeypatch, tmp_path, tiny_mnist, digit_png):
    """ENOSPC while a file is written: 'Disk full', exit 1, no temporary file left, no target written."""
    out = tmp_path / "out"
    args, _, written = _writing_command(command, out, tiny_mnist, digit_png)
    if command in ("export", "bench", "train"):
        # The bytes themselves do not fit: the atomic writer's write fails.
        real = Path.write_bytes

        def write_bytes(self, data):
            if self.name.endswith(".tmp"):  # the atomic writer's temporary file
                _enospc()
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    else:
        # Pillow and matplotlib write through their own files: the data fails to reach the disk at fsync.
        monkeypatch.setattr(os, "fsync", _enospc)
    result = invoke(*args)
    assert_clean_error(result, 1, "Disk full while writing", str(out), "Free some space",
                       after_progress=command == "train")
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    assert not (out / written).exists()


# ------------------------------------------------------------------ --debug


def test_debug_shows_the_traceback(monkeypatch, tmp_path, tiny_mnist):
    monkeypatch.setitem(cli_app.state, "debug", False)  # restored after the test: --debug sets it
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    plain = invoke("eval", "--weights", bad, "--data-dir", tiny_mnist, "--no-plots")
    assert_clean_error(plain, 1, "not a valid safetensors")
    debug = invoke("--debug", "eval", "--weights", bad, "--data-dir", tiny_mnist, "--no-plots")
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr and "read_info" in debug.stderr
    assert "Error: " in debug.stderr and "not a valid safetensors" in debug.stderr


# ------------------------------------------------------------------ stdout closed early (`| head`)


def _closed_pipe_run(args: list, cwd: Path) -> tuple[int, str]:
    """Run the CLI with stdout a pipe whose reading end is already closed: every write fails (EPIPE)."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "lenet_cli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the CLI writes anything
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err.decode()


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "{png}", "{png}"],
        ["predict", "{png}", "--json"],
        ["predict", "{png}", "missing.png", "--json"],
        ["eval", "--data-dir", "{mnist}", "--json", "--no-plots", "--device", "cpu"],
        ["eval", "--data-dir", "{mnist}", "--no-plots", "--device", "cpu"],
    ],
)
@pytest.mark.slow
def test_closed_stdout_exits_quietly(args, tmp_path, digit_png, tiny_mnist):
    args = [a.replace("{png}", str(digit_png)).replace("{mnist}", str(tiny_mnist)) for a in args]
    code, err = _closed_pipe_run(args, tmp_path)
    assert code == 1, err
    assert err == "", err  # no "Unexpected BrokenPipeError", no "Exception ignored", no traceback


def test_head_in_a_shell_pipeline(tmp_path, digit_png):
    """The real thing: `lenet predict ... --json | head -c 10` gives head's bytes and nothing on stderr."""
    lenet = f"{sys.executable} -m lenet_cli"
    script = f"{lenet} predict {digit_png} {digit_png} {digit_png} --json | head -c 10; exit ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.stdout == '{\n  "weigh'
    assert proc.stderr == "", proc.stderr
    assert proc.returncode in (0, 1)  # 0 when the output fitted in the pipe before head left, else 1


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--epochs", "0"], ["--epochs", "x>=1", "train --help"]),
        (["train", "--epochs", "abc"], ["--epochs", "abc"]),
        (["train", "--bogus"], ["No such option: --bogus"]),
        (["predict"], ["Missing argument", "predict --help"]),
        (["nosuch"], ["No such command", "--help"]),
    ],
    ids=["out-of-range", "not-a-number", "unknown-option", "missing-argument", "unknown-command"],
)
def test_usage_errors_of_the_installed_command_are_one_line(args, words):
    """The console script (not CliRunner) prints Typer's usage errors as one line too, exit code 2."""
    result = subprocess.run([sys.executable, "-m", "lenet_cli", *args], capture_output=True, text=True,
                            env={**os.environ, "NO_COLOR": "1"}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
