"""LeNet-5, built from a frozen config. Forward takes raw pixels and returns logits.

Two presets:

* ``classic``: faithful to LeCun et al., "Gradient-based learning applied to document
  recognition" (1998): 32x32 input (MNIST padded by 2), scaled tanh 1.7159*tanh(2x/3),
  trainable subsampling layers (average pool times a learned coefficient plus bias),
  the partial C3 connection table, C5 as a 5x5 convolution with 120 maps, F6 with 84
  units. The paper's RBF output layer is replaced by a linear layer giving logits, so the
  model trains with cross-entropy like every other preset (documented in the README).
* ``modern`` (default): the same 6-16-120-84 shape with ReLU, max pooling, batch norm and
  dropout; trains to >= 99.3% with light augmentation. Each conv block is conv -> max pool
  -> batch norm -> ReLU: normalising the pooled maps costs a quarter of normalising the
  conv output (files from lenet 0.1.0 normalise before the pool; both load).

Input convention: a float tensor of raw pixel values in [0, 255], shape (B, 1, 28, 28),
bright ink on black like MNIST. The model normalises with MNIST's mean and std itself,
so nobody downstream (eval, predict, ONNX users) has to know those numbers.

This file holds the model and nothing device-specific: the CPU speed paths that compute the
same function faster are in kernels.py, and ONNX export always traces the layers here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lenet_cli.model.calibration import calibrated_logits
from lenet_cli.utils.serialization import check_field_types

# MNIST statistics on [0, 1] pixels, computed on the 60,000 training images.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 28  # MNIST images are 28x28
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(d) for d in range(NUM_CLASSES))

# LeCun et al. 1998, Table I: which of the 6 S2 maps (rows) feed each of the 16 C3 maps (columns).
C3_TABLE = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)


class UnknownConfigKeys(ValueError):
    """A config with keys this version does not know: written by a newer lenet."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model. Saved inside every weights file."""

    preset: str = "modern"
    activation: str = "relu"  # relu | scaled_tanh
    pooling: str = "max"  # max | trainable_avg
    c3_table: bool = False  # the paper's partial connections between S2 and C3
    batch_norm: bool = True
    # Each conv block as conv -> pool -> norm -> act instead of conv -> norm -> act -> pool.
    # Files written before this field existed pool last: `from_json` reads a missing key as False.
    pool_first: bool = True
    dropout: float = 0.1
    pad_to_32: bool = False  # pad the 28x28 input to 32x32 like the paper
    c1: int = 6
    c3: int = 16
    c5: int = 120
    f6: int = 84
    num_classes: int = NUM_CLASSES
    mean: float = MNIST_MEAN
    std: float = MNIST_STD
    # The logits are divided by this (temperature scaling, Guo et al. 2017, "On calibration of modern
    # neural networks"). Training runs at 1; `lenet train` fits it on the validation split afterwards,
    # so that a label-smoothed model's probabilities mean what they say (calibrate.py).
    temperature: float = 1.0

    def to_json(self) -> str:
        """Serialise for a weights file's metadata."""
        data = dataclasses.asdict(self)
        if not self.pool_first:
            # Absent means pool last (see from_json): such files stay readable by lenet 0.1.0,
            # which refuses keys it does not know.
            del data["pool_first"]
        if self.temperature == 1.0:
            del data["temperature"]  # the same for files without a fitted temperature
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Rebuild from metadata; unknown keys are an error (a file from a newer, incompatible version)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("model config is not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise UnknownConfigKeys(f"unknown model config keys: {sorted(unknown)}")
        data.setdefault("pool_first", False)  # lenet 0.1.0 files pool last
        cfg = cls(**data)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Raise ValueError unless every field has its type and a usable value.

        A config comes from a file's metadata, so it may have been edited: a string
        where a width belongs, or a negative width, must not reach the layers.
        """
        check_field_types(self, "model config")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(f.default, int) and not isinstance(f.default, bool) and value < 1:  # widths, classes
                raise ValueError(f"model config field {f.name!r} has an invalid value {value!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model config field 'dropout' must be in [0, 1), got {self.dropout!r}")
        if self.std <= 0:
            raise ValueError(f"model config field 'std' must be positive, got {self.std!r}")
        if self.temperature <= 0:
            raise ValueError(f"model config field 'temperature' must be positive, got {self.temperature!r}")


PRESETS: dict[str, ModelConfig] = {
    "modern": ModelConfig(),
    "classic": ModelConfig(
        preset="classic",
        activation="scaled_tanh",
        pooling="trainable_avg",
        c3_table=True,
        batch_norm=False,
        pool_first=False,  # the paper squashes C1 and C3 before subsampling
        dropout=0.0,
        pad_to_32=True,
    ),
}
DEFAULT_PRESET = "modern"


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = 1.7159 tanh(2a/3): f(1) = 1, f(-1) = -1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class TrainableSubsampling(nn.Module):
    """S2/S4 of the paper: 2x2 average, times a learned per-map coefficient, plus a learned bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) * self.weight + self.bias


