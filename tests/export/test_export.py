"""`lenet export --onnx`: failure paths that must write nothing, int8 quantization, ONNX devices."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lenet_cli.cli.app import app
from lenet_cli.errors import DeviceError

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.mark.slow
def test_int8_export_writes_a_compared_quantized_model(tiny_mnist, trained_weights, tmp_path, monkeypatch):
    import onnx

    import lenet_cli.export.exporter as export

    # 200 synthetic test images: one image is half a point, so the accuracy gate is relaxed here
    # (its own behaviour is tested below); on real MNIST the 0.5-point limit applies.
    monkeypatch.setattr(export, "QUANT_MAX_DROP", 1.0)
    monkeypatch.chdir(tmp_path)
    result = invoke("export", "--onnx", "--quantize", "int8", "--weights", trained_weights,
                    "--data-dir", tiny_mnist, "--no-download", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    out = tmp_path / "lenet5-int8.onnx"  # the default name with --quantize int8
    assert report["output"] == "lenet5-int8.onnx" and out.is_file()
    f32, i8 = report["quantization"]["comparison"]
    assert (f32["model"], i8["model"]) == ("float32", "int8")
    assert i8["bytes"] < f32["bytes"] / 2  # int8 weights
    assert f32["test_images"] == i8["test_images"] == 200
    assert 0 < i8["test_accuracy"] <= 1 and 0.5 < i8["top1_agree_with_float"] <= 1
    assert i8["batch1_p50_us"] > 0 and i8["batch1024_images_per_s"] > 0
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: standard operators only
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}  # claims no vendor operator sets
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["metrics"])["test_accuracy"] == pytest.approx(i8["test_accuracy"])
    assert "source_metrics" in meta
    quant = json.loads(meta["quantization"])
    assert quant["test_accuracy"] == pytest.approx(i8["test_accuracy"]) and quant["calibration_images"] > 0
    assert "source_weights_sha256" in meta
    # The int8 file is a first-class model for eval and predict, with the accuracy export reported.
    ev = invoke("eval", "--weights", out, "--data-dir", tiny_mnist, "--device", "cpu", "--json", "--no-plots")
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(i8["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_int8_that_loses_accuracy_is_refused_and_writes_nothing(tiny_mnist, trained_weights, tmp_path, monkeypatch):
    import lenet_cli.export.exporter as export

    monkeypatch.setattr(export, "QUANT_MAX_DROP", -1.0)  # no model can pass: the refusal path runs
    out = tmp_path / "q.onnx"
    out.write_bytes(b"an earlier, good file")
    result = invoke("export", "--onnx", "--quantize", "int8", "--weights", trained_weights, "--output", out,
                    "--data-dir", tiny_mnist, "--no-download", "--exist-ok")  # asked to replace it, and still not
    assert result.exit_code == 1 and "No file was written" in result.output
    assert out.read_bytes() == b"an earlier, good file" and [p.name for p in tmp_path.iterdir()] == ["q.onnx"]


@pytest.mark.slow
def test_an_existing_output_is_refused_unless_exist_ok(tiny_mnist, trained_weights, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")
    args = ("export", "--onnx", "--weights", trained_weights, "--output", out, "--data-dir", tiny_mnist, "--no-download")
    result = invoke(*args)
    assert result.exit_code == 1 and "exists already" in result.output and "--exist-ok" in result.output
    assert out.read_bytes() == b"an earlier export"
    result = invoke(*args, "--exist-ok")
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] != b"an e" and out.stat().st_size > 100_000  # replaced by the real export


@pytest.mark.slow
def test_failed_verification_writes_nothing(tiny_mnist, trained_weights, tmp_path, monkeypatch):
    import lenet_cli.export.verify as verify

    monkeypatch.setattr(verify, "PROB_TOLERANCE", -1.0)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous, good file")
    result = invoke("export", "--onnx", "--weights", trained_weights, "--output", out, "--data-dir", tiny_mnist,
                    "--no-download", "--exist-ok")
    assert result.exit_code == 1 and "Verification failed" in result.output
    assert out.read_bytes() == b"the previous, good file"  # never replaced by a broken export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary left behind


def test_mismatched_weights_fail_and_write_nothing(tiny_mnist, trained_weights, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(trained_weights), "np") as f:
        metadata = f.metadata()
    tensors = load_file(str(trained_weights))
    name = next(k for k, v in tensors.items() if v.ndim == 4)  # a conv kernel
    tensors[name] = np.zeros((3, *tensors[name].shape[1:]), tensors[name].dtype)  # wrong channel count
    bad = tmp_path / "other.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    out = tmp_path / "m.onnx"
    result = invoke("export", "--onnx", "--weights", bad, "--output", out, "--data-dir", tiny_mnist, "--no-download")
    assert result.exit_code == 1 and "does not match" in result.output
    assert not out.exists()


def test_truncated_weights_fail_and_write_nothing(tiny_mnist, trained_weights, tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(trained_weights.read_bytes()[:5000])
    out = tmp_path / "m.onnx"
    result = invoke("export", "--onnx", "--weights", bad, "--output", out, "--data-dir", tiny_mnist, "--no-download")
    assert result.exit_code == 1 and str(bad) in result.output
    assert not out.exists()


def test_cuda_session_that_lands_on_the_cpu_is_an_error(monkeypatch):
    """onnxruntime may start a CUDA-less session when CUDA libraries are missing: never accept it."""
    import onnxruntime as ort

    import lenet_cli.inference.onnx_session as onnx_io
    from lenet_cli.model.weights import bundled_onnx_path

    real = ort.InferenceSession
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])

    def cpu_only(path, sess_options=None, providers=None, **kwargs):
        assert kwargs.get("enable_fallback") == 0
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", cpu_only)
    with pytest.raises(DeviceError, match="did not run"):
        onnx_io.make_session(bundled_onnx_path(), "cuda:1")


def test_old_opsets_are_refused(tmp_path):
    result = invoke("export", "--onnx", "--opset", "11", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 2 and not (tmp_path / "m.onnx").exists()


def test_unknown_quantization_is_a_usage_error(tmp_path):
    result = invoke("export", "--onnx", "--quantize", "int4", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 2 and "int8" in result.output


def test_onnx_providers_honour_the_cuda_index(monkeypatch):
    import onnxruntime as ort

    from lenet_cli.devices import onnx_providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1})]
    assert onnx_providers("cuda") == [("CUDAExecutionProvider", {"device_id": 0})]
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceError, match="no CUDA execution provider") as info:
        onnx_providers("cuda:0")
    assert "onnxruntime-gpu" in str(info.value)


def test_cuda_request_for_onnx_without_gpu_support_is_a_plain_error(tmp_path, monkeypatch):
    import onnxruntime as ort

    from lenet_cli.model.weights import bundled_onnx_path

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    from PIL import Image

    Image.new("L", (28, 28), 0).save(tmp_path / "d.png")
    result = invoke("predict", tmp_path / "d.png", "--weights", bundled_onnx_path(), "--device", "cuda")
    assert result.exit_code == 1
    assert "no CUDA execution provider" in result.output and "pip install onnxruntime-gpu" in result.output


@pytest.mark.slow
def test_export_works_offline_without_mnist_on_the_shipped_digits(tmp_path, monkeypatch):
    """The bundled model exports with no MNIST and no network: parity on the package's digits, no accuracy."""
    import lenet_cli.data.mnist as mnist

    def no_network(data_dir):
        raise AssertionError("export tried to download MNIST")

    monkeypatch.setattr(mnist, "download", no_network)
    out = tmp_path / "m.onnx"
    result = invoke("export", "--onnx", "--output", out, "--data-dir", tmp_path / "empty", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert out.is_file() and report["test_accuracy"] is None and report["test_images"] == 0
    assert [(r["batch_size"], r["images"], r["passed"]) for r in report["verification"]] == [(1, 64, True), (256, 256, True)]
    table = invoke("export", "--onnx", "--output", tmp_path / "t.onnx", "--data-dir", tmp_path / "empty")
    assert table.exit_code == 0, table.output
    assert "not measured (no MNIST in" in " ".join(table.output.split())


@pytest.mark.slow
def test_export_reports_test_accuracy_where_mnist_is_present(tiny_mnist, trained_weights, tmp_path):
    result = invoke("export", "--onnx", "--weights", trained_weights, "--output", tmp_path / "m.onnx",
                    "--data-dir", tiny_mnist, "--no-download", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["test_images"] == 200 and 0 < report["test_accuracy"] <= 1
    ev = invoke("eval", "--weights", tmp_path / "m.onnx", "--data-dir", tiny_mnist, "--device", "cpu", "--json",
                "--no-plots")
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["accuracy"] == pytest.approx(report["test_accuracy"], abs=1e-6)


def test_shipped_parity_digits_are_real_labelled_digits():
    from lenet_cli.data.digits import PARITY_DIGITS, load_parity_digits

    images, labels = load_parity_digits()
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [30] * 10
    assert PARITY_DIGITS.stat().st_size < 200_000  # a few hundred digits, a few hundred KB at most
