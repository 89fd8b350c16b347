"""Option parsing without the work: each command's API function is replaced by a recorder.

Each test asserts the exact request the command built from its options (defaults, every
flag, clashes caught before anything slow), so these paths are covered in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lenet_cli import api
from lenet_cli.api.benchmarking import bench_config
from lenet_cli.training.session import resolve_resume
from lenet_cli.cli.app import app
from lenet_cli.devices import DeviceSpec
from lenet_cli.errors import UsageError
from lenet_cli.training.config import TrainConfig

runner = CliRunner()
FLAT_CHECKPOINT = Path(__file__).parents[1] / "fixtures" / "checkpoint-0.2.0.dev0-adamw.safetensors"


@pytest.fixture
def recorded(monkeypatch):
    """Replace every API function with one that records its request and ends the command (exit 0)."""
    calls: list = []

    def recorder(request, events=None):
        calls.append(request)
        raise typer.Exit(0)

    for name in ("train", "evaluate", "predict", "export", "bench"):
        monkeypatch.setattr(api, name, recorder)
    return calls


def run(*args: str):
    return runner.invoke(app, list(args))


def test_train_defaults_come_from_the_config(recorded):
    result = run("train")
    assert result.exit_code == 0, result.output
    assert recorded == [api.TrainRequest(given=frozenset())]  # nothing typed
    assert recorded[0].config == TrainConfig() and recorded[0].device == DeviceSpec("auto")


def test_train_every_option_reaches_the_request(recorded, tmp_path):
    result = run("train", "--epochs", "3", "--batch-size", "32", "--lr", "0.01", "--seed", "4", "--arch", "classic",
                 "--val-size", "10", "--weight-decay", "0", "--optimizer", "sgd", "--no-augment",
                 "--label-smoothing", "0.1", "--dry-run", "--no-download", "--device", "cuda:1",
                 "-o", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert recorded == [api.TrainRequest(
        config=TrainConfig(preset="classic", epochs=3, batch_size=32, lr=0.01, weight_decay=0.0, optimizer="sgd",
                           label_smoothing=0.1, augment=False, val_size=10, seed=4, dry_run=True),
        device=DeviceSpec("cuda", 1), data_dir=tmp_path / "data", output_dir=tmp_path / "out",
        allow_download=False,
        # Typed, defaults included (--lr 0.01, --label-smoothing 0.1): with --resume each must agree.
        given=frozenset({"epochs", "batch_size", "lr", "seed", "preset", "val_size", "weight_decay", "optimizer",
                         "augment", "label_smoothing", "dry_run"}))]


@pytest.mark.parametrize("args", [["train", "--device", "gpu"], ["eval", "--device", "cuda:x"],
                                  ["predict", "a.png", "--device", "mps:0"], ["bench", "--device", "tpu"]])
def test_a_device_typo_is_a_usage_error_before_any_work(recorded, args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Invalid device" in result.output and recorded == []


def test_train_resume_passes_the_typed_settings_for_the_api_to_check(recorded, tmp_path):
    result = run("train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    (request,) = recorded
    assert request.resume == tmp_path / "run" and request.config == TrainConfig(epochs=3)
    assert request.device == DeviceSpec("cpu")


def test_resume_with_a_clashing_setting_is_a_usage_error():
    """A setting typed with --resume must agree with the checkpoint's (default values count as not typed)."""
    request = api.TrainRequest(config=TrainConfig(epochs=3, lr=0.1), resume=FLAT_CHECKPOINT)
    with pytest.raises(UsageError, match="--epochs, --lr differ"):
        resolve_resume(request)
    cfg, device, state = resolve_resume(api.TrainRequest(config=TrainConfig(seed=5), resume=FLAT_CHECKPOINT))
    # The checkpoint predates --precision: it ran in float32, and resumes so.
    # It records the recipe of its day (peak rate 6e-3, no label smoothing), not today's defaults.
    assert cfg == state.config == TrainConfig(epochs=2, batch_size=64, lr=6e-3, label_smoothing=0.0, val_size=100,
                                           seed=5, precision="float32", clean_epochs=0)
    assert device == DeviceSpec("cpu")  # auto: the device the run was started with
    _, device, _ = resolve_resume(api.TrainRequest(device=DeviceSpec("auto"), resume=FLAT_CHECKPOINT.parent
                                                                / FLAT_CHECKPOINT.name))
    assert device == DeviceSpec("cpu")


