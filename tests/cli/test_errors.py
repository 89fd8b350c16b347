"""Every kind of bad input through the real CLI: the exit code, one line on stderr that says what was
wrong and what to do, and never a traceback (unless `--debug` asks for one).

Cases already covered the same way elsewhere, not repeated here:
test_cli.py: test_eval_bad_weights (garbage / missing --weights for eval), test_eval_cuda_absent,
test_train_missing_data_offline, test_train_bad_options_are_usage_errors (--epochs 0, --batch-size 0,
--lr -1, --device gpu, --arch), test_bench_bad_batch_sizes ('1,x');
test_predict.py: test_bad_input_is_reported_in_its_row_and_others_still_run (per-file image errors
in --json rows), test_no_images_is_a_usage_error, test_unwritable_preview_folder_fails_before_work;
test_export.py: mismatched and truncated weights for export.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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


@pytest.fixture
def digit_png(tmp_path) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (120, 120), 250)
    ImageDraw.Draw(img).text((30, 10), "7", fill=10, font=ImageFont.load_default(size=90))
    path = tmp_path / "digit.png"
    img.save(path)
    return path


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


# ------------------------------------------------------------------ bad safetensors


def _tensors_and_meta():
    from safetensors import safe_open
    from safetensors.torch import load

    with safe_open(str(BUNDLED_ST), "pt") as f:
        meta = f.metadata()
    return load(BUNDLED_ST.read_bytes()), meta


def _save(tensors, meta) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=meta)


def _edited(edit):
    def make() -> bytes:
        tensors, meta = _tensors_and_meta()
        edit(tensors, meta)
        return _save(tensors, meta)

    return make


def _config(**changes):
    def edit(tensors, meta):
        meta["model_config"] = json.dumps({**json.loads(meta["model_config"]), **changes})

    return edit


def _other_preset(tensors, meta):
    from lenet_cli.model.lenet5 import build_model
    from lenet_cli.model.weights import build_metadata

    meta.clear()
    meta.update(build_metadata(build_model("classic")))  # modern tensors, labelled classic


def _wrong_shape(tensors, meta):
    import torch

    tensors["c1.weight"] = torch.zeros(3, 1, 5, 5)


def _int_tensor(tensors, meta):
    tensors["out.bias"] = tensors["out.bias"].long()


def _nan_tensor(tensors, meta):
    tensors["out.weight"][0, 0] = float("nan")


def _overflowing(tensors, meta):
    tensors["out.weight"].fill_(3e38)  # finite, but the scores overflow to infinity


BAD_SAFETENSORS = {
    "garbage": (lambda: b"\x07" * 300, ["not a valid safetensors", "corrupt or truncated"]),
    "empty": (lambda: b"", ["not a valid safetensors", "corrupt or truncated"]),
    "truncated": (lambda: BUNDLED_ST.read_bytes()[:5000], ["not a valid safetensors", "corrupt or truncated"]),
    "huge-header": (lambda: (1 << 40).to_bytes(8, "little") + BUNDLED_ST.read_bytes()[8:],
                    ["not a valid safetensors", "corrupt or truncated"]),
    "no-metadata": (_edited(lambda t, m: m.clear()), ["not a lenet weights file", "lenet train"]),
    "other-preset": (_edited(_other_preset), ["does not match the 'classic'", "lenet train"]),
    "wrong-shape": (_edited(_wrong_shape), ["tensor c1.weight has shape [3, 1, 5, 5], expected [6, 1, 5, 5]",
                                            "lenet train"]),
    "missing-tensor": (_edited(lambda t, m: t.pop("f6.bias")), ["tensor f6.bias is missing", "lenet train"]),
    "extra-tensor": (_edited(lambda t, m: t.update(extra=t["f6.bias"].clone())), ["unexpected tensor extra"]),
    "config-not-json": (_edited(lambda t, m: m.update(model_config="{")), ["unreadable lenet metadata"]),
    "config-wrong-type": (_edited(_config(c1="six")), ["'c1' has an invalid value", "lenet train"]),
    "config-negative": (_edited(_config(c3=-4)), ["'c3' has an invalid value"]),
    # A config that would need 16 TB if the model were built before checking the tensors.
    "config-huge": (_edited(_config(c5=10**10)), ["tensor c5.weight has shape [120, 400]", "lenet train"]),
    "config-unknown-layer": (_edited(_config(activation="gelu")), ["cannot build", "gelu"]),
    "metrics-not-object": (_edited(lambda t, m: m.update(metrics="[1]")), ["'metrics' is not a JSON object"]),
    "integer-tensor": (_edited(_int_tensor), ["tensor out.bias as int64, expected floating point"]),
    "nan-tensor": (_edited(_nan_tensor), ["NaN or infinite", "out.weight", "--lr"]),
    "overflowing-scores": (_edited(_overflowing), ["NaN or infinite scores", "lenet train"]),
}


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("case", sorted(BAD_SAFETENSORS))
def test_bad_safetensors(case, command, tmp_path, tiny_mnist, digit_png):
    make, words = BAD_SAFETENSORS[case]
    bad = tmp_path / f"{case}.safetensors"
    bad.write_bytes(make())
    if command == "eval":
        result = invoke("eval", "--weights", bad, "--data-dir", tiny_mnist, "--no-plots", "--device", "cpu")
    else:
        result = invoke("predict", digit_png, "--weights", bad, "--device", "cpu")
    assert_clean_error(result, 1, str(bad), *words)


# ------------------------------------------------------------------ bad ONNX


def _graph(inputs, outputs, nodes, initializers=(), ir_version=10) -> bytes:
    import onnx
    from onnx import helper as h

    float_ = onnx.TensorProto.FLOAT
    ins = [h.make_tensor_value_info(n, t or float_, s) for n, s, t in inputs]
    outs = [h.make_tensor_value_info(n, t or float_, s) for n, s, t in outputs]
    graph = h.make_graph(nodes, "g", ins, outs, initializer=list(initializers))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=ir_version).SerializeToString()


def _onnx_cases() -> dict:
    import onnx
    from onnx import helper as h
    from onnx import numpy_helper

    def weights(value, n_out=10):
        return numpy_helper.from_array(np.full((784, n_out), value, np.float32), "W")

    linear = [h.make_node("Flatten", ["x"], ["f"]), h.make_node("MatMul", ["f", "W"], ["y"])]
    pixels = ("x", ["N", 1, 28, 28], None)
    reshape = numpy_helper.from_array(np.array([-1, 10], np.int64), "shape")
    return {
        "garbage": (lambda: b"hello world" * 20, ["not a valid ONNX model", "lenet export --onnx"]),
        "empty": (lambda: b"", ["not a valid ONNX model"]),
        "truncated": (lambda: BUNDLED_ONNX.read_bytes()[:3000], ["not a valid ONNX model", "truncated"]),
        "too-new": (lambda: _graph([pixels], [("y", ["N", 1, 28, 28], None)], [h.make_node("Relu", ["x"], ["y"])],
                                   ir_version=99), ["not a valid ONNX model", "IR version", "too new"]),
        "wrong-input-shape": (lambda: _graph([("x", ["N", 3, 32, 32], None)], [("y", ["N", 3, 32, 32], None)],
                                             [h.make_node("Relu", ["x"], ["y"])]),
                              ["not a LeNet digit classifier", "input shape is ['N', 3, 32, 32]", "lenet export"]),
        "integer-input": (lambda: _graph([("x", ["N", 1, 28, 28], onnx.TensorProto.INT64)],
                                         [("y", ["N", 1, 28, 28], onnx.TensorProto.INT64)],
                                         [h.make_node("Identity", ["x"], ["y"])]), ["input is tensor(int64)"]),
        "fixed-batch": (lambda: _graph([("x", [1, 1, 28, 28], None)], [("y", [1, 10], None)], linear, [weights(0.0)]),
                        ["batch size is fixed at 1"]),
        "two-inputs": (lambda: _graph([pixels, ("z", ["N", 1, 28, 28], None)], [("y", ["N", 1, 28, 28], None)],
                                      [h.make_node("Add", ["x", "z"], ["y"])]), ["has 2 inputs"]),
        "image-out": (lambda: _graph([pixels], [("y", ["N", 1, 28, 28], None)], [h.make_node("Relu", ["x"], ["y"])]),
                      ["output shape is ['N', 1, 28, 28], expected [N, 10]"]),
        "three-classes": (lambda: _graph([pixels], [("y", ["N", 3], None)], linear, [weights(0.0, 3)]),
                          ["output shape is ['N', 3]"]),
        # Declares [M, 10] but fails for one image and returns the wrong shape for 200.
        "lies-about-output": (lambda: _graph([pixels], [("y", ["M", 10], None)],
                                             [h.make_node("Reshape", ["x", "shape"], ["y"])], [reshape]),
                              ["lenet export --onnx"]),
        "nan-scores": (lambda: _graph([pixels], [("y", ["N", 10], None)], linear, [weights(np.nan)]),
                       ["NaN or infinite scores"]),
    }


ONNX_CASES = sorted(_onnx_cases())


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("case", ONNX_CASES)
def test_bad_onnx(case, command, tmp_path, tiny_mnist, digit_png):
    make, words = _onnx_cases()[case]
    bad = tmp_path / f"{case}.onnx"
    bad.write_bytes(make())
    if command == "eval":
        result = invoke("eval", "--weights", bad, "--data-dir", tiny_mnist, "--no-plots")
    else:
        result = invoke("predict", digit_png, "--weights", bad)
    assert_clean_error(result, 1, str(bad), *words)


# ------------------------------------------------------------------ devices


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "cpu:0", "mps:1", "", "cuda:0:1"])
@pytest.mark.parametrize("command", ["eval", "predict", "train", "bench"])
def test_invalid_device_string(spec, command, digit_png, tiny_mnist):
    args = {"eval": ["eval", "--data-dir", tiny_mnist], "predict": ["predict", digit_png],
            "train": ["train", "--data-dir", tiny_mnist], "bench": ["bench", "--quick"]}[command]
    result = invoke(*args, "--device", spec)
    assert_clean_error(result, 2, f"Invalid device '{spec}'", "Use one of: auto | cpu | cuda")


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine without CUDA, whatever it has: torch and onnxruntime both say there is none."""
    import onnxruntime as ort
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])


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


