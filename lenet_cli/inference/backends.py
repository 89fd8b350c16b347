"""Inference backends with one interface: uint8 digits (N, 28, 28) in, float32 logits (N, 10) out.

* TorchBackend: a safetensors weights file through PyTorch, on a resolved torch.device.
* OnnxBackend: an exported .onnx file through onnxruntime; never imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lenet_cli.devices import DeviceSpec, parse_device, resolve_device
from lenet_cli.errors import WeightsError
from lenet_cli.inference.onnx_session import make_session, ort_message
from lenet_cli.model.metrics import torch_logits
from lenet_cli.model.weights import load_model

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime
    import torch


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
    """PyTorch model from a safetensors file, on `device` (CPU speed paths where they apply)."""

    def __init__(self, path: Path, device: "torch.device") -> None:
        from lenet_cli.model.cpu_paths import speed_up  # kernels.py imports torch

        self.model, self.info = load_model(path, device)
        self.net = speed_up(self.model, device)
        self.torch_device = device
        meta = {"preset": self.info.config.preset, "metrics": self.info.metrics, "param_count": self.info.param_count}
        super().__init__("pytorch", Path(path), str(device), meta)

    def logits_tensor(self, images: "torch.Tensor") -> "torch.Tensor":
        """Torch uint8 (N, 28, 28) on any device -> torch float32 logits on the model's device."""
        import torch

        out = torch_logits(self.net, images.to(self.torch_device))
        if not bool(torch.isfinite(out).all()):
            raise _broken_scores(self.path)
        return out

    def logits(self, images: np.ndarray) -> np.ndarray:
        import torch

        return self.logits_tensor(torch.from_numpy(np.ascontiguousarray(images))).cpu().numpy()


class OnnxBackend(Backend):
    """onnxruntime session on an exported model (raw pixels in, logits out)."""

    def __init__(self, path: Path, device: str | DeviceSpec = "cpu", threads: int | None = None,
                 session: "onnxruntime.InferenceSession | None" = None, spin: bool = True) -> None:
        # `session`: one already made, e.g. on a model exported in memory (`lenet serve --weights x.safetensors`).
        # `spin`: see onnx_session.session_options.
        self.session = session if session is not None else make_session(Path(path), device, threads=threads,
                                                                         spin=spin)
        self.input_name = self.session.get_inputs()[0].name
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        parsed: dict[str, Any] = {}
        for k, v in meta.items():
            try:
                parsed[k] = json.loads(v)
            except ValueError:
                parsed[k] = v
        providers = self.session.get_providers()
        kind = "cuda" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"
        super().__init__("onnxruntime", Path(path), kind, parsed)

    def logits(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.float32).reshape(-1, 1, 28, 28)
        try:
            out = np.asarray(self.session.run(None, {self.input_name: x})[0])
        except Exception as exc:  # onnxruntime's own error types: a graph that fails on real input
            raise WeightsError(f"{self.path} failed to run in onnxruntime ({ort_message(exc)}).",
                               "Pass a model written by `lenet export --onnx`.") from exc
        # The file's declared shapes may be symbolic: what it really returned decides.
        if out.shape != (x.shape[0], 10):
            raise WeightsError(f"{self.path} is not a LeNet digit classifier: it returned shape {list(out.shape)} "
                               f"for {x.shape[0]} images, expected [{x.shape[0]}, 10].",
                               "Pass a model written by `lenet export --onnx`.")
        if not np.isfinite(out).all():
            raise _broken_scores(self.path)
        return out


def _broken_scores(path: Path) -> WeightsError:
    """Scores that are not numbers would print as NaN, which is not even valid JSON."""
    return WeightsError(f"{path} gives NaN or infinite scores: its weights or normalisation are broken.",
                        "Re-create it with `lenet train` (or `lenet export --onnx` for an ONNX file).")


def is_onnx_path(path: Path) -> bool:
    """ONNX files are recognised by their extension."""
    return Path(path).suffix.lower() == ".onnx"


def load_backend(path: Path, device: str | DeviceSpec = "auto", spin: bool = True) -> Backend:
    """The right backend for a weights path: .onnx -> onnxruntime (auto: the CPU), anything else -> PyTorch.

    The device spec is resolved here, once: into onnxruntime providers or into a torch.device.
    `spin=False`: onnxruntime's idle threads sleep (beside worker processes that need the cores).
    """
    spec = parse_device(device)
    if is_onnx_path(path):
        return OnnxBackend(path, DeviceSpec("cpu") if spec.is_auto else spec, spin=spin)
    return TorchBackend(path, resolve_device(spec))
