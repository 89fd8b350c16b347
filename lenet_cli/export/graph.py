"""The ONNX graph: a LeNet-5 traced to ONNX, batch norm folded, its metadata, its checks.

Design decisions:
* Normalisation lives inside the graph: the input `pixels` is float32 (N, 1, 28, 28)
  with raw values 0-255, bright ink on black; the output `logits` is (N, 10).
  Nobody using the file needs MNIST's mean and std.
* The batch dimension is dynamic; only standard ONNX operators (default domain).

torch is imported only inside the functions. The exporter always receives the model's plain
layers (model.cpu_paths' CPU paths are never traced).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from lenet_cli import __version__
from lenet_cli.errors import ExportError, first_line
from lenet_cli.inference.onnx_session import INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:  # pragma: no cover

    from lenet_cli.model.lenet5 import LeNet5
    from lenet_cli.model.weights import WeightsInfo


DEFAULT_OPSET = 18
# The torch.export-based exporter writes opset 18 and up; converting down fails for some operators
# (and would then be labelled with an opset the file does not have), so older opsets are refused.
MIN_OPSET = 18
MAX_OPSET = 23  # the newest opset the exporter and onnxruntime both know


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

    from lenet_cli.model.lenet5 import LeNet5

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
