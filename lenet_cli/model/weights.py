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
from lenet_cli.utils.fileio import atomic_write_bytes, not_a_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lenet_cli.model.lenet5 import (  # lenet5.py imports torch: used inside functions
        LeNet5,
        ModelConfig,
    )

FORMAT_TAG = "lenet-cli/weights-v1"
# checkpoint.py's tags start so (it imports this module, so the prefix is spelled here): a checkpoint
# given where weights belong gets its own message.
CHECKPOINT_FORMAT_PREFIX = "lenet-cli/checkpoint"
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
    what = not_a_file(path)
    if what is not None:
        raise WeightsError(f"{path} is {what}, not a weights file.", "Pass a .safetensors or .onnx file.")
    return path


def build_metadata(
    model: "LeNet5",
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The string metadata stored in a weights file."""
    from lenet_cli.model.lenet5 import CLASS_NAMES, count_parameters

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
    tensors = state_tensors(base)
    broken = next((k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())), None)
    if broken is not None:  # a weights file of NaNs would only fail later, in eval or predict
        raise WeightsError(f"Refusing to write {path}: tensor {broken} holds NaN or infinite values.",
                           "The run diverged; train again with a lower --lr.")
    data = save(tensors, metadata=build_metadata(base, training, metrics))
    return atomic_write_bytes(Path(path), data)


def save_state(
    path: Path,
    cfg: "ModelConfig",
    state: dict[str, "torch.Tensor"],
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Save a state dict of the model `cfg` describes (built and loaded first, so it must fit)."""
    from lenet_cli.model.lenet5 import build_model

    model = build_model(cfg)
    model.load_state_dict(state)
    return save_weights(path, model, training=training, metrics=metrics)


def read_info(path: Path) -> tuple[WeightsInfo, dict[str, "torch.Tensor"]]:
    """Read and validate a weights file; raise WeightsError with a clear message if it is not one of ours."""
    from safetensors.torch import load

    from lenet_cli.model.lenet5 import ModelConfig, UnknownConfigKeys

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"Cannot read weights file {path}: {exc.strerror or exc}.",
                           "Check that the file exists and that you may read it.") from exc
    if path.suffix.lower() == ".onnx":
        raise WeightsError(f"{path} looks like an ONNX file, which this command cannot load as PyTorch weights.",
                           "Pass the .safetensors file it was exported from.")
    try:
        tensors = load(raw)
        metadata = read_metadata(raw)
    except Exception as exc:  # safetensors raises SafetensorError / ValueError on bad bytes
        raise WeightsError(
            f"{path} is not a valid safetensors file ({first_line(exc, 200)}).",
            "The file is corrupt or truncated; re-create it with `lenet train`.",
        ) from exc
    if metadata.get("format", "").startswith(CHECKPOINT_FORMAT_PREFIX):
        raise WeightsError(f"{path} is a training checkpoint (to continue a run with --resume), not a weights file.",
                           f"Pass best.safetensors or last.safetensors from {path.parent.resolve()}.")
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
            classes=tuple(str(c) for c in _json_field(metadata, "classes", list)),
            normalization=_json_field(metadata, "normalization", dict),
            training=_json_field(metadata, "training", dict),
            metrics=_json_field(metadata, "metrics", dict),
            version=str(metadata.get("lenet_cli_version", "")),
            sha256=hashlib.sha256(raw).hexdigest(),
        )
    except UnknownConfigKeys as exc:
        made_by = str(metadata.get("lenet_cli_version", ""))
        if release(made_by) > release(__version__):
            raise WeightsError(f"{path} was written by lenet {made_by}, which knows more than this lenet "
                               f"{__version__} ({first_line(exc, 200)}).",
                               f"Read it with lenet {made_by} or newer.") from exc
        # Not from a newer version: this one, or an older one, never wrote such keys.
        raise WeightsError(f"{path} has unreadable lenet metadata ({first_line(exc, 200)}).",
                           "The file was edited or damaged; re-create it with `lenet train`.") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path} has unreadable lenet metadata ({first_line(exc, 200)}).",
                           "The file was edited or damaged; re-create it with `lenet train`.") from exc
    return info, tensors


def release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string: "0.2.0.dev0" -> (0, 2, 0); () when there are none."""
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def _json_field(metadata: dict[str, str], key: str, kind: type) -> Any:
    """One JSON-encoded metadata entry, which must decode to `kind` (absent: an empty one)."""
    value = json.loads(metadata.get(key) or "null")
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ValueError(f"metadata {key!r} is not a JSON {'object' if kind is dict else 'array'}")
    return value


def load_model(path: Path, device: "torch.device | str" = "cpu") -> tuple["LeNet5", WeightsInfo]:
    """Build the model a weights file describes and load its tensors; eval mode, on `device`."""
    import torch

    from lenet_cli.model.lenet5 import build_model

    info, tensors = read_info(path)
    preset = info.config.preset
    try:
        reference = reference_tensors(info.config)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise WeightsError(f"{path} describes a model this version cannot build ({first_line(exc, 200)}).",
                           "Re-create it with `lenet train`.") from exc
    problem = mismatch(reference, tensors)
    if problem:
        raise WeightsError(
            f"{path} does not match the '{preset}' LeNet-5 it describes: {problem}.",
            "The file was edited or written for another model; re-create it with `lenet train`.",
        )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() != reference[name].is_floating_point():
            want = "floating point" if reference[name].is_floating_point() else "integer"
            raise WeightsError(f"{path} holds tensor {name} as {str(tensor.dtype).removeprefix('torch.')}, "
                               f"expected {want}.", "Re-create it with `lenet train`.")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{path} holds NaN or infinite values (tensor {name}).",
                               "The run that wrote it diverged or the file was damaged; train again "
                               "(with a lower --lr if it diverged).")
    model = build_model(info.config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"{path} does not match the '{preset}' LeNet-5 it describes ({first_line(exc, 200)}).",
            "The file was edited or written by an incompatible tool; re-create it with `lenet train`.",
        ) from exc
    model.eval()
    return model.to(device), info


def reference_tensors(cfg: "ModelConfig") -> dict[str, "torch.Tensor"]:
    """The state dict a config builds, on the meta device: names and shapes, no memory.

    Configs come from files, so they are checked against the file's tensors this way first:
    an edited config can neither crash later nor allocate gigabytes now.
    """
    import torch

    from lenet_cli.model.lenet5 import build_model

    with torch.device("meta"):
        return build_model(cfg).state_dict()


def mismatch(expected: dict[str, "torch.Tensor"], tensors: dict[str, "torch.Tensor"]) -> str:
    """'' when the tensors have exactly the expected names and shapes, else what differs first."""
    missing = sorted(set(expected) - set(tensors))
    if missing:
        return f"tensor {missing[0]} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        return f"it has an unexpected tensor {extra[0]}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    for name, ref in expected.items():
        if tensors[name].shape != ref.shape:
            return f"tensor {name} has shape {list(tensors[name].shape)}, expected {list(ref.shape)}"
    return ""


def read_metadata(raw: bytes) -> dict[str, str]:
    """The string metadata of a safetensors file's bytes (ValueError if the header is not JSON)."""
    # safetensors layout: 8-byte little-endian header length, then a JSON header with "__metadata__".
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a mapping")
    return meta