class MaskedConv2d(nn.Conv2d):
    """A convolution whose input-output connections follow a fixed table (C3 in the paper)."""

    def __init__(self, table: tuple[str, ...], kernel_size: int) -> None:
        in_ch, out_ch = len(table), len(table[0])
        super().__init__(in_ch, out_ch, kernel_size)
        mask = torch.tensor([[c == "X" for c in row] for row in table], dtype=torch.float32)  # (in, out)
        self.register_buffer("mask", mask.t().reshape(out_ch, in_ch, 1, 1), persistent=False)
        with torch.no_grad():
            self.weight.mul_(self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def masked_weights(self) -> int:
        """How many weights the table switches off (not counted as parameters)."""
        return int((self.mask == 0).sum().item()) * self.kernel_size[0] * self.kernel_size[1]


def _activation(cfg: ModelConfig) -> nn.Module:
    if cfg.activation == "relu":
        return nn.ReLU(inplace=True)
    if cfg.activation == "scaled_tanh":
        return ScaledTanh()
    raise ValueError(f"unknown activation {cfg.activation!r}")


def _pool(cfg: ModelConfig, channels: int) -> nn.Module:
    if cfg.pooling == "max":
        return nn.MaxPool2d(2)
    if cfg.pooling == "trainable_avg":
        return TrainableSubsampling(channels)
    raise ValueError(f"unknown pooling {cfg.pooling!r}")


class LeNet5(nn.Module):
    """LeNet-5: C1 conv5 -> S2 pool -> C3 conv5 -> S4 pool -> C5 -> F6 -> output logits."""

    def __init__(self, cfg: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        bn = cfg.batch_norm
        # C1: 6 maps of 28x28. The modern preset pads by 2 in the conv; classic pads the image itself.
        c1_pad = 0 if cfg.pad_to_32 else 2
        self.c1 = nn.Conv2d(1, cfg.c1, 5, padding=c1_pad, bias=not bn)
        self.bn1 = nn.BatchNorm2d(cfg.c1) if bn else nn.Identity()
        self.act1 = _activation(cfg)
        self.s2 = _pool(cfg, cfg.c1)  # (B, 6, 14, 14)
        if cfg.c3_table:
            if (cfg.c1, cfg.c3) != (6, 16):
                raise ValueError("the C3 connection table needs c1=6 and c3=16")
            self.c3 = MaskedConv2d(C3_TABLE, 5)
        else:
            self.c3 = nn.Conv2d(cfg.c1, cfg.c3, 5, bias=not bn)
        self.bn3 = nn.BatchNorm2d(cfg.c3) if bn else nn.Identity()
        self.act3 = _activation(cfg)
        self.s4 = _pool(cfg, cfg.c3)  # (B, 16, 5, 5)
        # C5 is a 5x5 convolution over a 5x5 map, i.e. a fully connected layer on 400 inputs.
        self.c5 = nn.Linear(cfg.c3 * 5 * 5, cfg.c5)
        self.act5 = _activation(cfg)
        self.f6 = nn.Linear(cfg.c5, cfg.f6)
        self.act6 = _activation(cfg)
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.out = nn.Linear(cfg.f6, cfg.num_classes)
        if cfg.activation == "scaled_tanh":
            self._lecun_init()

    def _lecun_init(self) -> None:
        # The paper draws weights from U(-2.4/F_in, 2.4/F_in) so tanh starts in its linear range.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                nn.init.uniform_(module.weight, -2.4 / fan_in, 2.4 / fan_in)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, MaskedConv2d):
                    with torch.no_grad():
                        module.weight.mul_(module.mask)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pixels (B, 1, 28, 28) in [0, 255] -> MNIST-normalised, padded to 32x32 for the classic preset."""
        x = (x * (1.0 / 255.0) - self.cfg.mean) * (1.0 / self.cfg.std)
        if self.cfg.pad_to_32:
            # Pad with the normalised value of a black pixel, so the border looks like MNIST background.
            x = F.pad(x, (2, 2, 2, 2), value=-self.cfg.mean / self.cfg.std)  # (B, 1, 32, 32)
        return x

    def conv_block(self, x: torch.Tensor, conv: nn.Module, bn: nn.Module, act: nn.Module,
                   pool: nn.Module) -> torch.Tensor:
        """C1 -> S2 or C3 -> S4: convolution, then pool -> norm -> activation (modern) or norm -> activation -> pool."""
        if self.cfg.pool_first:
            return act(bn(pool(conv(x))))
        return pool(act(bn(conv(x))))

    def classifier(self, x: torch.Tensor) -> torch.Tensor:
        """C5 -> F6 -> output on the S4 maps (B, 16, 5, 5); logits (B, num_classes), over the temperature."""
        x = torch.flatten(x, 1)  # (B, 400)
        x = self.drop(self.act5(self.c5(x)))  # (B, 120)
        x = self.drop(self.act6(self.f6(x)))  # (B, 84)
        # The temperature is a constant of the config, not a parameter: exported ONNX graphs carry it as
        # one Mul (by 1/T).
        return calibrated_logits(self.out(x), self.cfg.temperature)  # (B, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 28, 28) raw pixels in [0, 255]. Returns logits (B, num_classes)."""
        x = self.normalize(x)  # (B, 1, 28, 28), or (B, 1, 32, 32) for the classic preset
        x = self.conv_block(x, self.c1, self.bn1, self.act1, self.s2)  # C1 -> S2: (B, 6, 14, 14)
        x = self.conv_block(x, self.c3, self.bn3, self.act3, self.s4)  # C3 -> S4: (B, 16, 5, 5)
        return self.classifier(x)  # C5 -> F6 -> output: (B, 10)


def build_model(cfg: ModelConfig | str = DEFAULT_PRESET) -> LeNet5:
    """Build a LeNet-5 from a config or a preset name."""
    if isinstance(cfg, str):
        cfg = preset_config(cfg)
    return LeNet5(cfg)


def preset_config(name: str) -> ModelConfig:
    """The config of a named preset; raises KeyError with the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, not counting weights that C3's connection table switches off."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    masked = sum(m.masked_weights() for m in model.modules() if isinstance(m, MaskedConv2d))
    return total - masked
