"""Two steps of scripts/gpu_check.py that run inside their own process: ONNX parity and nccl.

Both go through lenet's own code (its backends, its process group, its DDP wrapper and step),
so what they prove is lenet's CUDA path, not a separate test of the libraries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DDP_STEPS = 3


def parity_probe(weights: Path, onnx: Path, data_dir: Path) -> dict[str, Any]:
    """The exported model under onnxruntime's CUDA provider against PyTorch on CUDA, on the test set."""
    import numpy as np
    import torch

    from lenet_cli.data.mnist import load_split
    from lenet_cli.inference.backends import OnnxBackend, TorchBackend

    images = load_split(data_dir, "test", allow_download=False).images
    from lenet_cli.devices import resolve_device

    device = os.environ.get("GPU_CHECK_DEVICE", "cuda")
    ort = OnnxBackend(onnx, device)  # DeviceError if the CUDA provider cannot start: no silent CPU fallback
    ref = TorchBackend(weights, resolve_device(device))
    a = torch.softmax(ref.logits_tensor(images), 1).cpu().numpy()
    b = np.asarray(torch.softmax(torch.from_numpy(ort.logits(images.numpy())), 1))
    return {"provider": ort.session.get_providers()[0], "torch_device": str(ref.torch_device),
            "images": int(images.shape[0]),
            "max_prob_diff": float(np.abs(a - b).max()), "agreement": float((a.argmax(1) == b.argmax(1)).mean())}


def nccl_probe() -> dict[str, Any]:
    """Under torchrun: lenet's process group on this process's GPU, one all_reduce, and DDP steps.

    DDP_STEPS training steps through lenet's DistributedDataParallel wrapper (its weighted-mean
    comm hook over nccl) must give the weights of the same steps without DDP: with one process,
    the all-reduce of a gradient is the gradient itself.
    """
    import dataclasses

    import torch
    import torch.distributed as dist

    from lenet_cli.devices import parse_device
    from lenet_cli.training.config import TrainConfig
    from lenet_cli.training.distributed import (
        DistContext,
        ShardWeight,
        process_group,
        rank_device,
        wrap_ddp,
    )
    from lenet_cli.training.recipe import resolve_precision
    from lenet_cli.training.setup import build_setup

    # detect() treats one process as no launch at all; this probe wants the process group anyway.
    ctx = DistContext(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                      local_rank=int(os.environ["LOCAL_RANK"]), local_world_size=int(os.environ["LOCAL_WORLD_SIZE"]))
    device = rank_device(ctx, parse_device(os.environ.get("GPU_CHECK_DEVICE", "cuda")))
    cfg = resolve_precision(dataclasses.replace(TrainConfig(), augment=False), device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (DDP_STEPS, 64, 28, 28), generator=gen, dtype=torch.uint8).to(device)
    y = torch.randint(0, 10, (DDP_STEPS, 64), generator=gen).to(device)
    with process_group(ctx, device) as joined:
        t = torch.full((1,), float(ctx.rank + 1), device=device)
        dist.all_reduce(t)
        all_reduce_ok = float(t.item()) == ctx.world_size * (ctx.world_size + 1) / 2
        plain, ddp = build_setup(cfg, "modern", device, DDP_STEPS), build_setup(cfg, "modern", device, DDP_STEPS)
        net = wrap_ddp(ddp.net, device, ShardWeight(1.0 / ctx.world_size))
        for i in range(DDP_STEPS):
            torch.manual_seed(i)  # the same dropout masks in both
            plain.step(x[i], y[i], augment=False)
            torch.manual_seed(i)
            ddp.step(x[i], y[i], augment=False, net=net)
        diff = max(float((p - q).abs().max()) for p, q in zip(plain.model.parameters(), ddp.model.parameters()))
        return {"backend": joined.backend, "world_size": ctx.world_size, "all_reduce_ok": all_reduce_ok,
                "ddp_max_diff": diff, "device": str(device)}


def compare_states(a: Path, b: Path) -> dict[str, Any]:
    """Two weights files' floating-point tensors: bit-identical or not, and their largest difference."""
    from safetensors.numpy import load_file

    x, y = load_file(str(a)), load_file(str(b))
    diffs = [float(abs(x[k].astype("float64") - y[k].astype("float64")).max()) for k in x if x[k].dtype.kind == "f"]
    return {"bit_identical": all((x[k] == y[k]).all() for k in x) and x.keys() == y.keys(),
            "max_abs_diff": max(diffs, default=0.0)}
