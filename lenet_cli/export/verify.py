"""Verification of an export: the ONNX model's probabilities against PyTorch's on the same images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lenet_cli.export.graph import check_model
from lenet_cli.inference.onnx_session import INPUT_NAME, cpu_session
from lenet_cli.model.metrics import softmax

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np



PROB_TOLERANCE = 1e-5  # max |p_onnx - p_torch| accepted by verification


@dataclass(frozen=True)
class ParityRow:
    """One line of the verification table."""

    batch_size: int
    images: int
    top1_agree: int
    max_abs_prob_diff: float
    passed: bool


def verify(model_proto, torch_model, images: np.ndarray, batch_sizes=(1, 256)) -> list[ParityRow]:
    """Full onnx.checker check, then onnxruntime vs PyTorch on real images at several batch sizes
    (64 images one at a time, then batches of 256)."""
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


def onnx_accuracy(model_proto, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX model (onnxruntime on the CPU) on uint8 (N, 28, 28) images."""
    import numpy as np

    session = cpu_session(model_proto)
    x = images.astype(np.float32).reshape(-1, 1, 28, 28)
    preds = np.concatenate([session.run(None, {INPUT_NAME: x[i : i + 1024]})[0].argmax(1) for i in range(0, len(x), 1024)])
    return float((preds == labels).mean())