# ------------------------------------------------------------------ the wrong kind of file, said plainly


def test_a_checkpoint_given_as_weights_says_what_it_is(tmp_path):
    ckpt = Path(__file__).parents[1] / "fixtures" / "checkpoint-0.2.0.dev0-adamw.safetensors"
    result = invoke("eval", "--weights", ckpt)
    assert_clean_error(result, 1, "training checkpoint", "best.safetensors")


def test_export_reads_the_weights_before_mnist(tmp_path):
    # No MNIST here (LENET_DATA_DIR is an empty folder): the file's own error comes first, not a download.
    result = invoke("export", "--onnx", "--weights", BUNDLED_ONNX, "--output", tmp_path / "x.onnx", "--no-download")
    assert_clean_error(result, 1, "ONNX file", ".safetensors")
    assert not (tmp_path / "x.onnx").exists()


def _with_unknown_config_key(path: Path, version: str) -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(BUNDLED_ST), "pt") as f:
        metadata = f.metadata()
    config = json.loads(metadata["model_config"]) | {"a_later_field": 1}
    save_file(load_file(str(BUNDLED_ST)), str(path),
              metadata=metadata | {"model_config": json.dumps(config), "lenet_cli_version": version})
    return path


def test_weights_from_a_newer_lenet_name_its_version(tmp_path):
    from lenet_cli import __version__

    result = invoke("eval", "--weights", _with_unknown_config_key(tmp_path / "new.safetensors", "99.0"))
    assert_clean_error(result, 1, "written by lenet 99.0", "99.0 or newer")
    # The same key in a file that claims this version (or none) was edited: no upgrade would read it.
    for version in (__version__, ""):
        result = invoke("eval", "--weights", _with_unknown_config_key(tmp_path / "edited.safetensors", version))
        assert_clean_error(result, 1, "edited or damaged")


def test_a_mistyped_resume_creates_nothing(tmp_path):
    result = invoke("train", "--resume", tmp_path / "a" / "b" / "checkpoint.safetensors", "--no-download")
    assert_clean_error(result, 1, "Checkpoint not found")
    assert not (tmp_path / "a").exists()
