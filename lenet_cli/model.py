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
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

# MNIST statistics on [0, 1] pixels, computed on the 60,000 training images.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 28  # MNIST images are 28x28
CLASSIC_INPUT_SIZE = 32  # LeNet-5 was designed for 32x32 inputs: MNIST padded by 2
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


def check_field_types(cfg, what: str) -> None:
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

    def to_json(self) -> str:
        """Serialise for a weights file's metadata."""
        data = dataclasses.asdict(self)
        if not self.pool_first:
            # Absent means pool last (see from_json): such files stay readable by lenet 0.1.0,
            # which refuses keys it does not know.
            del data["pool_first"]
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
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
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


def _max_over_phases(z: torch.Tensor) -> torch.Tensor:
    """max over dim 1 (the four 2x2 phases, in raster order) as a + relu(b - a) trees.

    Equal to z.amax(1) up to rounding. The gradient goes to one maximum, the first in raster
    order on ties, exactly where max pooling sends it (relu passes no gradient at 0). On the
    CPU its backward is three ReLU masks, where amax's backward (an equality mask, a count of
    ties and a broadcast divide) costs a quarter of the whole training step.
    """
    if not z.requires_grad:
        return z.amax(1)  # inference: one pass, no backward to make cheap
    z0, z1, z2, z3 = z.unbind(1)
    m01 = z0 + torch.relu(z1 - z0)
    m23 = z2 + torch.relu(z3 - z2)
    return m01 + torch.relu(m23 - m01)


