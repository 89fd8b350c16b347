"""Resumable training checkpoints: one safetensors file, tensors plus a JSON header. No pickle.

Everything a run needs to continue exactly where it stopped lives in ONE file, so a
single atomic rename publishes it: there is never a checkpoint whose tensors and
bookkeeping come from different moments.

* tensors: `model.*` (current weights and batch-norm buffers), `best.*` (best epoch so
  far), `optim.<param index>.<name>` (AdamW moments / SGD momentum and step counts),
  `rng.shuffle` (the CPU generator behind shuffling and augmentation), `rng.torch` /
  `rng.cuda` (torch's global generators: dropout), `epoch.perm` (this epoch's order of
  examples, when the run stopped mid-epoch) and `epoch.sums` (running loss/accuracy sums).
* metadata `lenet_checkpoint`: JSON with the training config, the model config, the
  position (epoch, step), the history, the best epoch, the optimizer's param groups and
  the learning-rate schedule's state. The optimizer and schedule state are torch.optim's; the
  flat-buffer optimizer of lenet 0.2.0.dev0 wrote the same layout, so its checkpoints resume too
  (resume.py checks every value before torch.optim sees it).

Opening an untrusted checkpoint can at worst fail with a clear error: safetensors
holds raw arrays and the rest is parsed as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenet_cli.errors import WeightsError, first_line
from lenet_cli.model.weights import mismatch, read_metadata, reference_tensors
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.state import EpochRecord, TrainState
from lenet_cli.utils.fileio import atomic_write_bytes, not_a_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT_TAG = "lenet-cli/checkpoint-v1"
CHECKPOINT_NAME = "checkpoint.safetensors"


def _json_safe(value: Any) -> Any:
    """Drop what JSON cannot hold (older torch keeps bound methods in scheduler state)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def save_checkpoint(path: Path, state: TrainState) -> Path:
    """Write `state` to `path` atomically (temporary file, fsync, rename)."""
    import dataclasses

    import torch
    from safetensors.torch import save

    from lenet_cli.model.lenet5 import preset_config

    tensors: dict[str, torch.Tensor] = {}
    for prefix, sd in (("model.", state.model), ("best.", state.best_state), ("ema.", state.ema or {})):
        for k, v in sd.items():
            tensors[prefix + k] = v.detach().to("cpu").contiguous()
    opt_state = state.optimizer["state"]
    optim_keys: dict[str, dict[str, str]] = {}
    for idx, entries in opt_state.items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().to("cpu").contiguous()
                optim_keys.setdefault(str(idx), {})[name] = "tensor"
            else:  # plain numbers (e.g. a float step count in some optimizers)
                optim_keys.setdefault(str(idx), {})[name] = json.dumps(value)
    tensors["rng.shuffle"] = state.rng_shuffle
    tensors["rng.torch"] = state.rng_torch
    if state.rng_cuda is not None:
        tensors["rng.cuda"] = state.rng_cuda
    if state.perm is not None:
        tensors["epoch.perm"] = state.perm.to("cpu").contiguous()
    if state.sums is not None:
        tensors["epoch.sums"] = state.sums.to("cpu", torch.float64).contiguous()
    header = {
        "format": FORMAT_TAG,
        "config": state.config.to_dict(state.device),
        "model_config": json.loads((state.model_config or preset_config(state.config.preset)).to_json()),
        "epochs_done": state.epochs_done,
        "step": state.step,
        "history": [dataclasses.asdict(r) for r in state.history],
        "best_epoch": state.best_epoch,
        "best_score": state.best_score,
        "train_seconds": state.train_seconds,
        "optimizer_param_groups": _json_safe(state.optimizer["param_groups"]),
        "optimizer_state_keys": optim_keys,
        "scheduler": _json_safe(state.scheduler),
        "extra": _json_safe(state.extra),
    }
    data = save(tensors, metadata={"format": FORMAT_TAG, "lenet_checkpoint": json.dumps(header)})
    return atomic_write_bytes(path, data)


CHECKPOINT_HINT = "Pass the checkpoint.safetensors that `lenet train` wrote in its run folder."


def check_checkpoint_file(path: Path) -> Path:
    """`path`, expanded, if it is a file; else WeightsError saying what it is (before anything is created)."""
    path = Path(path).expanduser()
    what = not_a_file(path)
    if what == "missing":
        raise WeightsError(f"Checkpoint not found: {path}.", CHECKPOINT_HINT)
    if what is not None:
        raise WeightsError(f"{path} is {what}, not a checkpoint file.", CHECKPOINT_HINT)
    return path


