"""onnxruntime sessions: how lenet opens an ONNX model for inference, on the CPU or CUDA, without torch.

Sessions for a model this small are latency-bound: one intra-op thread per physical core at
most, sequential execution, full graph optimisation. A file that is not a lenet model, or a
provider that cannot start, becomes one WeightsError or DeviceError line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenet_cli.devices import DeviceSpec, onnx_providers
from lenet_cli.errors import DeviceError, WeightsError
from lenet_cli.utils.fileio import not_a_file

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime



INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"


def session_options(threads: int | None = None, spin: bool = True) -> "onnxruntime.SessionOptions":
    """Session settings for a tiny, latency-bound model (every session lenet makes uses them).

    `spin=False`: idle intra-op threads sleep instead of spinning. Beside processes that need the
    cores (predict's preprocessing workers) a spinning thread takes CPU time from them.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # LeNet-5 is ~0.4 MMAC per image: threads beyond the physical cores only add sync overhead.
    opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only; warnings about unused initialisers are noise here
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def cpu_session(model_proto: Any, threads: int | None = None) -> "onnxruntime.InferenceSession":
    """A CPU session on an in-memory model (verification and the int8 comparison)."""
    import onnxruntime as ort

    return ort.InferenceSession(model_proto.SerializeToString(), sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])


def make_session(path: Path, device_spec: str | DeviceSpec = "cpu",
                 threads: int | None = None, spin: bool = True) -> "onnxruntime.InferenceSession":
    """An onnxruntime session with settings chosen for a tiny model; clear errors for bad files."""
    import onnxruntime as ort

    providers = onnx_providers(device_spec)
    opts = session_options(threads, spin)
    path = Path(path)
    what = not_a_file(path)
    if what is not None:
        raise WeightsError(f"ONNX file not found: {path}." if what == "missing" else f"{path} is {what}, not an ONNX file.",
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
