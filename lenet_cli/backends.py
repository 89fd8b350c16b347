"""Inference backends with one interface: uint8 digits (N, 28, 28) in, float32 logits (N, 10) out.

* TorchBackend: a safetensors weights file through PyTorch.
* OnnxBackend: an exported .onnx file through onnxruntime; never imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Backend:
    """Common fields; subclasses implement `logits`."""

    name: str
    path: Path
    device: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def logits(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """uint8 (N, 28, 28) -> float32 logits (N, 10)."""
        raise NotImplementedError


class TorchBackend(Backend):
    """PyTorch model from a safetensors file."""

    def __init__(self, path: Path, device_spec: str = "auto") -> None:
        from lenet_cli.devices import resolve_device
        from lenet_cli.weights import load_model

        device = resolve_device(device_spec)
        self.model, self.info = load_model(path, device)
        self.torch_device = device
        meta = {"preset": self.info.config.preset, "metrics": self.info.metrics, "param_count": self.info.param_count}
        super().__init__("pytorch", Path(path), str(device), meta)

    def logits_tensor(self, images):
        """Torch uint8 (N, 28, 28) on any device -> torch float32 logits on the model's device."""
        from lenet_cli.evaluate import torch_logits

        return torch_logits(self.model, images.to(self.torch_device))

    def logits(self, images: np.ndarray) -> np.ndarray:
        import torch

        return self.logits_tensor(torch.from_numpy(np.ascontiguousarray(images))).cpu().numpy()


class OnnxBackend(Backend):
    """onnxruntime session on an exported model (raw pixels in, logits out)."""

    def __init__(self, path: Path, device_spec: str = "cpu", threads: int | None = None) -> None:
        from lenet_cli.onnx_io import make_session

        self.session = make_session(Path(path), device_spec, threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        parsed: dict[str, Any] = {}
        for k, v in meta.items():
            try:
                parsed[k] = json.loads(v)
            except ValueError:
                parsed[k] = v
        providers = self.session.get_providers()
        device = "cuda" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"
        super().__init__("onnxruntime", Path(path), device, parsed)

    def logits(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32).reshape(-1, 1, 28, 28)
        return self.session.run(None, {self.input_name: x})[0]


def is_onnx_path(path: Path) -> bool:
    """ONNX files are recognised by their extension."""
    return Path(path).suffix.lower() == ".onnx"


def load_backend(path: Path, device_spec: str = "auto") -> Backend:
    """The right backend for a weights path: .onnx -> onnxruntime, anything else -> PyTorch."""
    if is_onnx_path(path):
        return OnnxBackend(path, "cpu" if device_spec == "auto" else device_spec)
    return TorchBackend(path, device_spec)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stable probabilities."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)

