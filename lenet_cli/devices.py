"""Choosing the device for every command: one place, one set of rules, no silent fallback.

A command parses `--device` once into a `DeviceSpec` (no torch needed: a typo is a usage
error before anything slow), and the core resolves that spec once, into the torch.device
that is passed down (`resolve_device`) or into onnxruntime providers (`onnx_providers`).
`auto` picks CUDA, then MPS, then CPU. Anything explicitly asked for must exist, or we
raise DeviceError with a message that says what *is* available.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lenet_cli.errors import DeviceError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps. 'auto' picks CUDA, then MPS, then CPU."
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed `--device`: kind (auto, cpu, cuda, mps) and, for cuda, an optional index."""

    kind: str = "auto"
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    @property
    def is_auto(self) -> bool:
        """True when the user left the choice to lenet."""
        return self.kind == "auto"


AUTO = DeviceSpec()


def parse_device(spec: str | DeviceSpec) -> DeviceSpec:
    """Validate the syntax of a device string without importing torch (UsageError, exit 2, for a typo)."""
    if isinstance(spec, DeviceSpec):
        return spec
    text = spec.strip().lower()
    match = _DEVICE_RE.match(text)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UsageError(f"Invalid device {spec!r}.", f"Use one of: {DEVICE_HELP}")
    index = int(match.group(2)) if match.group(2) is not None else None
    return DeviceSpec(match.group(1), index)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _no_cuda_reason() -> str:
    """Why torch cannot use CUDA here: no CUDA in the build, or no GPU or driver for it."""
    import torch

    built = torch.version.cuda
    if not built:
        return "this PyTorch build has no CUDA support"
    return f"PyTorch was built for CUDA {built}, but no NVIDIA GPU or driver was found"


def auto_choice() -> tuple["torch.device", str]:
    """What `--device auto` picks on this machine, and why (the reason `lenet checks` shows)."""
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return torch.device("cuda", 0), f"CUDA is available ({n} GPU{'s' if n != 1 else ''}): the first one"
    if _mps_available():
        return torch.device("mps"), f"no CUDA ({_no_cuda_reason()}); MPS is available"
    return torch.device("cpu"), f"no CUDA ({_no_cuda_reason()}) and no MPS"


def resolve_device(spec: str | DeviceSpec = AUTO) -> "torch.device":
    """Turn a device spec into a torch.device that exists on this machine."""
    import torch

    spec = parse_device(spec)
    if spec.kind == "auto":
        return auto_choice()[0]
    if spec.kind == "cpu":
        return torch.device("cpu")
    if spec.kind == "mps":
        if not _mps_available():
            raise DeviceError(
                "MPS was requested but is not available on this machine.",
                "MPS needs Apple silicon and a macOS build of PyTorch; use --device cpu or --device auto.",
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"CUDA was requested but is not available: {_no_cuda_reason()}.",
                          "Use --device cpu or --device auto.")
    count = torch.cuda.device_count()
    index = 0 if spec.index is None else spec.index
    if index >= count:
        raise DeviceError(
            f"CUDA device {index} was requested but this machine has {count} GPU(s) (cuda:0..cuda:{count - 1}).",
            "Pick an existing index or use --device cuda.",
        )
    return torch.device("cuda", index)


def describe_device(device: "torch.device") -> str:
    """A human name for a device, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(device)


def onnx_providers(spec: str | DeviceSpec) -> list[str | tuple[str, dict[str, Any]]]:
    """onnxruntime execution providers for a device spec; never a silent fallback to CPU.

    `cuda:N` becomes the CUDA provider with `device_id` N.
    """
    import onnxruntime as ort

    spec = parse_device(spec)
    if spec.kind == "mps":
        raise DeviceError(
            "onnxruntime has no MPS backend.", "Use --device cpu for .onnx files, or a .safetensors file on MPS."
        )
    if spec.kind == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if spec.kind == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise DeviceError(
            "CUDA was requested for an ONNX model, but the installed onnxruntime has no CUDA execution provider.",
            "Install GPU support with: pip uninstall onnxruntime && pip install onnxruntime-gpu",
        )
    return [("CUDAExecutionProvider", {"device_id": spec.index or 0})]
