"""The recipe of a training run: `TrainConfig`, saved in every weights file and checkpoint.

A plain frozen dataclass with no torch at import. Its defaults are the recipe chosen on the
validation split; `for_budget` gives the recipe for a smaller epoch budget.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lenet_cli.errors import UsageError
from lenet_cli.utils.serialization import check_field_types

if TYPE_CHECKING:  # pragma: no cover
    pass


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "constant")
# The training forward pass: plain float32, or under bfloat16 autocast; "auto" is resolved per device
# (recipe.resolve_precision) before training starts, so files record the one that ran.
PRECISIONS = ("auto", "float32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """The recipe of a training run. Saved in the weights file's metadata and in checkpoints.

    The device is not part of the recipe: the command resolves it once and passes the
    device itself down (files still record the one asked for under "device").
    """

    preset: str = "modern"
    epochs: int = 15
    # Batch 128, peak rate 1e-2 and label smoothing 0.1 won on the validation split at 1, 2, 3 and 15
    # epochs and tied at 5 (README, "The recipe per epoch budget"; scripts/recipe_search.py).
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
