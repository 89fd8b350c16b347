"""CPU speed paths for LeNet-5: the same function as model.py's layers, computed faster on a CPU.

`speed_up(model, device)` returns, on the CPU, a `CpuLeNet5` that wraps the plain model
and shares its parameters and buffers (the optimizer, the state dict and the weights file
all see the plain model); anywhere else it returns the model itself. Nothing here changes
the model: export, CUDA and MPS always run model.py's plain layers. Tests hold the two
equal in outputs and gradients (tests/test_kernels.py).

What earns its place, measured on a 2-core CPU (README, "How fast, and where the time goes"):

* C1 as a polyphase 3x3 convolution: oneDNN pads a 1-channel input to 8 channels and
  reorders it on every forward and backward pass; over the image's four 2x2 phases the
  same convolution has 4 inputs (training: ~30% faster per step; inference: ~2x).
* the 2x2 max pool after it as a ReLU tree over the four phases, whose backward is three
  ReLU masks (amax's backward costs a quarter of the whole training step);
* max pooling on channels-last maps, which PyTorch vectorises over channels (~9x faster
  than on small planes like 10x10).

`LENET_CPU_KERNELS=0` turns them off: the CPU then runs exactly what CUDA runs (the tests do
this, so the device-generic path is the one they exercise).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from lenet_cli.model.lenet5 import IMAGE_SIZE, LeNet5

ENV_SWITCH = "LENET_CPU_KERNELS"
# In inference, below ~16 images the extra small ops cost more than they save
# (2 cores: batch 1 349 µs plain vs 424 µs; batch 64 2.9 ms plain vs 1.6 ms).
MIN_INFERENCE_BATCH = 16


def enabled() -> bool:
    """False when `LENET_CPU_KERNELS=0` asks for the plain layers on the CPU too."""
    return os.environ.get(ENV_SWITCH, "1").strip() not in ("0", "false", "off", "no")


def speed_up(model: LeNet5, device: torch.device) -> nn.Module:
    """The module to call for `model` on `device`: CpuLeNet5 on the CPU (when enabled), else `model`."""
    if device.type == "cpu" and enabled():
        return CpuLeNet5(model)
    return model


def max_over_phases(z: torch.Tensor) -> torch.Tensor:
    """max over dim 1 (the four 2x2 phases, in raster order) as a + relu(b - a) trees.

    Equal to z.amax(1) up to rounding. The gradient goes to one maximum, the first in raster
    order on ties, exactly where max pooling sends it (relu passes no gradient at 0).
    """
    if not z.requires_grad:
        return z.amax(1)  # inference: one pass, no backward to make cheap
    z0, z1, z2, z3 = z.unbind(1)
    m01 = z0 + torch.relu(z1 - z0)
    m23 = z2 + torch.relu(z3 - z2)
    return m01 + torch.relu(m23 - m01)


def channels_last_max_pool(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(x, 2), computed on a channels-last copy (the two copies cost less than they save)."""
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()


def polyphase_ok(model: LeNet5) -> bool:
    """The C1 block is a 5x5 conv with padding 2 and a 2x2 max pool (first or last, any activation)."""
    return not model.cfg.pad_to_32 and model.cfg.pooling == "max"


def c1_block_polyphase(model: LeNet5, x: torch.Tensor) -> torch.Tensor:
    """model's C1 -> S2 block on normalised (B, 1, 28, 28), as one 3x3 convolution over the image's 2x2 phases.

    The padded 32x32 image is split into its four 2x2 phases (4 channels of 16x16); each of
    the four output phases of the 5x5 convolution is then a 3x3 convolution over them, so
    one convolution with 4 inputs and 4*C1 outputs computes C1 at every pixel, and the 2x2
    max pool becomes a max over the four output phases. Same parameters and buffers: batch
    norm before the pool sees the same B*28*28 values per channel, and the activation is
    applied at every pixel before the max.
    """
    b = x.shape[0]
    w = model.c1.weight  # (C, 1, 5, 5)
    c = w.shape[0]
    phases = []
    for a in (0, 1):
        for d in (0, 1):
            # Output phase (a, d) sees the kernel shifted by (a, d) inside a 6x6 window; its
            # row 2*p + q is tap p of input phase q (columns likewise), input channel 2*q + r.
            wa = F.pad(w[:, 0], (d, 1 - d, a, 1 - a)).view(c, 3, 2, 3, 2)
            phases.append(wa.permute(0, 2, 4, 1, 3).reshape(c, 4, 3, 3))
    weight = torch.cat(phases, 0)  # (4*C, 4, 3, 3), output channel = phase * C + c
    bias = None if model.c1.bias is None else model.c1.bias.repeat(4)
    half = (IMAGE_SIZE + 4) // 2  # the padded 32x32 image in 2x2 phases of 16x16
    out = IMAGE_SIZE // 2  # 14: C1's 28x28 output in 2x2 phases
    xp = F.pad(x, (2, 2, 2, 2)).view(b, half, 2, half, 2)
    xp = xp.permute(0, 2, 4, 1, 3).reshape(b, 4, half, half)  # input channel = 2*q + r
    z = F.conv2d(xp, weight, bias)  # (B, 4*C, 14, 14)
    if model.cfg.pool_first:
        return model.act1(model.bn1(max_over_phases(z.view(b, 4, c, out, out))))
    z = model.act1(model.bn1(z.view(b * 4, c, out, out))).view(b, 4, c, out, out)
    return max_over_phases(z)  # (B, C, 14, 14)


class CpuLeNet5(nn.Module):
    """`model` with the CPU speed paths above; shares every parameter and buffer with it.

    Save and export `model` itself (`.model`), never this wrapper.
    """

    def __init__(self, model: LeNet5) -> None:
        super().__init__()
        self.model = model

    def _block(self, x: torch.Tensor, conv: nn.Module, bn: nn.Module, act: nn.Module, pool: nn.Module) -> torch.Tensor:
        if isinstance(pool, nn.MaxPool2d):
            pool = channels_last_max_pool
        if self.model.cfg.pool_first:
            return act(bn(pool(conv(x))))
        return pool(act(bn(conv(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The plain model's forward (raw pixels in, logits out), on the faster blocks."""
        m = self.model
        if not (m.training or x.shape[0] >= MIN_INFERENCE_BATCH):
            return m(x)
        x = m.normalize(x)
        if polyphase_ok(m):
            x = c1_block_polyphase(m, x)  # (B, 6, 14, 14)
        else:
            x = self._block(x, m.c1, m.bn1, m.act1, m.s2)
        x = self._block(x, m.c3, m.bn3, m.act3, m.s4)  # (B, 16, 5, 5)
        return m.classifier(x)
