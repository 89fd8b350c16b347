"""The real Typer app through CliRunner, on the tiny synthetic MNIST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lenet_cli import __version__
from lenet_cli.cli.app import app
from lenet_cli.training.config import TrainConfig

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert text in result.output, result.output
    assert "Traceback" not in result.output


def test_help_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    for name in ("train", "eval", "predict", "export", "bench", "checks"):
        assert name in result.output


@pytest.mark.parametrize("cmd", ["train", "eval", "predict", "export", "bench", "checks"])
def test_every_command_has_help_with_examples(cmd):
    result = invoke(cmd, "--help")
    assert result.exit_code == 0, result.output
    assert "Examples" in result.output


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_help_does_not_import_torch():
    code = (
        "import sys, runpy; sys.argv = ['lenet', '--help']\n"
        "try:\n    runpy.run_module('lenet_cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("NOTORCH"), out.stdout + out.stderr


def test_python_m_runs():
    out = subprocess.run([sys.executable, "-m", "lenet_cli", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and __version__ in out.stdout


def test_train_end_to_end(tiny_mnist, tmp_path):
    out_dir = tmp_path / "run"
    result = invoke("train", "--epochs", "2", "--batch-size", "64", "--val-size", "100", "--data-dir", tiny_mnist,
                    "--device", "cpu", "--output-dir", out_dir, "--no-download")
    assert result.exit_code == 0, result.output
    for name in ("best.safetensors", "last.safetensors", "history.csv", "history.json", "curves.png"):
        assert (out_dir / name).is_file(), name
    assert "lenet eval --weights" in result.output
    assert "test accuracy" in result.output
    history = json.loads((out_dir / "history.json").read_text())
    assert len(history["history"]) == 2
    assert (out_dir / "history.csv").read_text().count("\n") == 3


def test_train_json(tiny_mnist, tmp_path):
    result = invoke("train", "--epochs", "1", "--val-size", "100", "--data-dir", tiny_mnist, "--device", "cpu",
                    "--output-dir", tmp_path / "r", "--arch", "classic", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["config"]["preset"] == "classic"
    assert 0 <= payload["test_accuracy"] <= 1 and payload["param_count"] == 60850


def test_train_dry_run(tiny_mnist, tmp_path):
    result = invoke("train", "--epochs", "1", "--dry-run", "--val-size", "100", "--data-dir", tiny_mnist,
                    "--device", "cpu", "--output-dir", tmp_path / "r")
    assert result.exit_code == 0, result.output


def test_train_missing_data_offline(tmp_path):
    result = invoke("train", "--data-dir", tmp_path / "empty", "--no-download", "--device", "cpu",
                    "--output-dir", tmp_path / "r")
    assert_clean_error(result, 1, "MNIST not found")
    assert "train-images-idx3-ubyte.gz" in result.output


@pytest.mark.parametrize(
    "args, text",
    [
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1"], "--lr"),
        (["--device", "gpu"], "Invalid device"),
        (["--arch", "resnet"], "Unknown --arch"),
    ],
)
def test_train_bad_options_are_usage_errors(args, text, tiny_mnist, tmp_path):
    result = invoke("train", *args, "--data-dir", tiny_mnist, "--output-dir", tmp_path / "r")
    assert_clean_error(result, 2, text)


@pytest.mark.slow
def test_eval_tables_and_plots(tiny_mnist, trained_weights, tmp_path):
    result = invoke("eval", "--weights", trained_weights, "--data-dir", tiny_mnist, "--device", "cpu",
                    "--output-dir", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    for text in ("accuracy", "Per class", "Confusion matrix", "precision"):
        assert text in result.output
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()
    assert (tmp_path / "ev" / "misclassified.png").is_file()


def test_eval_json(tiny_mnist, trained_weights):
    result = invoke("eval", "--weights", trained_weights, "--data-dir", tiny_mnist, "--device", "cpu", "--json",
                    "--no-plots")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["count"] == 200 and len(payload["per_class"]) == 10
    assert sum(map(sum, payload["confusion_matrix"])) == 200


def test_eval_bad_weights(tmp_path, tiny_mnist):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    result = invoke("eval", "--weights", bad, "--data-dir", tiny_mnist, "--no-plots")
    assert_clean_error(result, 1, "not a valid safetensors")
    result = invoke("eval", "--weights", tmp_path / "nope.safetensors", "--data-dir", tiny_mnist)
    assert_clean_error(result, 1, "not found")


def test_eval_cuda_absent(tiny_mnist, trained_weights):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = invoke("eval", "--weights", trained_weights, "--data-dir", tiny_mnist, "--device", "cuda")
    assert_clean_error(result, 1, "CUDA was requested")


def _digit_png(path: Path, digit: str, dark_on_light: bool = True, size=(200, 200)) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    bg, fg = (250, 20) if dark_on_light else (0, 255)
    img = Image.new("L", size, bg)
    ImageDraw.Draw(img).text((size[0] // 4, size[1] // 8), digit, fill=fg, font=ImageFont.load_default(size=size[1] // 2 + 20))
    img.save(path)
    return path


def test_predict_bundled_model(tmp_path):
    files = [_digit_png(tmp_path / f"d{i}.png", str(i)) for i in (1, 7)]
    result = invoke("predict", *files, "--json", "--top-k", "2", "--save-preview", tmp_path / "prev")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    rows = payload["results"]
    assert [len(r["top_k"]) for r in rows] == [2, 2]
    assert all(0 <= r["prediction"] <= 9 and 0 < r["confidence"] <= 1 for r in rows)
    assert (tmp_path / "prev" / "d1.png").is_file()


def test_predict_directory_and_glob_with_a_bad_file(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _digit_png(folder / "a.png", "3", dark_on_light=False)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = invoke("predict", folder, str(tmp_path / "imgs" / "*.png"))
    assert result.exit_code == 1, result.output
    assert "error" in result.output and "a.png" in result.output
    assert "Traceback" not in result.output


def test_predict_no_ink(tmp_path):
    from PIL import Image

    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    result = invoke("predict", tmp_path / "blank.png", "--json")
    assert result.exit_code == 1
    assert "no ink" in json.loads(result.stdout)["results"][0]["error"]


@pytest.mark.slow
def test_export_onnx_roundtrip(tiny_mnist, trained_weights, tmp_path):
    import onnx

    out = tmp_path / "m.onnx"
    result = invoke("export", "--onnx", "--weights", trained_weights, "--output", out, "--data-dir", tiny_mnist)
    assert result.exit_code == 0, result.output
    assert "pass" in result.output
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    for key in ("preset", "normalization", "classes", "source_weights_sha256", "lenet_cli_version"):
        assert key in meta
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param  # dynamic batch
    # The ONNX path of eval gives the same accuracy as the PyTorch path.
    a = json.loads(invoke("eval", "--weights", trained_weights, "--data-dir", tiny_mnist, "--device", "cpu", "--json",
                          "--no-plots").stdout)
    b = json.loads(invoke("eval", "--weights", out, "--data-dir", tiny_mnist, "--device", "cpu", "--json",
                          "--no-plots").stdout)
    assert a["correct"] == b["correct"] and b["backend"] == "onnxruntime"
    # ... and predict runs on it.
    png = _digit_png(tmp_path / "d.png", "4")
    result = invoke("predict", png, "--weights", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["backend"] == "onnxruntime"


def test_export_requires_format_and_bad_weights_write_nothing(tmp_path, tiny_mnist):
    assert_clean_error(invoke("export"), 2, "--onnx")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    out = tmp_path / "m.onnx"
    result = invoke("export", "--onnx", "--weights", bad, "--output", out, "--data-dir", tiny_mnist)
    assert_clean_error(result, 1, "not a valid safetensors")
    assert not out.exists()


def test_bench_refuses_to_replace_an_existing_output(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text("{}")
    result = invoke("bench", "--quick", "--device", "cpu", "--output", out)
    assert result.exit_code == 1 and "exists already" in result.output  # before any measurement
    assert out.read_text() == "{}"


@pytest.mark.slow
def test_bench_quick_json(tmp_path):
    out = tmp_path / "bench.json"
    result = invoke("bench", "--quick", "--batch-sizes", "1,8", "--device", "cpu", "--json", "--output", out,
                    "--backends", "torch,onnxruntime")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {"environment", "inference", "training"} <= set(payload)
    backends = {(r["backend"], r["batch_size"]) for r in payload["inference"]}
    assert backends >= {("torch", 1), ("torch", 8), ("onnxruntime-cpu", 1), ("onnxruntime-cpu", 8)}
    expected = {"torch", "onnxruntime-cpu"} | ({"onnxruntime-cpu-1t"} if (os.cpu_count() or 1) > 1 else set())
    assert {b for b, _ in backends} == expected
    for r in payload["inference"]:
        assert r["p50_us"] > 0 and r["images_per_s"] > 0 and r["p50_us"] <= r["p99_us"]
    # The documented fields (README, "lenet bench"): present, typed, and consistent with each other.
    assert {"peak_gflops", "macs_per_image", "epoch_images", "training_speedup_vs_tutorial",
            "training_speedup_vs_tutorial_min", "training_speedup_vs_tutorial_max", "time_to_accuracy", "skipped",
            "config"} <= set(payload)
    assert payload["peak_gflops"]["cpu"] > 0 and payload["epoch_images"] == 55_000
    assert payload["config"]["repeats"] == 1 and payload["config"]["quick"] is True
    for r in payload["inference"]:
        assert {"backend", "device", "batch_size", "p50_us", "p90_us", "p99_us", "images_per_s", "runs", "gflops",
                "fraction_of_peak", "repeats", "p50_us_min", "p50_us_max", "images_per_s_min", "images_per_s_max",
                "pids"} <= set(r)
        assert r["runs"] >= 5 and r["repeats"] == 1 and len(r["pids"]) == 1
        assert r["p50_us_min"] == r["p50_us"] == r["p50_us_max"]  # one repeat: no spread
        assert r["images_per_s"] == pytest.approx(r["batch_size"] / (r["p50_us"] / 1e6))
        assert r["gflops"] == pytest.approx(r["images_per_s"] * 2 * payload["macs_per_image"] / 1e9)
    pipelines = {t["pipeline"]: t for t in payload["training"]}
    assert set(pipelines) == {"lenet", "tutorial"}
    assert pipelines["tutorial"]["batch_size"] == 64
    assert pipelines["lenet"]["batch_size"] == TrainConfig().batch_size
    for t in pipelines.values():
        assert {"seconds_per_epoch_min", "seconds_per_epoch_max", "images_per_s_min", "images_per_s_max", "images",
                "epoch_fraction", "data", "repeats", "pids", "steps"} <= set(t)
        assert t["images_per_s"] > 0 and t["seconds_per_epoch"] == pytest.approx(55_000 / t["images_per_s"])
        # --quick times 5% of an epoch and says so: the scaled figure is 20x the time measured.
        assert t["images"] == 2_750 and t["epoch_fraction"] == pytest.approx(0.05) and t["data"] == "synthetic"
        assert t["steps"] == -(-2_750 // t["batch_size"])
    assert payload["training_speedup_vs_tutorial"] == pytest.approx(
        pipelines["lenet"]["images_per_s"] / pipelines["tutorial"]["images_per_s"])
    assert payload["time_to_accuracy"] is None and "time_to_accuracy" not in payload["skipped"]  # --full only
    assert payload["environment"]["torch"] and payload["environment"]["onnxruntime"]
    assert json.loads(out.read_text())["inference"]


@pytest.mark.slow
def test_bench_table_without_tutorial():
    result = invoke("bench", "--quick", "--batch-sizes", "2", "--device", "cpu", "--backends", "onnxruntime",
                    "--no-tutorial", "--train-batch-size", "16")
    assert result.exit_code == 0, result.output
    assert "onnxruntime-cpu" in result.stdout and "lenet train" in result.stdout
    assert "tutorial DataLoader" not in result.stdout and "GFLOP/s" in result.stdout


def test_bench_bad_batch_sizes():
    assert_clean_error(invoke("bench", "--batch-sizes", "1,x"), 2, "--batch-sizes")
