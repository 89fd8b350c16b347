"""Every kind of bad input through the real CLI: the exit code, one line on stderr that says what was
wrong and what to do, and never a traceback (unless `--debug` asks for one). Here: missing and
unreadable files, images that are not images, devices, numbers out of range; test_errors_weights.py:
weights files; test_errors_io.py: MNIST, outputs, --debug, a closed stdout. Shared:
tests/clean_errors.py and tests/cli/conftest.py.

Cases already covered the same way elsewhere, not repeated here:
test_cli.py: test_eval_bad_weights (garbage / missing --weights for eval), test_eval_cuda_absent,
test_train_missing_data_offline, test_train_bad_options_are_usage_errors (--epochs 0, --batch-size 0,
--lr -1, --device gpu, --arch), test_bench_bad_batch_sizes ('1,x');
test_predict_bad_inputs.py: test_bad_input_is_reported_in_its_row_and_others_still_run (per-file
image errors in --json rows), test_a_pattern_that_finds_no_images_is_a_usage_error,
test_unwritable_preview_folder_fails_before_work;
test_export.py: mismatched and truncated weights for export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from clean_errors import BUNDLED_ONNX, BUNDLED_ST, assert_clean_error, assert_one_line, assert_usage_error, invoke, run_cli


# ------------------------------------------------------------------ missing files


@pytest.mark.parametrize(
    "args, words",
    [
        (["eval", "--weights", "nope.onnx", "--no-plots"], ["not found", "nope.onnx", "check the path"]),
        (["predict", "{png}", "--weights", "nope.safetensors"], ["not found", "nope.safetensors", "check the path"]),
        (["predict", "{png}", "--weights", "nope.onnx"], ["not found", "check the path"]),
        (["export", "--onnx", "--weights", "nope.safetensors"], ["not found", "check the path"]),
        (["bench", "--quick", "--weights", "nope.safetensors"], ["not found", "check the path"]),
        (["predict", "nope.png"], ["nope.png", "file not found", "check the path"]),
        (["eval", "--data-dir", "{png}", "--no-download", "--no-plots"], ["is a file, not a folder", "--data-dir"]),
    ],
)
def test_missing_file(args, words, digit_png):
    result = invoke(*[a.replace("{png}", str(digit_png)) for a in args])
    assert_clean_error(result, 1, *words)


# ------------------------------------------------------------------ files the user may not read or write


def _locked_copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    dst.chmod(0)
    return dst


@pytest.mark.parametrize("kind", ["image", "safetensors", "onnx", "mnist"])
@pytest.mark.slow
def test_unreadable_file(kind, permissions_apply, tmp_path, digit_png, tiny_mnist):
    if kind == "image":
        locked = _locked_copy(digit_png, tmp_path / "locked.png")
        args = ["predict", locked]
        words = ["locked.png", "permission denied", "check the file's permissions"]
    elif kind == "safetensors":
        locked = _locked_copy(BUNDLED_ST, tmp_path / "locked.safetensors")
        args = ["predict", digit_png, "--weights", locked, "--device", "cpu"]
        words = ["locked.safetensors", "permission denied", "may read"]
    elif kind == "onnx":
        locked = _locked_copy(BUNDLED_ONNX, tmp_path / "locked.onnx")
        args = ["predict", digit_png, "--weights", locked]
        words = ["locked.onnx", "permission denied", "may read"]
    else:
        data = tmp_path / "mnist"
        shutil.copytree(tiny_mnist, data)
        locked = data / "t10k-images-idx3-ubyte"
        locked.chmod(0)
        args = ["eval", "--data-dir", data, "--no-download", "--no-plots", "--device", "cpu"]
        words = ["t10k-images-idx3-ubyte", "permission denied", "check the file's permissions"]
    try:
        code, out, err = run_cli(permissions_apply, args, tmp_path)
    finally:
        locked.chmod(0o644)
    assert code == 1, out + err
    assert "Traceback" not in out + err and "Unexpected" not in out + err
    assert_one_line(err, *words)


@pytest.mark.parametrize("command", ["eval", "predict", "train"])
@pytest.mark.slow
def test_read_only_output_directory(command, permissions_apply, tmp_path, digit_png, tiny_mnist):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    target = read_only / "out"
    args = {
        "eval": ["eval", "--data-dir", tiny_mnist, "--device", "cpu", "--output-dir", target],
        "predict": ["predict", digit_png, "--save-preview", target],
        "train": ["train", "--data-dir", tiny_mnist, "--device", "cpu", "--epochs", "1", "--dry-run",
                  "--val-size", "100", "--output-dir", target],
    }[command]
    try:
        code, out, err = run_cli(permissions_apply, args, tmp_path)
    finally:
        read_only.chmod(0o755)
    assert code == 1, out + err
    assert "Traceback" not in out + err
    option = "--save-preview" if command == "predict" else "--output-dir"
    assert_one_line(err, str(target), "permission denied", option)
    assert not target.exists()


# ------------------------------------------------------------------ images that are not images


@pytest.mark.parametrize(
    "name, content",
    [
        ("notes.png", b"hello, I am text\n"),
        ("noise.jpg", bytes(range(256)) * 8),
        ("model.png", BUNDLED_ST.read_bytes()[:4096]),
    ],
)
@pytest.mark.parametrize("json_out", [False, True])
def test_not_an_image(name, content, json_out, tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    result = invoke("predict", path, *(["--json"] if json_out else []))
    assert_clean_error(result, 1, "1 of 1 file(s) could not be classified", name, "not an image", "Pass PNG")
    if json_out:
        row = json.loads(result.stdout)["results"][0]
        assert row["error_kind"] == "not_image"


def test_several_failed_images_are_summed_up(tmp_path, digit_png):
    (tmp_path / "a.png").write_text("text")
    result = invoke("predict", tmp_path / "a.png", tmp_path / "missing.png", digit_png)
    assert_clean_error(result, 1, "2 of 3 file(s)", "see the table", "a.png: not an image")
    rows = tmp_path / "rows.jsonl"  # the table shows 20 rows with --output: the summary points at the file
    result = invoke("predict", tmp_path / "a.png", tmp_path / "missing.png", digit_png, "--output", rows)
    assert_clean_error(result, 1, "2 of 3 file(s)", f"see {rows}", "a.png: not an image")


# ------------------------------------------------------------------ devices


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "cpu:0", "mps:1", "", "cuda:0:1"])
@pytest.mark.parametrize("command", ["eval", "predict", "train", "bench"])
def test_invalid_device_string(spec, command, digit_png, tiny_mnist):
    args = {"eval": ["eval", "--data-dir", tiny_mnist], "predict": ["predict", digit_png],
            "train": ["train", "--data-dir", tiny_mnist], "bench": ["bench", "--quick"]}[command]
    result = invoke(*args, "--device", spec)
    assert_clean_error(result, 2, f"Invalid device '{spec}'", "Use one of: auto | cpu | cuda")


@pytest.mark.parametrize(
    "args, words",
    [
        (["predict", "{png}", "--device", "cuda"], ["CUDA was requested", "--device cpu"]),
        (["predict", "{png}", "--device", "cuda:1", "--weights", str(BUNDLED_ONNX)],
         ["no CUDA execution provider", "onnxruntime-gpu"]),
        (["eval", "--data-dir", "{mnist}", "--device", "cuda:0", "--no-plots"], ["CUDA was requested"]),
        (["train", "--data-dir", "{mnist}", "--device", "cuda", "--dry-run", "--val-size", "100", "--epochs", "1",
          "--output-dir", "run"], ["CUDA was requested", "--device cpu"]),
        (["bench", "--quick", "--device", "cuda", "--backends", "torch", "--batch-sizes", "1"],
         ["CUDA was requested", "--device cpu"]),
    ],
)
def test_cuda_requested_where_there_is_none(args, words, no_cuda, digit_png, tiny_mnist, tmp_path):
    args = [a.replace("{png}", str(digit_png)).replace("{mnist}", str(tiny_mnist)) for a in args]
    assert_clean_error(invoke(*args), 1, *words)
    assert not (tmp_path / "run").exists()  # train fails before it writes anything


@pytest.mark.parametrize(
    "args, words",
    [
        (["predict", "{png}", "--device", "mps"], ["MPS was requested but is not available", "--device cpu"]),
        (["predict", "{png}", "--device", "mps", "--weights", str(BUNDLED_ONNX)], ["onnxruntime has no MPS backend"]),
        (["eval", "--data-dir", "{mnist}", "--device", "mps", "--no-plots"], ["MPS was requested"]),
    ],
)
def test_mps_requested_where_there_is_none(args, words, monkeypatch, digit_png, tiny_mnist):
    from lenet_cli import devices

    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    args = [a.replace("{png}", str(digit_png)).replace("{mnist}", str(tiny_mnist)) for a in args]
    assert_clean_error(invoke(*args), 1, *words)


# ------------------------------------------------------------------ numbers out of range


TRAIN_NUMBERS = [
    pytest.param(["--epochs", "-1"], ["--epochs", "x>=1"], id="--epochs -1"),
    pytest.param(["--batch-size", "-5"], ["--batch-size", "x>=1"], id="--batch-size -5"),
    pytest.param(["--lr", "0"], ["--lr must be a positive number"], id="--lr 0"),
    pytest.param(["--lr", "nan"], ["--lr must be a positive number", "nan"], id="--lr nan"),
    pytest.param(["--lr", "inf"], ["--lr must be a positive number", "inf"], id="--lr inf"),
    pytest.param(["--lr", "fast"], ["--lr", "not a valid float"], id="--lr fast"),
    pytest.param(["--val-size", "-1"], ["--val-size", "x>=0"], id="--val-size -1"),
    # The tiny set has 600 training images.
    pytest.param(["--val-size", "600"], ["--val-size 600 leaves no training images"], id="--val-size 600"),
    pytest.param(["--val-size", "10000000"], ["leaves no training images"], id="--val-size 10000000"),
    pytest.param(["--label-smoothing", "1"], ["--label-smoothing", "0.99"], id="--label-smoothing 1"),
    pytest.param(["--label-smoothing", "-0.1"], ["--label-smoothing"], id="--label-smoothing -0.1"),
    pytest.param(["--label-smoothing", "nan"], ["--label-smoothing must be in [0, 1)"], id="--label-smoothing nan"),
    pytest.param(["--weight-decay", "-1"], ["--weight-decay"], id="--weight-decay -1"),
    pytest.param(["--weight-decay", "nan"], ["--weight-decay must be a number >= 0"], id="--weight-decay nan"),
    pytest.param(["--weight-decay", "inf"], ["--weight-decay must be a number >= 0"], id="--weight-decay inf"),
    pytest.param(["--optimizer", "adam"], ["--optimizer must be adamw or sgd"], id="--optimizer adam"),
]


@pytest.mark.parametrize("args, words", TRAIN_NUMBERS)
def test_train_numbers_out_of_range(args, words, tiny_mnist, tmp_path):
    base = ["train", "--data-dir", tiny_mnist, "--device", "cpu", "--epochs", "1", "--dry-run", "--no-download",
            "--output-dir", tmp_path / "run"]
    if args[0] != "--val-size":
        base += ["--val-size", "100"]
    result = invoke(*base, *args)
    assert_usage_error(result, *words)
    assert not list((tmp_path / "run").glob("*.safetensors"))


@pytest.mark.parametrize(
    "args, words",
    [
        (["bench", "--quick", "--batch-sizes", "0"], ["--batch-sizes needs positive integers"]),
        (["bench", "--quick", "--batch-sizes", "-8"], ["--batch-sizes needs positive integers"]),
        (["bench", "--quick", "--batch-sizes", ""], ["--batch-sizes needs positive integers"]),
        (["bench", "--quick", "--batch-sizes", "1.5"], ["--batch-sizes takes comma-separated integers"]),
        (["bench", "--quick", "--seconds", "-1"], ["--seconds"]),
        (["bench", "--quick", "--seconds", "nan"], ["--seconds must be between 0 and 600"]),
        (["bench", "--quick", "--seconds", "inf"], ["--seconds must be between 0 and 600"]),
        (["bench", "--quick", "--backends", ""], ["--backends is empty", "Choose from"]),
        (["bench", "--quick", "--backends", "tensorflow"], ["Unknown backend(s): tensorflow", "Choose from"]),
        (["predict", "x.png", "--top-k", "0"], ["--top-k", "1<=x<=10"]),
        (["predict", "x.png", "--top-k", "11"], ["--top-k"]),
        (["export", "--onnx", "--opset", "12"], ["--opset", "18<=x<=23"]),
        (["export", "--onnx", "--quantize", "int4"], ["--quantize supports only int8"]),
        (["export", "--onnx", "--output", "model.pt"], ["--output should end in .onnx"]),
    ],
)
def test_other_numbers_and_choices_out_of_range(args, words):
    assert_usage_error(invoke(*args), *words)
