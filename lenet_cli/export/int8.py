"""int8 quantization of an exported model with onnxruntime's tools, and its comparison with float32.

The comparison (test accuracy, agreement, CPU speed) is what `lenet export --quantize int8`
shows; a model that loses more than QUANT_MAX_DROP of accuracy is never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lenet_cli.errors import ExportError, first_line
from lenet_cli.export.graph import check_model
from lenet_cli.inference.onnx_session import INPUT_NAME, cpu_session
from lenet_cli.utils.timing import time_calls

QUANT_MAX_DROP = 0.005  # an int8 model may lose at most 0.5 points of test accuracy, or it is not written
CALIBRATION_IMAGES = 1024  # training images (never test images) that set the int8 activation ranges


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
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
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
    check_model(quantized, "The int8 model")
    return quantized


def compare_float_int8(float_proto, int8_proto, images: np.ndarray, labels: np.ndarray,
                       seconds: float = 1.5) -> list[QuantRow]:
    """Test accuracy, agreement and CPU speed (batch 1 latency, batch 1024 throughput) of both models."""
    x = images.astype(np.float32).reshape(-1, 1, 28, 28)
    one, big = x[:1], np.resize(x, (1024, 1, 28, 28))
    sessions, preds = {}, {}
    for name, proto in (("float32", float_proto), ("int8", int8_proto)):
        session = cpu_session(proto)
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