def _channels_last_max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()


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
        # On the CPU, forward runs the C1 block as a polyphase convolution and pools
        # channels-last: the same function, faster. False runs the plain layers: ONNX export
        # sets it, so the file holds the standard Conv/MaxPool graph, and tests compare the two.
        self.fast_cpu_kernels = True

    def _fast_path(self, x: torch.Tensor) -> bool:
        # In inference, below ~16 images the extra small ops cost more than they save
        # (2 cores: batch 1 349 µs plain vs 424 µs; batch 64 2.9 ms plain vs 1.6 ms).
        return self.fast_cpu_kernels and x.device.type == "cpu" and (self.training or x.shape[0] >= 16)

    @property
    def _polyphase_ok(self) -> bool:
        """The C1 block is a 5x5 conv with padding 2 and a 2x2 max pool (first or last, any activation)."""
        return not self.cfg.pad_to_32 and self.cfg.pooling == "max"

    def _c1_block_polyphase(self, x: torch.Tensor) -> torch.Tensor:
        """The C1 block on the CPU, as one 3x3 convolution over the image's 2x2 phases.

        The padded 32x32 image is split into its four 2x2 phases (4 channels of 16x16); each of
        the four output phases of the 5x5 convolution is then a 3x3 convolution over them, so
        one convolution with 4 inputs and 4*C1 outputs computes C1 at every pixel, and the
        2x2 max pool becomes a max over the four output phases. Same function, same parameters
        and buffers (batch norm before the pool sees the same B*28*28 values per channel, and
        the activation is applied at every pixel before the max). It exists because oneDNN pads
        a 1-channel input to 8 channels and reorders it on every forward and backward pass
        (training: 30% faster per step; inference: ~2x). ONNX export uses the plain layers.
        """
        b = x.shape[0]
        w = self.c1.weight  # (C, 1, 5, 5)
        c = w.shape[0]
        phases = []
        for a in (0, 1):
            for d in (0, 1):
                # Output phase (a, d) sees the kernel shifted by (a, d) inside a 6x6 window; its
                # row 2*p + q is tap p of input phase q (columns likewise), input channel 2*q + r.
                wa = F.pad(w[:, 0], (d, 1 - d, a, 1 - a)).view(c, 3, 2, 3, 2)
                phases.append(wa.permute(0, 2, 4, 1, 3).reshape(c, 4, 3, 3))
        weight = torch.cat(phases, 0)  # (4*C, 4, 3, 3), output channel = phase * C + c
        bias = None if self.c1.bias is None else self.c1.bias.repeat(4)
        half = (IMAGE_SIZE + 4) // 2  # the padded 32x32 image in 2x2 phases of 16x16
        out = IMAGE_SIZE // 2  # 14: C1's 28x28 output in 2x2 phases
        xp = F.pad(x, (2, 2, 2, 2)).view(b, half, 2, half, 2)
        xp = xp.permute(0, 2, 4, 1, 3).reshape(b, 4, half, half)  # input channel = 2*q + r
        z = F.conv2d(xp, weight, bias)  # (B, 4*C, 14, 14)
        if self.cfg.pool_first:
            return self.act1(self.bn1(_max_over_phases(z.view(b, 4, c, out, out))))
        z = self.act1(self.bn1(z.view(b * 4, c, out, out))).view(b, 4, c, out, out)
        return _max_over_phases(z)  # (B, C, 14, 14)

    def _block(self, x: torch.Tensor, conv: nn.Module, bn: nn.Module, act: nn.Module, pool: nn.Module) -> torch.Tensor:
        if isinstance(pool, nn.MaxPool2d) and self._fast_path(x):
            # PyTorch's CPU max pool is ~9x faster on channels-last maps (it vectorises over
            # channels) than on small planes like 10x10; the two copies cost less than that.
            pool = _channels_last_max_pool
        if self.cfg.pool_first:
            return act(bn(pool(conv(x))))
        return pool(act(bn(conv(x))))

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, 28, 28) raw pixels in [0, 255]. Returns logits (B, num_classes)."""
        x = (x * (1.0 / 255.0) - self.cfg.mean) * (1.0 / self.cfg.std)
        if self.cfg.pad_to_32:
            # Pad with the normalised value of a black pixel, so the border looks like MNIST background.
            x = F.pad(x, (2, 2, 2, 2), value=-self.cfg.mean / self.cfg.std)  # (B, 1, 32, 32)
        if self._fast_path(x) and self._polyphase_ok:
            x = self._c1_block_polyphase(x)
        else:
            x = self._block(x, self.c1, self.bn1, self.act1, self.s2)  # (B, 6, 14, 14)
        x = self._block(x, self.c3, self.bn3, self.act3, self.s4)  # (B, 16, 5, 5)
        x = torch.flatten(x, 1)  # (B, 400)
        x = self.drop(self.act5(self.c5(x)))  # (B, 120)
        x = self.drop(self.act6(self.f6(x)))  # (B, 84)
        return self.out(x)  # (B, 10)


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


def for_inference(model: LeNet5) -> LeNet5:
    """An eval-mode model with the same function, batch norm folded into the convolutions where exact.

    Batch norm in eval mode is a per-channel affine map s*z + t. Folded into the conv before
    it (weights times s, bias s*b + t), it disappears from the graph. After a max pool
    (pool-first blocks) that is exact only when s*max(z) = max(s*z), i.e. s >= 0; we fold
    when every s > 0, and then the block can also run as conv -> ReLU -> pool (ReLU commutes
    with max), which onnxruntime fuses into one kernel. Pool-last blocks always fold. When a
    pool-first model has a scale <= 0, it is returned as it is, batch norm and all.
    Used for ONNX export, so the usual graph is Conv -> ReLU -> MaxPool.
    """
    cfg = model.cfg
    if not (cfg.batch_norm and cfg.pooling == "max" and cfg.activation == "relu"):
        return model.eval()
    blocks = ((model.c1, model.bn1), (model.c3, model.bn3))
    scales = []
    for conv, bn in blocks:
        if type(conv) is not nn.Conv2d or not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
            return model.eval()
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        if cfg.pool_first and not bool((scale > 0).all()):
            return model.eval()
        scales.append(scale)
    folded = LeNet5(dataclasses.replace(cfg, batch_norm=False, pool_first=False)).to(model.c1.weight.device)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("c1.", "bn1.", "c3.", "bn3."))}
    missing, unexpected = folded.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"c1.weight", "c1.bias", "c3.weight", "c3.bias"}:
        raise ValueError(f"cannot fold batch norm: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for (conv, bn), scale, target in zip(blocks, scales, (folded.c1, folded.c3)):
            bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
            target.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
            target.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    folded.fast_cpu_kernels = model.fast_cpu_kernels
    return folded.eval()


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, not counting weights that C3's connection table switches off."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    masked = sum(m.masked_weights() for m in model.modules() if isinstance(m, MaskedConv2d))
    return total - masked
