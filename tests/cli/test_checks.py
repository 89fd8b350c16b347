"""`lenet checks` through the real app: its table, its JSON, --no-torch, and what it says about MNIST."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from typer.testing import CliRunner

from lenet_cli.cli.app import app
from lenet_cli.machine.report import sha256
from lenet_cli.model.weights import bundled_weights_path

runner = CliRunner()


def checks(*args: str):
    result = runner.invoke(app, ["checks", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def test_json_describes_the_machine_and_valid_mnist(tiny_mnist):
    data = json.loads(checks("--json", "--data-dir", tiny_mnist).stdout)
    assert set(data["versions"]) >= {"Python", "lenet", "torch", "torchvision", "onnx", "onnxruntime", "numpy",
                                     "Pillow", "FastAPI"}
    assert data["versions"]["torch"]  # from its metadata
    assert data["mnist"]["ok"] is True and [f["count"] for f in data["mnist"]["files"]] == [600, 600, 200, 200]
    assert data["bundled_model"]["weights_sha256"] == sha256(bundled_weights_path())
    assert 0.99 < data["bundled_model"]["test_accuracy"] < 1
    assert data["device_auto"]["device"] in ("cpu", "cuda:0", "mps") and data["device_auto"]["reason"]
    assert "CPUExecutionProvider" in data["onnxruntime"]["providers"]
    assert data["cpu"]["threads"] >= 1 and data["problems"] == []


def test_missing_and_damaged_mnist_are_reported_not_fatal(tiny_mnist, tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(tiny_mnist, folder)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    images = folder / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    data = json.loads(checks("--json", "--no-torch", "--data-dir", folder).stdout)
    files = {f["name"]: f for f in data["mnist"]["files"]}
    assert data["mnist"]["ok"] is False
    assert files["train-images-idx3-ubyte.gz"]["problem"] is None
    assert "truncated" in files["t10k-images-idx3-ubyte.gz"]["problem"]
    assert "is not in" in files["t10k-labels-idx1-ubyte.gz"]["problem"]


def test_a_gzipped_file_that_fails_its_checksum_is_named(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not the real file")
    data = json.loads(checks("--json", "--no-torch", "--data-dir", tmp_path).stdout)
    assert "fails its checksum" in data["mnist"]["files"][0]["problem"]


def test_table_has_every_section(tiny_mnist):
    output = checks("--data-dir", tiny_mnist).stdout
    for words in ("Versions", "CPU", "CUDA", "MPS", "onnxruntime", "MNIST", "Bundled model", "--device auto",
                  "600 items", "99.48%"):
        assert words in output, output


def test_no_torch_leaves_devices_out_and_does_not_import_torch(tiny_mnist):
    code = (
        "import sys\nfrom lenet_cli.cli.app import main\n"
        f"sys.argv = ['lenet', 'checks', '--no-torch', '--data-dir', {str(tiny_mnist)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("NOTORCH 0"), out.stdout + out.stderr
    assert "not probed (--no-torch)" in out.stdout


def test_a_torch_that_fails_is_a_problem_line_not_a_crash(monkeypatch, tiny_mnist):
    from lenet_cli.machine import report

    def broken():
        raise OSError("libcudart.so.13: cannot open shared object file")

    monkeypatch.setattr(report, "torch_devices", broken)
    result = checks("--data-dir", tiny_mnist)
    assert "Problem: torch: OSError: libcudart.so.13" in result.stdout


def test_help_reads_at_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = checks("--help")
    assert "Examples" in result.output and "--no-torch" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
