"""Temperature scaling: fitted on the validation split by `lenet train`, carried in the model config,
applied by every path that runs the model (PyTorch, the CPU paths, ONNX)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lenet_cli.model.calibration import calibrated_logits, fit_temperature
from lenet_cli.cli.app import app
from lenet_cli.model.cpu_paths import CpuLeNet5
from lenet_cli.model.lenet5 import ModelConfig, build_model
from lenet_cli.model.weights import load_model, read_info


def test_fit_recovers_the_temperature_that_made_the_labels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 10, generator=gen) * 3
    for true_t in (0.5, 2.0):
        labels = torch.distributions.Categorical(logits=logits / true_t).sample()
        assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_the_fitted_temperature_minimises_the_loss_and_keeps_every_prediction():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2_000, 10, generator=gen) * 4
    labels = torch.distributions.Categorical(logits=logits / 1.7).sample()
    t = fit_temperature(logits, labels)
    best = F.cross_entropy(calibrated_logits(logits, t), labels).item()
    for other in (t * 0.9, t * 1.1, 1.0):
        assert best <= F.cross_entropy(logits / other, labels).item()
    assert torch.equal(calibrated_logits(logits, t).argmax(1), logits.argmax(1))
    assert fit_temperature(logits, labels) == t  # deterministic
    assert fit_temperature(logits[:0], labels[:0]) is None  # nothing to fit on


def test_no_temperature_is_fitted_where_there_is_nothing_to_fit():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2_000, 10, generator=gen)
    right, wrong = logits.argmax(1), (logits.argmax(1) + 1) % 10
    assert fit_temperature(logits, right) is None  # no mistake: the loss falls without end as T shrinks
    assert fit_temperature(logits, wrong) is None  # every one wrong: it falls as T grows
    assert fit_temperature(logits[:500], right[:500].roll(1)) is None  # under MIN_IMAGES
    # No mistake and wide margins: the loss reaches exactly 0.0 inside the range (a flat floor that
    # could stop the search there, at a T that would make every probability ~100%).
    sure = torch.randn(5_000, 10, generator=gen) + 12 * F.one_hot(right[:1].repeat(5_000), 10)
    assert F.cross_entropy(sure.double() * 10, sure.argmax(1)).item() == 0.0  # the floor is there
    assert fit_temperature(sure, sure.argmax(1)) is None


def test_the_config_carries_the_temperature_only_when_fitted():
    assert "temperature" not in json.loads(ModelConfig().to_json())  # files stay as they were
    cfg = dataclasses.replace(ModelConfig(), temperature=0.53)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="temperature"):
        dataclasses.replace(ModelConfig(), temperature=0.0).check()


def test_every_path_divides_the_logits_by_the_temperature():
    torch.manual_seed(0)
    plain = build_model("modern").eval()
    hot = build_model(dataclasses.replace(plain.cfg, temperature=0.5)).eval()
    hot.load_state_dict(plain.state_dict())
    x = torch.randint(0, 256, (32, 1, 28, 28)).float()
    with torch.no_grad():
        want = plain(x) * 2
        assert torch.allclose(hot(x), want, atol=1e-5)
        assert torch.allclose(CpuLeNet5(hot)(x), want, atol=1e-4)  # the CPU paths, from 16 images up


def test_train_saves_the_fitted_temperature_and_reports_calibrated_figures(tiny_mnist, tmp_path, monkeypatch):
    from lenet_cli.model import calibration as calibrate

    monkeypatch.setattr(calibrate, "MIN_IMAGES", 50)  # the synthetic set holds out 100 images
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--epochs", "2", "--val-size", "100", "--batch-size", "64",
                                      "--data-dir", str(tiny_mnist), "--no-download", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    info, _ = read_info(out / "best.safetensors")
    assert info.config.temperature == report["temperature"] != 1.0
    model, _ = load_model(out / "best.safetensors")
    assert model.cfg.temperature == report["temperature"]
    assert read_info(out / "last.safetensors")[0].config.temperature > 0
    assert "temperature" in result.output  # the result table says it


def test_a_run_without_a_validation_split_keeps_temperature_one(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--epochs", "1", "--val-size", "0", "--batch-size", "64",
                                      "--data-dir", str(tiny_mnist), "--no-download", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "none fitted" in result.output
    assert read_info(out / "best.safetensors")[0].config.temperature == 1.0
    # --json stays strict JSON without validation figures: null, never a bare NaN.
    result = CliRunner().invoke(app, ["train", "--epochs", "1", "--val-size", "0", "--batch-size", "64", "--json",
                                      "--data-dir", str(tiny_mnist), "--no-download", "-o", str(tmp_path / "j")])
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in --json")

    report = json.loads(result.stdout, parse_constant=refuse)
    assert report["temperature"] is None and report["val_accuracy"] is None
    assert report["history"][0]["val_loss"] is None
    json.loads((tmp_path / "j" / "history.json").read_text(), parse_constant=refuse)


@pytest.mark.slow
def test_an_exported_model_carries_the_temperature(tiny_mnist, trained_weights, tmp_path):
    import onnxruntime as ort

    from lenet_cli.model.weights import save_state

    model, _ = load_model(trained_weights)
    hot = save_state(tmp_path / "hot.safetensors", dataclasses.replace(model.cfg, temperature=0.25),
                     model.state_dict())
    result = CliRunner().invoke(app, ["export", "--onnx", "--weights", str(hot), "--output",
                                      str(tmp_path / "hot.onnx"), "--data-dir", str(tiny_mnist), "--no-download"])
    assert result.exit_code == 0, result.output
    x = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "hot.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy() * 4
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