def load_checkpoint(path: Path) -> TrainState:
    """Read a checkpoint written by `save_checkpoint`; WeightsError for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from lenet_cli.model.lenet5 import ModelConfig

    path = check_checkpoint_file(path)
    hint = CHECKPOINT_HINT
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"Cannot read checkpoint {path}: {exc.strerror or exc}.") from exc
    try:
        tensors = load(raw)
        meta = read_metadata(raw)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise WeightsError(f"{path} is not a valid checkpoint ({first_line(exc)}).", hint) from exc
    if meta.get("format") != FORMAT_TAG or "lenet_checkpoint" not in meta:
        kind = "a weights file" if meta.get("format", "").startswith("lenet-cli/weights") else "not a lenet checkpoint"
        raise WeightsError(f"{path} is {kind}, not a training checkpoint.", hint)
    try:
        h = json.loads(meta["lenet_checkpoint"])
        cfg = TrainConfig.from_dict(h["config"])
        device = h["config"].get("device", "auto")
        if not isinstance(device, str):
            raise ValueError(f"config field 'device' has an invalid value {device!r}")

        def sub(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        opt_state: dict[int, dict[str, Any]] = {}
        for idx, names in h["optimizer_state_keys"].items():
            entry = {}
            for name, kind in names.items():
                entry[name] = tensors[f"optim.{idx}.{name}"] if kind == "tensor" else json.loads(kind)
            opt_state[int(idx)] = entry
        groups = h["optimizer_param_groups"]
        for g in groups:
            if isinstance(g.get("betas"), list):
                g["betas"] = tuple(g["betas"])
        state = TrainState(
            config=cfg,
            epochs_done=int(h["epochs_done"]),
            step=int(h["step"]),
            model=sub("model."),
            optimizer={"state": opt_state, "param_groups": groups},
            scheduler=h["scheduler"],
            rng_shuffle=tensors["rng.shuffle"],
            rng_torch=tensors["rng.torch"],
            rng_cuda=tensors.get("rng.cuda"),
            history=[EpochRecord(**r) for r in h["history"]],
            best_epoch=int(h["best_epoch"]),
            best_score=float(h["best_score"]),
            best_state=sub("best."),
            perm=tensors.get("epoch.perm"),
            sums=tensors.get("epoch.sums"),
            train_seconds=float(h.get("train_seconds", 0.0)),
            extra=h.get("extra", {}),
            model_config=ModelConfig.from_json(json.dumps(h["model_config"])),
            device=device,
            ema=sub("ema.") or None,
        )
        if state.model_config.preset != cfg.preset:
            raise ValueError(f"model config of preset {state.model_config.preset!r} in a {cfg.preset!r} run")
        _check_model(state)
        _check_structure(state)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise WeightsError(f"{path} is a damaged checkpoint ({first_line(exc)}).", hint) from exc
    return state


def _check_model(state: TrainState) -> None:
    """The saved model config must build a model whose tensors are the saved ones (ValueError otherwise)."""
    try:
        reference = reference_tensors(state.model_config)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"model config cannot be built: {first_line(exc)}") from None
    problem = mismatch(reference, state.model)
    if problem:
        raise ValueError(f"model tensors do not match the model config: {problem}")


def _check_structure(state: TrainState) -> None:
    """What a resumed run relies on, checked before any training starts (ValueError otherwise)."""
    import torch

    if not state.model:
        raise ValueError("no model tensors")
    if state.epochs_done < 0 or state.step < 0:
        raise ValueError("negative position")
    if len(state.history) != state.epochs_done:
        raise ValueError(f"{len(state.history)} history rows for {state.epochs_done} epochs")
    if state.history and set(state.best_state) != set(state.model):
        raise ValueError("best-epoch tensors do not match the model tensors")
    if state.step > 0:
        if state.perm is None or state.perm.dtype != torch.int64 or state.perm.ndim != 1:
            raise ValueError("a mid-epoch checkpoint without this epoch's order of examples")
        if not torch.equal(torch.sort(state.perm).values, torch.arange(state.perm.numel())):
            raise ValueError("the saved order of examples is not a permutation")
        if state.sums is None or state.sums.numel() != 4:
            raise ValueError("a mid-epoch checkpoint without its running sums")
    for name in ("rng_shuffle", "rng_torch"):
        if getattr(state, name).dtype != torch.uint8:
            raise ValueError(f"{name} is not a generator state")
    if not isinstance(state.scheduler, dict) or not isinstance(state.optimizer["param_groups"], list):
        raise ValueError("optimizer or schedule state is malformed")
