"""Weights as safetensors with self-describing metadata. Never pickle.

A weights file carries, as string metadata: the format tag, the model config
(JSON), normalisation, class names, parameter count, training settings, metrics
and the package version. `eval`, `predict`, `export` and `bench` need nothing
but the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenet_cli import __version__
from lenet_cli.errors import WeightsError, first_line
from lenet_cli.fileio import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lenet_cli.model import LeNet5, ModelConfig

FORMAT_TAG = "lenet-cli/weights-v1"
BUNDLED_NAME = "lenet5-modern.safetensors"
# The same model exported with `lenet export --onnx`: `predict` runs it through onnxruntime
# so that its default path never imports torch (2+ s on a small machine).
BUNDLED_ONNX_NAME = "lenet5-modern.onnx"


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file says about itself."""

    path: Path
    config: "ModelConfig"
    param_count: int
    classes: tuple[str, ...]
    normalization: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    sha256: str = ""


def bundled_weights_path() -> Path:
    """The default model shipped inside the package."""
    return Path(str(resources.files("lenet_cli") / "assets" / BUNDLED_NAME))


def bundled_onnx_path() -> Path:
    """The bundled model as ONNX (made from `bundled_weights_path()` by `lenet export --onnx`)."""
    return Path(str(resources.files("lenet_cli") / "assets" / BUNDLED_ONNX_NAME))


def resolve_weights_path(weights: Path | None) -> Path:
    """--weights if given (must exist), else the bundled model."""
    if weights is None:
        path = bundled_weights_path()
        if not path.is_file():
            raise WeightsError(
                f"The bundled default model is missing from the installation ({path}).",
                "Reinstall lenet-cli, or pass --weights PATH.",
            )
        return path
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(f"Weights file not found: {path}.", "Check the path, or omit --weights to use the bundled model.")
    if path.is_dir():
        raise WeightsError(f"{path} is a directory, not a weights file.", "Pass a .safetensors or .onnx file.")
    return path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (identifies the source weights of an export)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_metadata(
    model: "LeNet5",
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The string metadata stored in a weights file."""
    from lenet_cli.model import CLASS_NAMES, count_parameters

    cfg = model.cfg
    return {
        "format": FORMAT_TAG,
        "model_config": cfg.to_json(),
        "preset": cfg.preset,
        "param_count": str(count_parameters(model)),
        "classes": json.dumps(list(CLASS_NAMES)),
        "normalization": json.dumps(
            {"input": "raw pixels 0-255, bright ink on black, (B, 1, 28, 28)", "mean": cfg.mean, "std": cfg.std}
        ),
        "training": json.dumps(training or {}, sort_keys=True),
        "metrics": json.dumps(metrics or {}, sort_keys=True),
        "lenet_cli_version": __version__,
    }


def state_tensors(model: "LeNet5") -> dict[str, "torch.Tensor"]:
    """The model's state dict as contiguous CPU tensors (an un-compiled model: no `_orig_mod.` prefixes)."""
    model = getattr(model, "_orig_mod", model)
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(
    path: Path,
    model: "LeNet5",
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Save a model as safetensors with metadata, atomically."""
    from safetensors.torch import save

    base = getattr(model, "_orig_mod", model)
    data = save(state_tensors(base), metadata=build_metadata(base, training, metrics))
    return atomic_write_bytes(Path(path), data)


def read_info(path: Path) -> tuple[WeightsInfo, dict[str, "torch.Tensor"]]:
    """Read and validate a weights file; raise WeightsError with a clear message if it is not one of ours."""
    from safetensors.torch import load

    from lenet_cli.model import ModelConfig

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"Cannot read weights file {path}: {exc.strerror or exc}.") from exc
    if path.suffix.lower() == ".onnx":
        raise WeightsError(f"{path} looks like an ONNX file, which this command cannot load as PyTorch weights.")
    try:
        tensors = load(raw)
        metadata = _read_metadata(raw)
    except Exception as exc:  # safetensors raises SafetensorError / ValueError on bad bytes
        raise WeightsError(
            f"{path} is not a valid safetensors file ({first_line(exc, 200)}).",
            "The file is corrupt or truncated; re-create it with `lenet train`.",
        ) from exc
    if metadata.get("format") != FORMAT_TAG:
        raise WeightsError(
            f"{path} is a safetensors file but not a lenet weights file (no '{FORMAT_TAG}' metadata).",
            "Use weights written by `lenet train`.",
        )
    try:
        cfg = ModelConfig.from_json(metadata["model_config"])
        info = WeightsInfo(
            path=path,
            config=cfg,
            param_count=int(metadata.get("param_count", "0")),
            classes=tuple(json.loads(metadata.get("classes", "[]"))),
            normalization=json.loads(metadata.get("normalization", "{}")),
            training=json.loads(metadata.get("training", "{}")),
            metrics=json.loads(metadata.get("metrics", "{}")),
            version=metadata.get("lenet_cli_version", ""),
            sha256=hashlib.sha256(raw).hexdigest(),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path} has unreadable lenet metadata ({first_line(exc, 200)}).") from exc
    return info, tensors


def load_model(path: Path, device: "torch.device | str" = "cpu") -> tuple["LeNet5", WeightsInfo]:
    """Build the model a weights file describes and load its tensors; eval mode, on `device`."""
    from lenet_cli.model import build_model

    info, tensors = read_info(path)
    try:
        model = build_model(info.config)
    except (ValueError, KeyError) as exc:
        raise WeightsError(f"{path} describes a model this version cannot build ({first_line(exc, 200)}).") from exc
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"{path} does not match the '{info.config.preset}' LeNet-5 it describes ({first_line(exc, 200)}).",
            "The file was edited or written by an incompatible tool; re-create it with `lenet train`.",
        ) from exc
    model.eval()
    return model.to(device), info


def _read_metadata(raw: bytes) -> dict[str, str]:
    # safetensors layout: 8-byte little-endian header length, then a JSON header with "__metadata__".
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a mapping")
    return meta
