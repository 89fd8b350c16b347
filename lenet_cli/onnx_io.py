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

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lenet_cli import __version__
from lenet_cli.errors import ExportError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

    from lenet_cli.weights import WeightsInfo

DEFAULT_OPSET = 18
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
        raise WeightsError(f"ONNX file not found: {path}.")
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise WeightsError(
            f"{path} is not a valid ONNX model ({str(exc).strip().splitlines()[0][:200]}).",
            "Re-create it with `lenet export --onnx`.",
        ) from exc
    inputs = session.get_inputs()
    if len(inputs) != 1 or list(inputs[0].shape)[1:] != [1, 28, 28]:
        shape = inputs[0].shape if inputs else None
        raise WeightsError(
            f"{path} is an ONNX model but not a LeNet digit classifier (input shape {shape}, expected [N, 1, 28, 28])."
        )
    return session


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

    model = model.to("cpu").eval()
    example = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
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
            raise ExportError(f"PyTorch could not export the model to ONNX opset {opset}: {str(exc).splitlines()[0][:300]}") from exc
    return program.model_proto


def verify(model_proto, torch_model, images: np.ndarray, batch_sizes=(1, 256)) -> list[ParityRow]:
    """Full onnx.checker check, then onnxruntime vs PyTorch on real images at several batch sizes."""
    import onnx
    import onnxruntime as ort
    import torch

    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"The exported model fails onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
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


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def export_onnx(
    weights: Path, output: Path, opset: int = DEFAULT_OPSET, images: np.ndarray | None = None
) -> tuple[Path, list[ParityRow], dict[str, Any]]:
    """Export a safetensors model to ONNX, verify it, and write it atomically only if it passes."""
    import onnx

    from lenet_cli.fileio import atomic_write_bytes
    from lenet_cli.weights import load_model

    if not 7 <= opset <= 23:
        from lenet_cli.errors import UsageError

        raise UsageError(f"--opset must be between 7 and 23, got {opset}.")
    model, info = load_model(weights, "cpu")
    proto = export_model_proto(model, opset)
    for key, value in onnx_metadata(info, opset).items():
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
    atomic_write_bytes(Path(output), proto.SerializeToString())
    return Path(output), rows, onnx_metadata(info, opset)
