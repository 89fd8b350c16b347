"""ONNX export, self-verification and onnxruntime sessions.

Design decisions (documented in the README):
* Normalisation lives inside the graph: the input `pixels` is float32 (N, 1, 28, 28)
  with raw values 0-255, bright ink on black; the output `logits` is (N, 10).
  Nobody using the file needs MNIST's mean and std.
* The batch dimension is dynamic; only standard ONNX operators (default domain).
* Sessions for a model this small are latency-bound: one intra-op thread per
  physical core at most, sequential execution, full graph optimisation.

This module imports torch only inside `export_onnx`; the inference path does not.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lenet_cli import __version__
from lenet_cli.errors import DeviceError, ExportError, WeightsError, first_line

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

    from lenet_cli.weights import WeightsInfo

DEFAULT_OPSET = 18
# The torch.export-based exporter writes opset 18 and up; converting down fails for some operators
# (and would then be labelled with an opset the file does not have), so older opsets are refused.
MIN_OPSET = 18
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
PROB_TOLERANCE = 1e-5  # max |p_onnx - p_torch| accepted by verification
QUANT_MAX_DROP = 0.005  # an int8 model may lose at most 0.5 points of test accuracy, or it is not written
CALIBRATION_IMAGES = 1024  # training images (never test images) that set the int8 activation ranges


@dataclass(frozen=True)
class ParityRow:
    """One line of the verification table."""

    batch_size: int
    images: int
    top1_agree: int
    max_abs_prob_diff: float
    passed: bool


def make_session(path: Path, device_spec: str = "cpu", threads: int | None = None) -> "onnxruntime.InferenceSession":
    """An onnxruntime session with settings chosen for a tiny model; clear errors for bad files."""
    import onnxruntime as ort

    from lenet_cli.devices import onnx_providers

    providers = onnx_providers(device_spec)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # LeNet-5 is ~0.4 MMAC per image: threads beyond the physical cores only add sync overhead.
    opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only; warnings about unused initialisers are noise here
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"ONNX file not found: {path}.",
                           "Check the path, or omit --weights to use the bundled model.")
    try:
        path.open("rb").close()  # onnxruntime reports an unreadable file as "system error number 13"
    except OSError as exc:
        raise WeightsError(f"Cannot read ONNX file {path}: {exc.strerror or exc}.",
                           "Check that you may read the file.") from exc
    wants_cuda = any((p[0] if isinstance(p, tuple) else p) == "CUDAExecutionProvider" for p in providers)
    explicit_cuda = wants_cuda and "CPUExecutionProvider" not in providers
    if explicit_cuda:
        # Only a valid file can tell a bad model from a CUDA set-up problem: check it on the CPU first.
        make_session(path, "cpu", threads)
    try:
        # enable_fallback=0: onnxruntime would otherwise print a banner to stdout and quietly run on the CPU.
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers, enable_fallback=0)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        if explicit_cuda:
            raise DeviceError(f"onnxruntime could not start CUDA for {device_spec}: {ort_message(exc)}.",
                              "Check the GPU index and the CUDA/cuDNN libraries onnxruntime-gpu needs.") from exc
        raise WeightsError(
            f"{path} is not a valid ONNX model ({ort_message(exc)}).",
            "The file is corrupt, truncated or too new for this onnxruntime; re-create it with `lenet export --onnx`.",
        ) from exc
    if explicit_cuda and "CUDAExecutionProvider" not in session.get_providers():
        raise DeviceError(f"onnxruntime did not run {path.name} on CUDA ({device_spec}); it chose "
                          f"{', '.join(session.get_providers())}.", "Check the GPU index and the CUDA libraries.")
    problem = _not_lenet(session)
    if problem:
        raise WeightsError(f"{path} is an ONNX model but not a LeNet digit classifier: {problem}.",
                           "Pass a model written by `lenet export --onnx`.")
    return session


def _not_lenet(session) -> str:
    """'' if the session takes float (N, 1, 28, 28) and gives float (N, 10), else what is wrong."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        return f"it has {len(inputs)} inputs, expected one (pixels [N, 1, 28, 28])"
    shape, kind = inputs[0].shape, inputs[0].type
    if kind != "tensor(float)":
        return f"its input is {kind}, expected tensor(float)"
    if not isinstance(shape, list) or len(shape) != 4 or shape[1:] != [1, 28, 28]:
        return f"its input shape is {shape}, expected [N, 1, 28, 28]"
    if isinstance(shape[0], int):
        return f"its batch size is fixed at {shape[0]}; lenet needs a dynamic batch dimension"
    if not outputs:
        return "it has no outputs"
    out_shape, out_kind = outputs[0].shape, outputs[0].type
    if out_kind != "tensor(float)":
        return f"its output is {out_kind}, expected tensor(float) logits"
    if isinstance(out_shape, list) and out_shape:  # unknown dims are checked when it runs (backends.py)
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != 10):
            return f"its output shape is {out_shape}, expected [N, 10]"
    return ""


