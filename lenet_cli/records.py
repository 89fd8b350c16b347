"""What a training run is made of, shared by training, checkpoints, run folders and plots.

Plain dataclasses with no torch at import: `TrainConfig` (the recipe, saved in every
weights file and checkpoint), `EpochRecord` (one row of the per-epoch table),
`TrainResult` (what a run produced) and `TrainState` (everything a run needs to continue
exactly where it stopped; `checkpoint.py` writes and reads it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lenet_cli.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "constant")
# The training forward pass: plain float32, or under bfloat16 autocast; "auto" is resolved per device
# (recipe.resolve_precision) before training starts, so files record the one that ran.
PRECISIONS = ("auto", "float32", "bf16")


def check_field_types(cfg: Any, what: str) -> None:
    """Raise ValueError unless each field of a config dataclass has the type of its default.

    Configs are read back from files (weights, checkpoints) that may have been edited: a
    string where a number belongs must be an error here, not a crash deep in training.
    """
    for f in dataclasses.fields(cfg):
        value, default = getattr(cfg, f.name), f.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{what} field {f.name!r} has an invalid value {value!r}")


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, through dicts, lists and tuples.

    A run without a validation split records its validation figures as NaN; JSON has no NaN, and
    strict parsers (jq, JavaScript) reject a document that holds Python's bare `NaN`.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class TrainConfig:
    """The recipe of a training run. Saved in the weights file's metadata and in checkpoints.

    The device is not part of the recipe: the command resolves it once and passes the
    device itself down (files still record the one asked for under "device").
    """

    preset: str = "modern"
    epochs: int = 15
    # Batch 128, peak rate 1e-2 and label smoothing 0.1 won on the validation split at 1, 2, 3 and 15
    # epochs and tied at 5 (README, "The recipe per epoch budget"; docs/recipe_search.py).
    batch_size: int = 128
    lr: float = 1e-2  # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9  # for sgd
    schedule: str = "onecycle"  # onecycle | constant
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # per-step decay of the weights' moving average; 0: no average
    augment: bool = True
    max_rotation: float = 8.0  # degrees
    max_shift: float = 2.0  # pixels
    max_scale: float = 0.08  # +/- fraction
    elastic: float = 0.0  # strength (alpha) of Simard-style elastic distortion; 0: none
    stroke: float = 0.0  # stroke-width jitter: up to this fraction of a 3x3 dilation or erosion; 0: none
    # The last this many epochs train on the digits as they are: the weights and batch-norm statistics
    # settle on undistorted digits, like the ones they will see (won on validation, README).
    clean_epochs: int = 2
    precision: str = "auto"  # auto | float32 | bf16 (bf16: the forward pass under bfloat16 autocast)
    val_size: int = 5000
    seed: int = 0
    dry_run: bool = False  # one batch per epoch: a quick check that everything runs

    def validate(self) -> None:
        """Raise UsageError for settings that cannot work (the preset is checked by `api.train`, beside the model)."""
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr}.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UsageError(f"--weight-decay must be a number >= 0, got {self.weight_decay}.")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}.")
        if not (math.isfinite(self.elastic) and self.elastic >= 0):
            raise UsageError(f"--elastic must be a number >= 0, got {self.elastic}.")
        if not 0 <= self.stroke <= 1:
            raise UsageError(f"--stroke must be in [0, 1], got {self.stroke}.")
        if self.clean_epochs < 0:
            raise UsageError(f"--clean-epochs must be >= 0, got {self.clean_epochs}.")
        if not 0 <= self.ema_decay < 1:
            raise UsageError(f"--ema must be in [0, 1), got {self.ema_decay}.")
        if self.val_size < 0:
            raise UsageError(f"--val-size must be >= 0, got {self.val_size}.")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer must be adamw or sgd, got {self.optimizer!r}.")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"--schedule must be onecycle or constant, got {self.schedule!r}.")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be auto, float32 or bf16, got {self.precision!r}.")

    def augments(self, epoch: int) -> bool:
        """Whether epoch `epoch` (from 1) trains on augmented digits: every epoch but the last `clean_epochs`.

        The first epoch always is (a run with no augmented epoch at all is --no-augment's job).
        """
        return self.augment and (epoch == 1 or epoch <= self.epochs - self.clean_epochs)

    @classmethod
    def for_budget(cls, epochs: int | None = None, **settings: Any) -> "TrainConfig":
        """The recipe for an epoch budget, then `settings`.

        The last `clean_epochs` (2) epochs train unaugmented, but never the first (`augments`): a
        2-epoch run records one, a 1-epoch run none, so files record what ran (a given clean_epochs is
        capped the same way). Settings passed as None take the budget's default, so a command line's
        unset options do.
        """
        epochs = cls.epochs if epochs is None else epochs
        given = {k: v for k, v in settings.items() if v is not None}
        clean = given.pop("clean_epochs", cls.clean_epochs)
        return cls(epochs=epochs, clean_epochs=min(clean, max(epochs - 1, 0)), **given)

    def to_dict(self, device: str | None = None) -> dict[str, Any]:
        """Plain dict for metadata and JSON output; with `device`, the "device" key that files record.

        "device" goes after "seed", where it stood while it was a field of the config, so that files
        and --json keep their layout.
        """
        data = dataclasses.asdict(self)
        if device is None:
            return data
        keys = list(data)
        at = keys.index("seed") + 1
        return {k: data[k] for k in keys[:at]} | {"device": device} | {k: data[k] for k in keys[at:]}

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        """The config a file recorded, each field of its declared type and valid (ValueError otherwise).

        Files written before the device left the recipe carry a "device" key; it is not a setting.
        """
        if not isinstance(data, dict):
            raise ValueError("config is not an object")
        # A field a file lacks was written before the field existed: it takes the value that run had.
        data = LEGACY_VALUES | data
        cfg = cls(**{k: v for k, v in data.items() if k != "device"})
        check_field_types(cfg, "config")
        try:
            cfg.validate()
        except UsageError as exc:
            raise ValueError(f"invalid config: {exc.message}") from None
        return cfg


# What a file that predates a field ran with (not the field's default, which may have changed since).
LEGACY_VALUES: dict[str, Any] = {"ema_decay": 0.0, "elastic": 0.0, "stroke": 0.0, "precision": "float32",
                                 "clean_epochs": 0}


@dataclass(frozen=True)
class EpochRecord:
    """One row of the per-epoch table."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    images_per_s: float


@dataclass
class TrainResult:
    """What a run produced: history, best epoch and the models' states (CPU tensors)."""

    history: list[EpochRecord]
    best_epoch: int
    best_state: dict[str, "torch.Tensor"]
    last_state: dict[str, "torch.Tensor"]
    model: "torch.nn.Module"  # the trained LeNet5 (model.py), on its training device
    param_count: int
    device: str
    train_seconds: float
    interrupted: bool = False
    stopped_in: tuple[int, int, int] | None = None  # (epoch, steps done, steps) when stopped mid-epoch

    @property
    def best(self) -> EpochRecord | None:
        """The epoch saved as best.safetensors (see `train.select_best`)."""
        return next((r for r in self.history if r.epoch == self.best_epoch), None)


@dataclass
class TrainState:
    """The complete state of a training run between two steps (CPU tensors)."""

    config: TrainConfig
    epochs_done: int  # completed epochs
    step: int  # steps done in epoch `epochs_done + 1` (0: at an epoch boundary)
    model: dict[str, "torch.Tensor"]
    optimizer: dict[str, Any]  # torch.optim state_dict
    scheduler: dict[str, Any]  # torch.optim.lr_scheduler state_dict
    rng_shuffle: "torch.Tensor"
    rng_torch: "torch.Tensor"
    rng_cuda: "torch.Tensor | None"
    history: list[EpochRecord]
    best_epoch: int
    best_score: float
    best_state: dict[str, "torch.Tensor"]
    perm: "torch.Tensor | None" = None  # this epoch's order, when step > 0
    sums: "torch.Tensor | None" = None  # (loss sum, correct, seen, seconds so far) of this epoch
    train_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # The model the run trains. A resumed run rebuilds exactly this one, even when the
    # preset's defaults have changed since (lenet 0.1.0 checkpoints pool last).
    model_config: Any = None  # a model.ModelConfig (model.py builds on this module, not the reverse)
    device: str = "auto"  # the device the run was started with (`--device`), for resuming
    ema: dict[str, "torch.Tensor"] | None = None  # the weights' moving average (AveragedModel state), if the run keeps one