def test_eval_options(recorded, tmp_path):
    assert run("eval").exit_code == 0
    result = run("eval", "-w", str(tmp_path / "m.onnx"), "--device", "cpu", "--no-plots", "-o", str(tmp_path),
                 "--no-download", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert recorded == [api.EvalRequest(), api.EvalRequest(
        weights=tmp_path / "m.onnx", device=DeviceSpec("cpu"), data_dir=tmp_path, plots=False, output_dir=tmp_path,
        allow_download=False)]


@pytest.mark.parametrize("flags, invert", [([], None), (["--invert"], True), (["--no-invert"], False)])
def test_predict_options(recorded, tmp_path, flags, invert):
    result = run("predict", "a.png", "dir/", "*.jpg", "-k", "5", "--save-preview", str(tmp_path), *flags)
    assert result.exit_code == 0, result.output
    assert recorded == [api.PredictRequest(images=("a.png", "dir/", "*.jpg"), top_k=5, invert=invert,
                                           preview_dir=tmp_path, keep_rows=200)]  # the table's rows


def test_predict_streaming_options(recorded, tmp_path):
    assert run("predict", "a.png", "--jsonl", "-o", str(tmp_path / "r.csv")).exit_code == 0
    assert run("predict", "a.png", "--json").exit_code == 0
    assert recorded == [api.PredictRequest(images=("a.png",), output=tmp_path / "r.csv", keep_rows=0),
                        api.PredictRequest(images=("a.png",), keep_rows=None)]
    result = run("predict", "a.png", "--json", "--jsonl")
    assert result.exit_code == 2 and "choose one" in result.output and len(recorded) == 2


@pytest.mark.parametrize("args", [["predict"], ["predict", "a.png", "-k", "11"]])
def test_predict_usage_errors(recorded, args):
    assert run(*args).exit_code == 2 and recorded == []


def test_export_needs_a_format_and_passes_its_options(recorded, tmp_path):
    result = run("export")
    assert result.exit_code == 2 and "Choose a format: --onnx" in result.output and recorded == []
    assert run("export", "--onnx").exit_code == 0
    result = run("export", "--onnx", "-o", str(tmp_path / "m.onnx"), "--opset", "20", "--quantize", "int8")
    assert result.exit_code == 0, result.output
    assert recorded == [api.ExportRequest(), api.ExportRequest(output=tmp_path / "m.onnx", opset=20, quantize="int8")]
    assert run("export", "--onnx", "--opset", "17").exit_code == 2  # the exporter starts at 18


def test_bench_options(recorded, tmp_path):
    assert run("bench").exit_code == 0
    result = run("bench", "--batch-sizes", "1, 8", "--backends", "torch,onnxruntime", "--seconds", "0.5", "--quick",
                 "--output", str(tmp_path / "b.json"), "--train-batch-size", "64", "--no-tutorial", "--repeats", "5",
                 "--data-dir", str(tmp_path / "mnist"), "--no-accuracy", "--worker-timeout", "30")
    assert result.exit_code == 0, result.output
    assert recorded == [api.BenchRequest(), api.BenchRequest(
        batch_sizes=(1, 8), backends=("torch", "onnxruntime"), seconds=0.5, quick=True, output=tmp_path / "b.json",
        train_batch_size=64, tutorial=False, repeats=5, data_dir=tmp_path / "mnist", accuracy=False,
        worker_timeout=30.0)]


@pytest.mark.parametrize("sizes", ["", "a,b", "0,1"])
def test_bench_batch_sizes_must_be_positive_integers(recorded, sizes):
    result = run("bench", "--batch-sizes", sizes)
    assert result.exit_code == 2 and "--batch-sizes" in result.output and recorded == []


def test_bench_request_checks_backends_and_budget():
    with pytest.raises(UsageError, match="Unknown backend"):
        bench_config(api.BenchRequest(backends=("torch", "tensorrt")))
    with pytest.raises(UsageError, match="--seconds"):
        bench_config(api.BenchRequest(seconds=601))
    with pytest.raises(UsageError, match="--repeats"):
        bench_config(api.BenchRequest(repeats=0))
    with pytest.raises(UsageError, match="--worker-timeout"):
        bench_config(api.BenchRequest(worker_timeout=0))
    quick = bench_config(api.BenchRequest(quick=True))
    assert "torch-compile" not in quick.backends and quick.min_seconds <= 0.2
    assert quick.repeats == 1 and quick.epoch_fraction < 1
    default = bench_config(api.BenchRequest())
    assert "torch-compile" not in default.backends and default.epoch_fraction < 1 and not default.accuracy
    assert default.predict_path
    full = bench_config(api.BenchRequest(full=True))
    assert full.repeats == 3 and full.epoch_fraction == 1 and full.train_batch_size is None and full.accuracy
    assert "torch-compile" in full.backends
    with pytest.raises(UsageError, match="--full"):
        bench_config(api.BenchRequest(quick=True, full=True))
    assert bench_config(api.BenchRequest(quick=True, repeats=2)).repeats == 2


def test_bench_repeats_help_names_the_api_defaults():
    from lenet_cli.api import benchmarking

    result = run("bench", "--help")
    modes = benchmarking.MODES
    assert f"(default {modes['default'].repeats}; {modes['full'].repeats} with --full)" in " ".join(
        result.output.split())