def ort_message(exc: BaseException) -> str:
    """onnxruntime's error without the C++ source location and signature it puts in the middle."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^Load model from .*? failed:\s*", "", text)  # the caller names the file
    text = re.sub(r"\S*onnxruntime_src/\S+:\d+ \S+?\([^)]*\)\s*", "", text)
    return text[:300] or type(exc).__name__


def onnx_metadata(info: "WeightsInfo", opset: int) -> dict[str, str]:
    """Metadata properties stored in the exported model."""
    return {
        "lenet_cli_version": __version__,
        "preset": info.config.preset,
        "model_config": info.config.to_json(),
        "classes": json.dumps(list(info.classes)),
        "normalization": json.dumps(
            {"inside_graph": True, "input": "float32 raw pixels 0-255, bright ink on black, (N, 1, 28, 28)",
             "mean": info.config.mean, "std": info.config.std}
        ),
        "metrics": json.dumps(info.metrics, sort_keys=True),
        "param_count": str(info.param_count),
        "source_weights_sha256": info.sha256,
        "source_weights_name": info.path.name,
        "opset": str(opset),
    }


def export_model_proto(model, opset: int = DEFAULT_OPSET):
    """Export with the exporter PyTorch recommends (torch.export-based, `dynamo=True`); a ModelProto."""
    import warnings

    import torch

    from lenet_cli.model import for_inference

    try:
        model = for_inference(model.to("cpu").eval())  # batch norm folded into the convolutions
    except ValueError as exc:
        raise ExportError(f"Could not prepare the model for export: {first_line(exc)}") from exc
    fast = getattr(model, "fast_cpu_kernels", False)
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.fast_cpu_kernels = False  # the standard Conv/MaxPool graph, which runtimes optimise themselves
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch}},
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:
            raise ExportError(f"PyTorch could not export the model to ONNX opset {opset}: {first_line(exc)}") from exc
        finally:
            model.fast_cpu_kernels = fast
    return program.model_proto


def verify(model_proto, torch_model, images: np.ndarray, batch_sizes=(1, 256)) -> list[ParityRow]:
    """Full onnx.checker check, then onnxruntime vs PyTorch on real images at several batch sizes."""
    import onnx
    import onnxruntime as ort
    import torch

    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"The exported model fails onnx.checker: {first_line(exc)}") from exc
    domains = {node.domain for node in model_proto.graph.node}
    if domains - {"", "ai.onnx"}:
        raise ExportError(f"The exported model uses non-standard operator domains: {sorted(domains - {'', 'ai.onnx'})}.")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model_proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    torch_model = torch_model.to("cpu").eval()
    rows = []
    for bs in batch_sizes:
        n = min(len(images), max(bs, 64 if bs == 1 else bs))
        agree, worst = 0, 0.0
        for start in range(0, n, bs):
            chunk = images[start : start + bs].astype(np.float32).reshape(-1, 1, 28, 28)
            got = session.run(None, {session.get_inputs()[0].name: chunk})[0]
            with torch.inference_mode():
                want = torch_model(torch.from_numpy(chunk)).numpy()
            p_got, p_want = _softmax(got), _softmax(want)
            agree += int((got.argmax(1) == want.argmax(1)).sum())
            worst = max(worst, float(np.abs(p_got - p_want).max()))
        rows.append(ParityRow(bs, n, agree, worst, agree == n and worst <= PROB_TOLERANCE))
    return rows


@dataclass(frozen=True)
class QuantRow:
    """One model in the float-vs-int8 comparison."""

    model: str
    bytes: int
    test_images: int
    test_accuracy: float
    top1_agree_with_float: float
    batch1_p50_us: float
    batch1024_images_per_s: float


def quantize_int8(model_proto, calibration: np.ndarray):
    """Static int8 quantization with onnxruntime's tools: QDQ format, per-channel int8 weights,
    uint8 activations whose ranges come from `calibration` (uint8 (N, 28, 28) training images).

    QDQ keeps the graph in standard ONNX operators (QuantizeLinear/DequantizeLinear around
    float ops), so any conformant runtime can load it, and runtimes with int8 kernels fuse it.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x = calibration.astype(np.float32).reshape(-1, 1, 28, 28)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{INPUT_NAME: x[i : i + 128]} for i in range(0, len(x), 128)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="lenet-quant-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(model_proto.SerializeToString())
        try:
            quant_pre_process(str(src), str(pre))  # shape inference + graph clean-up, as ORT recommends
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:
            raise ExportError(f"onnxruntime could not quantize the model: {first_line(exc)}") from exc
        quantized = onnx.load(str(out))
    # onnxruntime's optimiser declares every operator set it knows (com.microsoft, ...); keep only
    # the ones a node uses, so that the file claims nothing a plain ONNX runtime lacks.
    used = {node.domain for node in quantized.graph.node} | {""}
    keep = [o for o in quantized.opset_import if o.domain in used or (o.domain == "ai.onnx" and "" in used)]
    del quantized.opset_import[:]
    quantized.opset_import.extend(keep)
    try:
        onnx.checker.check_model(quantized, full_check=True)
    except Exception as exc:
        raise ExportError(f"The int8 model fails onnx.checker: {first_line(exc)}") from exc
    return quantized


