"""ONNX export, self-verification and onnxruntime sessions.

Design decisions (documented in the README):
* Normalisation lives inside the graph: the input `pixels` is float32 (N, 1, 28, 28)
  with raw values 0-255, bright ink on black; the output `logits` is (N, 10).
  Nobody using the file needs MNIST's mean and std.
* The batch dimension is dynamic; only standard ONNX operators (default domain).
* Sessions for a model this small are latency-bound: one intra-op thread per
  physical core at most, sequential execution, full graph optimisation.

torch is imported only inside the export functions; the inference path (sessions) does not need it.
The exporter always receives model.py's plain layers (kernels.py's CPU paths are never traced).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenet_cli import __version__
from lenet_cli.devices import DeviceSpec, onnx_providers
from lenet_cli.errors import DeviceError, ExportError, WeightsError, first_line
from lenet_cli.evaluate import softmax
from lenet_cli.fileio import not_a_file

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import onnxruntime

    from lenet_cli.model import LeNet5
    from lenet_cli.weights import WeightsInfo

DEFAULT_OPSET = 18
# The torch.export-based exporter writes opset 18 and up; converting down fails for some operators
# (and would then be labelled with an opset the file does not have), so older opsets are refused.
MIN_OPSET = 18
MAX_OPSET = 23  # the newest opset the exporter and onnxruntime both know
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
PROB_TOLERANCE = 1e-5  # max |p_onnx - p_torch| accepted by verification


@dataclass(frozen=True)
class ParityRow:
    """One line of the verification table."""

    batch_size: int
    images: int
    top1_agree: int
    max_abs_prob_diff: float
    passed: bool


def session_options(threads: int | None = None) -> "onnxruntime.SessionOptions":
    """Session settings for a tiny, latency-bound model (every session lenet makes uses them)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # LeNet-5 is ~0.4 MMAC per image: threads beyond the physical cores only add sync overhead.
    opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 4)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only; warnings about unused initialisers are noise here
    return opts


def cpu_session(model_proto: Any, threads: int | None = None) -> "onnxruntime.InferenceSession":
    """A CPU session on an in-memory model (verification and the int8 comparison)."""
    import onnxruntime as ort

    return ort.InferenceSession(model_proto.SerializeToString(), sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])


def check_model(model_proto: Any, what: str = "The exported model") -> None:
    """onnx.checker's full check, and standard operator domains only; ExportError otherwise."""
    import onnx

    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"{what} fails onnx.checker: {first_line(exc)}") from exc
    domains = {node.domain for node in model_proto.graph.node} - {"", "ai.onnx"}
    if domains:
        raise ExportError(f"{what} uses non-standard operator domains: {sorted(domains)}.")


def set_metadata(model_proto: Any, meta: dict[str, str]) -> None:
    """Replace the model's metadata properties with `meta`."""
    del model_proto.metadata_props[:]
    for key, value in meta.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def make_session(path: Path, device_spec: str | DeviceSpec = "cpu",
                 threads: int | None = None) -> "onnxruntime.InferenceSession":
    """An onnxruntime session with settings chosen for a tiny model; clear errors for bad files."""
    import onnxruntime as ort

    providers = onnx_providers(device_spec)
    opts = session_options(threads)
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


def fold_batch_norm(model: "LeNet5") -> "LeNet5":
    """An eval-mode model with the same function, batch norm folded into the convolutions where exact.

    Batch norm in eval mode is a per-channel affine map s*z + t. Folded into the conv before
    it (weights times s, bias s*b + t), it disappears from the graph. After a max pool
    (pool-first blocks) that is exact only when s*max(z) = max(s*z), i.e. s >= 0; we fold
    when every s > 0, and then the block can also run as conv -> ReLU -> pool (ReLU commutes
    with max), which onnxruntime fuses into one kernel. Pool-last blocks always fold. When a
    pool-first model has a scale <= 0, it is returned as it is, batch norm and all.
    Used for ONNX export, so the usual graph is Conv -> ReLU -> MaxPool.
    """
    import torch
    from torch import nn

    from lenet_cli.model import LeNet5

    cfg = model.cfg
    if not (cfg.batch_norm and cfg.pooling == "max" and cfg.activation == "relu"):
        return model.eval()
    blocks = ((model.c1, model.bn1), (model.c3, model.bn3))
    scales = []
    for conv, bn in blocks:
        if type(conv) is not nn.Conv2d or not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
            return model.eval()
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        if cfg.pool_first and not bool((scale > 0).all()):
            return model.eval()
        scales.append(scale)
    folded = LeNet5(dataclasses.replace(cfg, batch_norm=False, pool_first=False)).to(model.c1.weight.device)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("c1.", "bn1.", "c3.", "bn3."))}
    missing, unexpected = folded.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"c1.weight", "c1.bias", "c3.weight", "c3.bias"}:
        raise ValueError(f"cannot fold batch norm: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for (conv, bn), scale, target in zip(blocks, scales, (folded.c1, folded.c3)):
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
            target.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
            target.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return folded.eval()


def export_model_proto(model, opset: int = DEFAULT_OPSET):
    """Export with the exporter PyTorch recommends (torch.export-based, `dynamo=True`); a ModelProto."""
    import warnings

    import torch

    try:
        model = fold_batch_norm(model.to("cpu").eval())
    except ValueError as exc:
        raise ExportError(f"Could not prepare the model for export: {first_line(exc)}") from exc
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # model.py's plain layers: the standard Conv/MaxPool graph, which runtimes optimise themselves.
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
    return program.model_proto


def verify(model_proto, torch_model, images: np.ndarray, batch_sizes=(1, 256)) -> list[ParityRow]:
    """Full onnx.checker check, then onnxruntime vs PyTorch on real images at several batch sizes."""
    import numpy as np
    import torch

    check_model(model_proto)
    session = cpu_session(model_proto)
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
            p_got, p_want = softmax(got), softmax(want)
            agree += int((got.argmax(1) == want.argmax(1)).sum())
            worst = max(worst, float(np.abs(p_got - p_want).max()))
        rows.append(ParityRow(bs, n, agree, worst, agree == n and worst <= PROB_TOLERANCE))
    return rows
