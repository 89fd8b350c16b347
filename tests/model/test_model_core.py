"""Direct tests of the core modules (no CLI). The MNIST files: tests/data/test_mnist.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lenet_cli import devices
from lenet_cli.data import mnist as data
from lenet_cli.model import lenet5 as model_mod
from lenet_cli.model import weights as weights_mod
from lenet_cli.errors import (
    DeviceError,
    ImageError,
    UsageError,
    WeightsError,
)
from lenet_cli.model.metrics import metrics_from_logits
from lenet_cli.utils.fileio import atomic_write_bytes
from lenet_cli.training.loop import TrainConfig, train

# ------------------------------------------------------------------ model


def test_modern_forward_shape_and_params():
    m = model_mod.build_model("modern")
    out = m(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert 60_000 < model_mod.count_parameters(m) < 63_000


def test_classic_matches_paper_layout():
    m = model_mod.build_model("classic")
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # C3 has 60 connections of 5x5 kernels in the paper's table, plus 16 biases: 1,516 parameters.
    c3 = m.c3
    assert int(c3.mask.sum()) == 60
    assert 60 * 25 + 16 == sum(p.numel() for p in c3.parameters()) - c3.masked_weights()
    # C1 156 + S2 12 + C3 1516 + S4 32 + C5 48120 + F6 10164 + output 850
    assert model_mod.count_parameters(m) == 156 + 12 + 1516 + 32 + 48120 + 10164 + 850


def test_c3_table_blocks_gradients_through_missing_connections():
    m = model_mod.build_model("classic")
    m(torch.rand(4, 1, 28, 28) * 255).sum().backward()
    masked_grad = m.c3.weight.grad * (1 - m.c3.mask)
    assert torch.count_nonzero(masked_grad) == 0


def test_model_config_json_roundtrip_and_unknown_keys():
    cfg = model_mod.PRESETS["classic"]
    assert model_mod.ModelConfig.from_json(cfg.to_json()) == cfg
    bad = json.loads(cfg.to_json()) | {"bogus": 1}
    with pytest.raises(ValueError, match="bogus"):
        model_mod.ModelConfig.from_json(json.dumps(bad))


@pytest.mark.parametrize("pool_first", [True, False])
@pytest.mark.parametrize("negative_scale", [False, True])
@pytest.mark.slow
def test_export_folds_batch_norm_where_exact(pool_first, negative_scale):
    import onnx
    import onnxruntime as ort

    from lenet_cli.export.graph import export_model_proto, fold_batch_norm

    torch.manual_seed(0)
    m = model_mod.build_model(model_mod.ModelConfig(pool_first=pool_first))
    with torch.no_grad():  # batch norm as after training: running statistics, scales of both signs
        for bn in (m.bn1, m.bn3):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        if negative_scale:
            m.bn3.weight[3] = -0.7
    m.eval()
    x = torch.rand(16, 1, 28, 28) * 255
    with torch.no_grad():
        expected = m(x)
        torch.testing.assert_close(fold_batch_norm(m)(x), expected, rtol=1e-4, atol=1e-4)
    proto = export_model_proto(m)
    ops = {n.op_type for n in proto.graph.node}
    # After a max pool, a negative scale does not commute with max: that model keeps its batch norm.
    assert ("BatchNormalization" in ops) == (pool_first and negative_scale)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)
    onnx.checker.check_model(proto)


def test_pool_first_is_modern_and_missing_means_pool_last():
    assert model_mod.PRESETS["modern"].pool_first
    assert not model_mod.PRESETS["classic"].pool_first
    old = json.loads(model_mod.PRESETS["modern"].to_json())
    del old["pool_first"]  # a weights file written by lenet 0.1.0
    assert not model_mod.ModelConfig.from_json(json.dumps(old)).pool_first
    # Pool-last configs are written without the key, as lenet 0.1.0 wrote (and reads) them.
    pool_last = model_mod.ModelConfig(pool_first=False)
    assert "pool_first" not in json.loads(pool_last.to_json())
    assert model_mod.ModelConfig.from_json(pool_last.to_json()) == pool_last
    # The two orders are different functions of the same parameters.
    torch.manual_seed(0)
    a = model_mod.build_model(model_mod.ModelConfig(pool_first=True)).eval()
    b = model_mod.build_model(model_mod.ModelConfig(pool_first=False)).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        a.bn1.weight.uniform_(-1, 1)
        b.bn1.weight.copy_(a.bn1.weight)
        x = torch.rand(4, 1, 28, 28) * 255
        assert not torch.allclose(a(x), b(x))


def test_plots_do_not_import_pyplot(tmp_path):
    """Figures are drawn without pyplot's global state (no figure to close or leak)."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from lenet_cli.training import plots; from lenet_cli.training.state import EpochRecord\n"
        "h = [EpochRecord(i, 1 / i, 0.9, 1 / i, 0.9, 0.1, 1.0, 1.0) for i in (1, 2)]\n"
        f"plots.save_training_curves(h, Path({str(tmp_path / 'c.png')!r}))\n"
        f"plots.save_confusion_matrix([[5, 1], [0, 7]], Path({str(tmp_path / 'm.png')!r}))\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ devices


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:1", "mps", " CPU "])
def test_device_spec_valid(spec):
    devices.parse_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cpu:0", "mps:1", "tpu", ""])
def test_device_spec_invalid(spec):
    with pytest.raises(UsageError, match="Invalid device"):
        devices.parse_device(spec)


