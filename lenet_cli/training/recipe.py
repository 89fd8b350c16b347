"""The training recipe: seeding, augmentation, optimizer, schedule and the one training step.

`train_step` (augment, forward, loss, backward, optimizer, schedule) is what the loop in
train.py runs and what `lenet bench` times, so the benchmark measures training itself.
Augmentation parameters are drawn from a CPU generator seeded by --seed, so the same seed
gives the same augmentation on every device.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING, Any

from lenet_cli.training.config import TrainConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

WARMUP_FRACTION = 0.2  # of the one-cycle schedule's steps


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (model init, dropout) on every device."""
    import torch

    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def to_device(t: "torch.Tensor", device: "torch.device", dtype: "torch.dtype | None" = None) -> "torch.Tensor":
    """A CPU tensor (random numbers drawn from the CPU generator) on `device`, in `dtype`.

    On CUDA it goes from pinned memory without blocking: `.to()` from ordinary (pageable) memory
    runs cudaStreamSynchronize, so each of up to three copies per augmented step would wait for all
    queued GPU work, and the CPU could never launch ahead of the GPU. Pinned memory is safe to copy
    from asynchronously: torch keeps the block until the copy is done.
    """
    if device.type == "cuda":
        return t.pin_memory().to(device, dtype, non_blocking=True)
    return t.to(device, dtype)


def augment_batch(x: "torch.Tensor", cfg: TrainConfig, gen: "torch.Generator") -> "torch.Tensor":
    """Random rotation, scale and shift of a batch (B, 1, 28, 28) with one affine warp.

    Then, with `cfg.elastic`, an elastic distortion in the same warp, and with `cfg.stroke`,
    stroke-width jitter (`jitter_stroke`). Parameters are drawn on the CPU from `gen` so the
    same seed gives the same augmentation on every device. Pixels outside the image are black
    (0), as in MNIST.
    """
    import torch
    import torch.nn.functional as F

    b, _, h, w = x.shape
    u = torch.rand(b, 4, generator=gen) * 2 - 1  # uniform in [-1, 1]
    angle = u[:, 0] * math.radians(cfg.max_rotation)
    scale = 1 + u[:, 1] * cfg.max_scale
    # grid_sample works in normalised coordinates where the image spans [-1, 1], i.e. 14 px per unit.
    shift = u[:, 2:] * (cfg.max_shift / 14.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    m = to_device(torch.stack([cos, -sin, shift[:, 0], sin, cos, shift[:, 1]], 1), x.device, x.dtype)
    m = m.view(b, 6, 1, 1)
    # The sampling grid of the affine map, written out: F.affine_grid computes the same grid with a
    # batched matmul that makes augmentation 2.8x slower on the CPU, 7% of a whole training step at
    # batch 256 on 2 cores (README, "How fast"; scripts/augment_timing.py measures it).
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1  # pixel centres (align_corners=False)
    ys = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1).view(h, 1)
    gx = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]
    gy = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    if cfg.elastic > 0:
        dx, dy = to_device(elastic_field(b, h, w, cfg.elastic, gen), x.device, x.dtype).unbind(1)
        gx, gy = gx + dx * (2.0 / w), gy + dy * (2.0 / h)  # pixels -> normalised coordinates
    x = F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=False)
    return jitter_stroke(x, cfg.stroke, gen) if cfg.stroke > 0 else x


def jitter_stroke(x: "torch.Tensor", strength: float, gen: "torch.Generator") -> "torch.Tensor":
    """Thicker or thinner strokes: each image moves a random part of the way to its 3x3 dilation or erosion.

    t is uniform in [-strength, strength] per image; t > 0 blends that much of the dilated image
    (a 3x3 max: pen strokes a pixel wider) in, t < 0 that much of the eroded one (a 3x3 min).
    MNIST's strokes are 2-3 pixels wide; pens, scanners and the drawing page vary that.
    """
    import torch

    t = (torch.rand(x.shape[0], generator=gen) * 2 - 1).mul_(strength)
    t = to_device(t, x.device, x.dtype).view(-1, 1, 1, 1)
    dilated, eroded = max3x3(x), -max3x3(-x)
    return x + t.clamp(min=0) * (dilated - x) + (-t).clamp(min=0) * (eroded - x)


def max3x3(x: "torch.Tensor") -> "torch.Tensor":
    """F.max_pool2d(x, 3, stride=1, padding=1) as a row max then a column max of shifted views.

    Same values; on one-channel planes about 5x faster on the CPU (batch 256 on 2 cores: 1.3 ms
    against 7.4 ms, twice per step, for a step of about 17 ms).
    """
    import torch
    import torch.nn.functional as F

    z = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(z[..., :-2], z[..., 1:-1]), z[..., 2:])  # (B, 1, H + 2, W)
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


