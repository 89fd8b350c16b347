"""Weights files that cannot be used, through the real CLI: damaged or foreign safetensors and ONNX
files, and the wrong kind of file, each one clean error line (see test_errors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clean_errors import BUNDLED_ONNX, BUNDLED_ST, assert_clean_error, invoke


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