def test_cuda_absent_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA was requested"):
        devices.resolve_device("cuda")
    assert devices.resolve_device("cpu").type == "cpu"


def test_mps_absent_is_an_error(monkeypatch):
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    with pytest.raises(DeviceError, match="MPS"):
        devices.resolve_device("mps")


# ------------------------------------------------------------------ training


def test_training_learns_and_is_deterministic(tiny_mnist):
    full = data.load_split(tiny_mnist, "train", allow_download=False)
    tr, va = data.train_val_split(full, 100)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=5e-3, val_size=100, seed=3)
    r1 = train(cfg, tr, va, torch.device("cpu"))
    r2 = train(cfg, tr, va, torch.device("cpu"))
    assert len(r1.history) == 3
    assert r1.history[-1].val_acc > 0.3  # well above chance (0.1) on the synthetic digits
    for k in r1.last_state:
        assert torch.equal(r1.last_state[k], r2.last_state[k]), k


def test_train_config_validation():
    with pytest.raises(UsageError, match="--lr"):
        TrainConfig(lr=-1).validate()
    with pytest.raises(UsageError, match="--epochs"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(UsageError, match="--batch-size"):
        TrainConfig(batch_size=0).validate()


# ------------------------------------------------------------------ evaluate


def test_metrics_from_logits():
    labels = torch.tensor([0, 0, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 2])
    logits = torch.nn.functional.one_hot(preds, 3).float() * 5
    r = metrics_from_logits(logits, labels, num_classes=3)
    assert r.correct == 4 and r.accuracy == pytest.approx(0.8)
    assert r.confusion == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert r.per_class[0].recall == pytest.approx(0.5) and r.per_class[1].precision == pytest.approx(2 / 3)
    assert r.misclassified == [1]


# ------------------------------------------------------------------ weights


def test_weights_roundtrip_and_metadata(tmp_path):
    m = model_mod.build_model("classic")
    path = weights_mod.save_weights(tmp_path / "w.safetensors", m, training={"epochs": 1}, metrics={"test_accuracy": 0.5})
    loaded, info = weights_mod.load_model(path)
    assert info.config.preset == "classic" and info.param_count == model_mod.count_parameters(m)
    assert info.metrics["test_accuracy"] == 0.5 and info.classes == tuple("0123456789")
    x = torch.rand(2, 1, 28, 28) * 255
    m.eval()
    assert torch.equal(m(x), loaded(x))
    assert b"\x80\x04" not in path.read_bytes()[:16]  # not a pickle


def test_corrupt_and_foreign_weights(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a valid safetensors"):
        weights_mod.load_model(bad)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(WeightsError, match="not a lenet weights file"):
        weights_mod.load_model(foreign)


def test_weights_for_other_shape_are_rejected(tmp_path):
    m = model_mod.build_model("modern")
    path = weights_mod.save_weights(tmp_path / "w.safetensors", m)
    info, tensors = weights_mod.read_info(path)
    # Relabel the modern tensors as a classic model: the shapes do not match.
    from safetensors.torch import save

    meta = weights_mod.build_metadata(model_mod.build_model("classic"))
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(save(tensors, metadata=meta))
    with pytest.raises(WeightsError, match="does not match"):
        weights_mod.load_model(wrong)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"good")
    import os

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(Exception, match="Disk full"):
        atomic_write_bytes(target, b"bad")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_bundled_weights_load():
    path = weights_mod.bundled_weights_path()
    m, info = weights_mod.load_model(path)
    assert info.config.preset == "modern"
    assert info.config.pool_first  # trained by today's `lenet train` (README, "The bundled model")
    assert info.metrics["test_accuracy"] >= 0.994


def test_a_lenet_0_1_0_weights_file_loads_as_the_pool_last_model_it_is():
    # The bundled model of lenet 0.1.0, kept as a fixture: no pool_first key, so pool last.
    path = Path(__file__).parents[1] / "fixtures" / "weights-0.1.0-modern.safetensors"
    m, info = weights_mod.load_model(path)
    assert info.config.preset == "modern" and not info.config.pool_first
    assert info.metrics["test_accuracy"] >= 0.993


# ------------------------------------------------------------------ images


def test_mnist_like_image_passes_through(tiny_mnist):
    from lenet_cli.data.preprocess import to_mnist

    split = data.load_split(tiny_mnist, "test", allow_download=False)
    px = split.images[0].numpy()
    prepared = to_mnist(px.astype(np.float32) / 255)
    assert prepared.passthrough and np.array_equal(prepared.pixels, px)


def test_dark_on_light_large_canvas_is_normalised():
    from PIL import Image, ImageDraw

    from lenet_cli.data.preprocess import to_mnist

    img = Image.new("L", (600, 400), 245)
    ImageDraw.Draw(img).line([(300, 60), (300, 340)], fill=20, width=4)  # a thin "1"
    prepared = to_mnist(np.asarray(img, dtype=np.float32) / 255)
    px = prepared.pixels
    assert prepared.inverted and px.shape == (28, 28)
    assert px[0].max() == 0 and px[:, 0].max() == 0  # black border
    rows = np.flatnonzero(px.max(1) > 50)
    assert 17 <= rows[-1] - rows[0] + 1 <= 21  # fitted into the 20-pixel box
    assert (px > 128).sum(1).max() >= 2  # the thin stroke was thickened


def test_blank_image_has_no_ink():
    from lenet_cli.data.preprocess import to_mnist

    with pytest.raises(ImageError, match="no ink"):
        to_mnist(np.full((50, 50), 0.8, dtype=np.float32))