ELASTIC_SIGMA = 4.0  # pixels: the smoothing of Simard et al. (2003), "Best practices for CNNs applied to visual document analysis"


def elastic_field(b: int, h: int, w: int, alpha: float, gen: "torch.Generator") -> "torch.Tensor":
    """Simard et al.'s elastic distortion: a random displacement field (B, 2, H, W) in pixels.

    Uniform noise in [-1, 1] per pixel and axis, smoothed by a Gaussian of ELASTIC_SIGMA pixels
    (normalised to sum 1), times `alpha`. Drawn on the CPU from `gen`, like the affine parameters.
    """
    import torch
    import torch.nn.functional as F

    radius = int(2 * ELASTIC_SIGMA)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * ELASTIC_SIGMA**2))
    k = k / k.sum()
    noise = (torch.rand(b * 2, 1, h, w, generator=gen) * 2 - 1)
    # Separable Gaussian: rows, then columns; zero padding, as outside the image there is no noise.
    noise = F.conv2d(noise, k.view(1, 1, 1, -1), padding=(0, radius))
    noise = F.conv2d(noise, k.view(1, 1, -1, 1), padding=(radius, 0))
    return (alpha * noise).view(b, 2, h, w)


def build_optimizer(model: "torch.nn.Module", cfg: TrainConfig, device: "torch.device") -> "torch.optim.Optimizer":
    """torch.optim's AdamW or SGD (Nesterov), fused where the device has fused kernels.

    No weight decay on biases and norm parameters (nanoGPT's split by p.dim()): decaying them only hurts.
    """
    import torch

    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    impl = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, **impl)
    return torch.optim.AdamW(groups, lr=cfg.lr, **impl)


def build_schedule(opt: "torch.optim.Optimizer", cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """torch's OneCycleLR over the whole run (cosine, momentum cycled), or a constant rate."""
    import torch

    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    total = cfg.epochs * steps_per_epoch
    pct = WARMUP_FRACTION
    if pct * total - 1 == 0:
        # OneCycleLR divides by the warm-up's length, which is 0 for 5 steps in all (`--dry-run --epochs 5`).
        pct = 1.5 / total
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=pct)


def build_ema(model: "torch.nn.Module", cfg: TrainConfig) -> Any:
    """torch's AveragedModel keeping an exponential moving average of the weights, or None.

    Batch-norm statistics are averaged with the weights (`use_buffers`), so the averaged model's
    statistics belong to its own weights.
    """
    if cfg.ema_decay == 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, where oneDNN runs bfloat16 convolutions and matmuls natively.

    torch has no public call for it (get_cpu_capability() says "AVX512" with or without AMX);
    torch.cpu._is_amx_tile_supported is what torch's own CPU tests use. Without it: False.
    """
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # noqa: BLE001 - a probe that fails means "don't rely on AMX"
        return False


def resolve_precision(cfg: TrainConfig, device: "torch.device") -> TrainConfig:
    """cfg with --precision auto made concrete for `device`: bf16 on a CPU with AMX, float32 elsewhere.

    On a 2-core Xeon with AMX, bf16 autocast trained 15 epochs 28% faster at the same validation
    accuracy (README, "How the recipe was chosen"); without AMX, bf16 convolutions are slower than
    float32, and on GPUs it is not measured yet. An explicit float32 or bf16 is kept as given.
    """
    if cfg.precision != "auto":
        return cfg
    use_bf16 = device.type == "cpu" and cpu_has_amx()
    return dataclasses.replace(cfg, precision="bf16" if use_bf16 else "float32")


def train_step(net: "torch.nn.Module", opt: "torch.optim.Optimizer", sched: Any, x: "torch.Tensor",
               y: "torch.Tensor", cfg: TrainConfig, gen: "torch.Generator",
               ema: Any = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """One training step on a uint8 batch x (B, 28, 28) and labels y (B,), both on the device.

    Augment, forward, loss, backward, optimizer, schedule, and the weights' moving average
    (`ema`, from `build_ema`). Returns the loss and the logits, detached and still on the
    device (reading them would synchronise a GPU).
    """
    import torch.nn.functional as F

    x = x.unsqueeze(1).float()  # (B, 1, 28, 28) raw pixels 0-255
    if cfg.augment:
        x = augment_batch(x, cfg, gen)
    # Callers that record the config resolve "auto" first (api.train); this keeps a direct call right too.
    if resolve_precision(cfg, x.device).precision == "bf16":
        import torch

        # Convolutions and matmuls in bfloat16 (AMX runs them natively); the loss and the
        # optimizer stay float32, and so do the weights: autocast only casts copies.
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            logits = net(x)
        logits = logits.float()
    else:
        logits = net(x)
    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    if ema is not None:
        ema.update_parameters(net)  # net shares its parameters and buffers, in order, with the model
    return loss.detach(), logits.detach()
