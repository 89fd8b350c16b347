"""kernels.py's CPU speed paths compute model.py's plain layers: same outputs, same gradients.

The rest of the suite runs with LENET_CPU_KERNELS=0 (conftest.py), i.e. the device-generic
layers CUDA runs; these tests are where the CPU-only paths are held to them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lenet_cli.model import cpu_paths as kernels
from lenet_cli.model import lenet5 as model_mod
from lenet_cli.data.mnist import load_split, train_val_split
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.loop import train

CPU = torch.device("cpu")


@pytest.mark.parametrize("overrides", [
    {},  # modern: conv -> pool -> norm -> ReLU
    {"pool_first": False},  # lenet 0.1.0's modern: conv -> norm -> ReLU -> pool
    {"batch_norm": False},
    {"batch_norm": False, "pool_first": False},
    {"activation": "scaled_tanh"},
    {"activation": "scaled_tanh", "pool_first": False},
    {"pad_to_32": True, "pooling": "trainable_avg", "activation": "scaled_tanh", "batch_norm": False},  # classic-like
])
def test_cpu_kernels_match_plain_layers(overrides):
    """The polyphase C1 block and the channels-last pool compute the plain layers' function and gradients."""
    torch.manual_seed(0)
    m = model_mod.build_model(model_mod.ModelConfig(dropout=0.0, **overrides)).train()
    fast = kernels.CpuLeNet5(m)
    x = torch.rand(24, 1, 28, 28) * 255
    x[:3] = 0  # blank images: every 2x2 window ties
    results = []
    for net in (fast, m):
        m.zero_grad()
        out = net(x)
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
    (out_fast, grads_fast), (out_plain, grads_plain) = results
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-5)
    for name, g in grads_plain.items():
        scale = g.abs().max().item() or 1.0
        assert (grads_fast[name] - g).abs().max().item() <= 1e-4 * scale, name
    fast.eval()  # inference (batch >= 16) takes the fast path too, and eval() reaches the plain model
    assert not m.training
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), m(x), rtol=1e-5, atol=1e-5)


def test_cpu_model_shares_the_plain_models_parameters_and_state():
    m = model_mod.build_model("modern")
    fast = kernels.CpuLeNet5(m)
    assert [id(p) for p in fast.parameters()] == [id(p) for p in m.parameters()]
    assert set(fast.state_dict()) == {f"model.{k}" for k in m.state_dict()}  # never saved: the plain one is


def test_max_over_phases_is_max_pooling_with_its_gradient():
    """On the 2x2 phases of an image, the phase max is max_pool2d: values, and gradients on ties too."""
    torch.manual_seed(0)
    img = torch.randn(5, 3, 14, 14)
    img[:, 0] = 1.0  # every window ties
    img[:, 1, :, ::2] = img[:, 1, :, 1::2]  # ties between columns
    img.requires_grad_(True)
    # z[:, 2*a + d, c, i, j] = img[:, c, 2*i + a, 2*j + d]: phase (a, d) in raster order
    z = img.view(5, 3, 7, 2, 7, 2).permute(0, 3, 5, 1, 2, 4).reshape(5, 4, 3, 7, 7)
    g = torch.rand(5, 3, 7, 7) + 0.5
    (grad_phases,) = torch.autograd.grad(kernels.max_over_phases(z), img, g)
    (grad_pool,) = torch.autograd.grad(F.max_pool2d(img, 2), img, g)
    torch.testing.assert_close(kernels.max_over_phases(z), F.max_pool2d(img, 2))
    assert torch.equal(grad_phases, grad_pool)


def test_speed_up_is_explicit_and_cpu_only(monkeypatch):
    m = model_mod.build_model("modern")
    monkeypatch.setenv(kernels.ENV_SWITCH, "1")
    assert isinstance(kernels.speed_up(m, CPU), kernels.CpuLeNet5)
    assert kernels.speed_up(m, torch.device("meta")) is m  # any other device runs the plain layers
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    assert kernels.speed_up(m, CPU) is m


def test_training_with_cpu_kernels_is_deterministic_and_close_to_plain(tiny_mnist, monkeypatch):
    """The CPU paths train the same model: same seed, same weights; and within rounding of the plain run."""
    cfg = TrainConfig(epochs=1, batch_size=64, val_size=100, seed=2)
    splits = train_val_split(load_split(tiny_mnist, "train", allow_download=False), cfg.val_size)
    monkeypatch.setenv(kernels.ENV_SWITCH, "1")
    a, b = train(cfg, *splits, CPU), train(cfg, *splits, CPU)
    for k in a.last_state:
        assert torch.equal(a.last_state[k], b.last_state[k]), k
    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    plain = train(cfg, *splits, CPU)
    assert abs(plain.history[-1].val_acc - a.history[-1].val_acc) <= 0.05