def compare_float_int8(float_proto, int8_proto, images: np.ndarray, labels: np.ndarray,
                       seconds: float = 1.5) -> list[QuantRow]:
    """Test accuracy, agreement and CPU speed (batch 1 latency, batch 1024 throughput) of both models."""
    import onnxruntime as ort

    from lenet_cli.bench import time_calls

    x = images.astype(np.float32).reshape(-1, 1, 28, 28)
    one, big = x[:1], np.resize(x, (1024, 1, 28, 28))
    sessions, preds = {}, {}
    for name, proto in (("float32", float_proto), ("int8", int8_proto)):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = min(os.cpu_count() or 1, 4)
        session = ort.InferenceSession(proto.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
        sessions[name] = session
        preds[name] = np.concatenate([session.run(None, {INPUT_NAME: x[i : i + 1024]})[0].argmax(1)
                                      for i in range(0, len(x), 1024)])
    # Time the two models in alternating rounds, so that a change in machine load hits both.
    t1: dict[str, list[float]] = {n: [] for n in sessions}
    tb: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(3):
        for name, session in sessions.items():
            t1[name] += time_calls(lambda s=session: s.run(None, {INPUT_NAME: one}), 20, seconds / 3)
            tb[name] += time_calls(lambda s=session: s.run(None, {INPUT_NAME: big}), 2, seconds / 3)
    rows = []
    for name, proto in (("float32", float_proto), ("int8", int8_proto)):
        rows.append(QuantRow(name, len(proto.SerializeToString()), len(x), float((preds[name] == labels).mean()),
                             float((preds[name] == preds["float32"]).mean()), float(np.median(t1[name])) * 1e6,
                             1024 / float(np.median(tb[name]))))
    return rows


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def export_onnx(
    weights: Path, output: Path, opset: int = DEFAULT_OPSET, images: np.ndarray | None = None,
    quantize: str | None = None, calibration: np.ndarray | None = None,
    test_images: np.ndarray | None = None, test_labels: np.ndarray | None = None,
) -> tuple[Path, list[ParityRow], dict[str, Any], list[QuantRow]]:
    """Export a safetensors model to ONNX, verify it, optionally quantize it to int8, and write
    the file atomically only if every check passes."""
    from lenet_cli.fileio import atomic_write_bytes
    from lenet_cli.weights import load_model

    if not MIN_OPSET <= opset <= 23:
        from lenet_cli.errors import UsageError

        raise UsageError(f"--opset must be between {MIN_OPSET} and 23, got {opset}.")
    model, info = load_model(weights, "cpu")
    proto = export_model_proto(model, opset)
    meta = onnx_metadata(info, opset)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "LeNet-5 digit classifier exported by lenet-cli. Input: raw pixels 0-255."
    if images is None:
        raise ExportError("Verification needs images.")
    rows = verify(proto, model, images)
    if not all(r.passed for r in rows):
        bad = next(r for r in rows if not r.passed)
        raise ExportError(
            f"Verification failed at batch size {bad.batch_size}: {bad.top1_agree}/{bad.images} top-1 agree, "
            f"max probability difference {bad.max_abs_prob_diff:.2e} (tolerance {PROB_TOLERANCE:.0e}). No file was written."
        )
    quant_rows: list[QuantRow] = []
    if quantize is not None:
        if quantize != "int8":
            from lenet_cli.errors import UsageError

            raise UsageError(f"--quantize supports only int8, got {quantize!r}.")
        if calibration is None or test_images is None or test_labels is None:
            raise ExportError("int8 quantization needs calibration and test images.")
        float_proto = proto
        proto = quantize_int8(float_proto, calibration)
        quant_rows = compare_float_int8(float_proto, proto, test_images, test_labels)
        f32, i8 = quant_rows
        if i8.test_accuracy < f32.test_accuracy - QUANT_MAX_DROP:
            raise ExportError(
                f"The int8 model reaches {100 * i8.test_accuracy:.2f}% against {100 * f32.test_accuracy:.2f}% in float32, "
                f"a loss above the {100 * QUANT_MAX_DROP:.1f}-point limit. No file was written.",
                "Export without --quantize, or calibrate a better-trained model.",
            )
        # `metrics` describes this file; the float model's figures stay under `source_metrics`.
        meta["source_metrics"] = meta["metrics"]
        meta["metrics"] = json.dumps({"test_accuracy": i8.test_accuracy, "test_images": i8.test_images})
        meta["quantization"] = json.dumps({
            "type": "int8 static, QDQ, per-channel int8 weights, uint8 activations, MinMax calibration",
            "calibration_images": int(len(calibration)), "test_accuracy": i8.test_accuracy,
            "float32_test_accuracy": f32.test_accuracy, "test_images": i8.test_images,
        })
        del proto.metadata_props[:]
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = "LeNet-5 digit classifier (int8) exported by lenet-cli. Input: raw pixels 0-255."
        quant_rows[1] = dataclasses.replace(i8, bytes=proto.ByteSize())  # the size of the file as written
    atomic_write_bytes(Path(output), proto.SerializeToString())
    return Path(output), rows, meta, quant_rows
