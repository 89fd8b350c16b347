"""The recipe's levers: the weights' moving average (--ema), one recipe for every budget, --tta, --precision,
--clean-epochs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from resumable import StopAt  # the Events that asks for a stop at (epoch, step), as a Ctrl-C would
from typer.testing import CliRunner

from lenet_cli.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from lenet_cli.cli.app import app
from lenet_cli.data.mnist import load_split, train_val_split
from lenet_cli.errors import UsageError, WeightsError
from lenet_cli.events import Events
from lenet_cli.training.config import TrainConfig
from lenet_cli.utils.signals import StopSignal
from lenet_cli.training.loop import train
from lenet_cli.inference.tta import SHIFTS, shifted, tta_logits
from lenet_cli.model.weights import read_info

CPU = torch.device("cpu")
# clean_epochs=0: both epochs augmented, as in a long run (the default would leave the second unaugmented).
EMA = TrainConfig(epochs=2, batch_size=64, val_size=100, seed=3, ema_decay=0.9, clean_epochs=0)


@pytest.fixture(scope="module")
def splits(tiny_mnist):
    return train_val_split(load_split(tiny_mnist, "train", allow_download=False), EMA.val_size)


@pytest.fixture(scope="module")
def ema_run(splits):
    return train(EMA, *splits, CPU)


def test_ema_run_saves_the_average_not_the_last_step(splits, ema_run):
    plain = train(TrainConfig(**{**EMA.__dict__, "ema_decay": 0.0}), *splits, CPU)
    # Same seed, same steps: the raw weights are the plain run's; the saved ones are their average.
    for name, value in plain.last_state.items():
        if value.is_floating_point():
            assert torch.equal(ema_run.model.state_dict()[name].cpu(), value), name
    differs = [k for k, v in ema_run.last_state.items() if v.is_floating_point() and not torch.equal(v, plain.last_state[k])]
    assert differs, "the saved weights should be the moving average"
    assert ema_run.last_state.keys() == plain.last_state.keys()


@pytest.mark.parametrize("epoch, step", [(1, 2), (2, 1)])
def test_ema_run_resumes_to_the_same_average(splits, ema_run, tmp_path, epoch, step):
    stop, ckpt = StopSignal(), tmp_path / CHECKPOINT_NAME
    train(EMA, *splits, CPU, StopAt(stop, epoch, step), stop=stop, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    state = load_checkpoint(ckpt)
    assert state.ema is not None and "n_averaged" in state.ema
    resumed = train(EMA, *splits, CPU, resume=state)
    for k, v in ema_run.last_state.items():
        assert torch.equal(v, resumed.last_state[k]), k
    assert [r.val_loss for r in resumed.history] == [r.val_loss for r in ema_run.history]


def test_a_checkpoint_without_its_average_is_a_clear_error(splits, tmp_path):
    stop, ckpt = StopSignal(), tmp_path / CHECKPOINT_NAME
    train(EMA, *splits, CPU, StopAt(stop, 1, 1), stop=stop, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    state = load_checkpoint(ckpt)
    state.ema = None
    with pytest.raises(WeightsError, match="moving average"):
        train(EMA, *splits, CPU, resume=state)


def test_files_from_before_the_average_existed_ran_without_one():
    data = TrainConfig().to_dict("auto")
    del data["ema_decay"], data["stroke"], data["precision"], data["clean_epochs"]
    cfg = TrainConfig.from_dict(data)
    assert (cfg.ema_decay, cfg.stroke, cfg.precision, cfg.clean_epochs) == (0.0, 0.0, "float32", 0)


def test_every_budget_takes_one_recipe_but_the_clean_epochs_and_options_win():
    assert TrainConfig.for_budget(15) == TrainConfig()
    for epochs in (1, 2, 5):
        cfg = TrainConfig.for_budget(epochs)
        assert (cfg.batch_size, cfg.lr, cfg.label_smoothing) == (128, 1e-2, 0.1)
    assert TrainConfig.for_budget(1, batch_size=32, lr=None).batch_size == 32
    assert TrainConfig.for_budget(1, batch_size=32, lr=None).lr == TrainConfig.lr
    # The last two epochs are unaugmented, but never the first: one of two, none of one.
    assert [TrainConfig.for_budget(e).clean_epochs for e in (1, 2, 3, 15)] == [0, 1, 2, 2]
    assert TrainConfig.for_budget(15, clean_epochs=5).clean_epochs == 5
    # A given value is capped as the default is, so files record the clean epochs that ran.
    assert TrainConfig.for_budget(3, clean_epochs=5).clean_epochs == 2
    assert TrainConfig.for_budget(1, clean_epochs=5).clean_epochs == 0


def test_clean_epochs_are_the_last_ones_and_only_where_augmenting():
    cfg = TrainConfig(epochs=5, clean_epochs=2)
    assert [cfg.augments(e) for e in range(1, 6)] == [True, True, True, False, False]
    assert not any(TrainConfig(epochs=5, augment=False).augments(e) for e in range(1, 6))
    # The first epoch is always augmented, whatever clean_epochs says.
    assert [TrainConfig(epochs=2, clean_epochs=3).augments(e) for e in (1, 2)] == [True, False]
    assert [TrainConfig(epochs=1).augments(1), TrainConfig(epochs=1, augment=False).augments(1)] == [True, False]
    assert all(TrainConfig(epochs=2, clean_epochs=0).augments(e) for e in range(1, 3))
    with pytest.raises(UsageError):
        TrainConfig(clean_epochs=-1).validate()


def test_the_loop_skips_augmentation_in_the_clean_epochs(splits, monkeypatch):
    from lenet_cli.training import recipe

    augmented = []  # the epoch of every augmented batch
    real = recipe.augment_batch
    monkeypatch.setattr(recipe, "augment_batch", lambda x, cfg, gen: augmented.append(len(epochs)) or real(x, cfg, gen))
    epochs, steps = [], []

    class Count(Events):
        def on_epoch_start(self, epoch, n):
            epochs.append(epoch)
            steps.append(n)

    train(TrainConfig(epochs=3, batch_size=128, val_size=100, seed=3, clean_epochs=2), *splits, CPU, Count())
    assert epochs == [1, 2, 3] and set(augmented) == {1} and len(augmented) == steps[0] > 1


@pytest.mark.parametrize("bad", ["-0.1", "1.0"])
def test_ema_out_of_range_is_a_usage_error(bad):
    result = CliRunner().invoke(app, ["train", "--ema", bad])
    assert result.exit_code == 2


def test_shifted_moves_pixels_and_fills_with_black():
    a = np.zeros((1, 28, 28), np.uint8)
    a[0, 0, 0], a[0, 27, 27] = 200, 100
    down_right = shifted(a, 1, 1)
    assert down_right[0, 1, 1] == 200 and down_right.sum() == 200  # the corner pixel left the image
    assert shifted(a, -1, -1)[0, 26, 26] == 100
    assert (shifted(a, 0, 0) == a).all()


def test_tta_averages_probabilities_over_the_nine_views():
    seen = []

    def logits_fn(x):  # a "model" whose logits say which view it saw (the row the first pixel landed in)
        seen.append(x.shape[0])
        out = np.zeros((x.shape[0], 10), np.float32)
        out[np.arange(x.shape[0]), x.reshape(x.shape[0], -1).argmax(1) % 10] = 5.0
        return out

    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 10, 10] = 255
    probs = np.exp(tta_logits(logits_fn, images))
    assert seen == [3 * len(SHIFTS)]
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # Each view puts its mass on its own class, so the average spreads over several classes.
    assert (probs.max(1) < 0.9).all()


def test_eval_tta_reports_the_accuracy_of_the_averaged_probabilities(tiny_mnist):
    from lenet_cli.inference.backends import load_backend
    from lenet_cli.model.weights import bundled_onnx_path

    test = load_split(tiny_mnist, "test", allow_download=False)
    expected = tta_logits(load_backend(bundled_onnx_path()).logits, test.images.numpy()).argmax(1)
    result = CliRunner().invoke(app, ["eval", "--weights", str(bundled_onnx_path()), "--data-dir", str(tiny_mnist),
                                      "--no-download", "--no-plots", "--json", "--tta"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tta"] is True
    assert data["correct"] == int((expected == test.labels.numpy()).sum())


def test_predict_tta_changes_the_probabilities_not_the_rows(tmp_path, tiny_mnist):
    from PIL import Image

    test = load_split(tiny_mnist, "test", allow_download=False)
    Image.fromarray(test.images[0].numpy()).save(tmp_path / "d.png")
    runner = CliRunner()
    plain = runner.invoke(app, ["predict", str(tmp_path / "d.png"), "--json"])
    tta = runner.invoke(app, ["predict", str(tmp_path / "d.png"), "--json", "--tta"])
    assert plain.exit_code == 0 and tta.exit_code == 0, tta.output
    a, b = json.loads(plain.stdout), json.loads(tta.stdout)
    rows_a, rows_b = a["results"], b["results"]
    assert rows_a[0].keys() == rows_b[0].keys()
    assert rows_a[0]["confidence"] != rows_b[0]["confidence"]


def test_elastic_distortion_is_seeded_smooth_and_off_by_default():
    from lenet_cli.training.recipe import augment_batch, elastic_field

    x = torch.rand(8, 1, 28, 28) * 255
    a = augment_batch(x, TrainConfig(elastic=34.0), torch.Generator().manual_seed(1))
    b = augment_batch(x, TrainConfig(elastic=34.0), torch.Generator().manual_seed(1))
    plain = augment_batch(x, TrainConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, plain)
    field = elastic_field(4, 28, 28, 34.0, torch.Generator().manual_seed(0))
    assert field.shape == (4, 2, 28, 28)
    # Smoothed: neighbouring displacements are close, far ones are not tied.
    step = (field[..., 1:] - field[..., :-1]).abs().mean()
    assert step < 0.2 * field.abs().mean()


def test_stroke_jitter_thickens_and_thins_within_the_dilation_and_erosion():
    from lenet_cli.training.recipe import augment_batch, jitter_stroke, max3x3

    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 8:20, 13:15] = 255.0  # a bar two pixels wide
    y = jitter_stroke(x, 1.0, torch.Generator().manual_seed(0))
    dilated = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -torch.nn.functional.max_pool2d(-x, 3, stride=1, padding=1)
    assert torch.all(y <= dilated) and torch.all(y >= eroded)
    ink = y.sum((1, 2, 3))
    assert (ink > x[0].sum()).any() and (ink < x[0].sum()).any()  # some thicker, some thinner
    assert torch.equal(jitter_stroke(x, 1.0, torch.Generator().manual_seed(0)), y)
    # Off by default: the augmentation draws nothing more, so older runs keep their exact images.
    r = torch.rand(8, 1, 28, 28) * 255
    assert torch.equal(max3x3(r), torch.nn.functional.max_pool2d(r, 3, stride=1, padding=1))
    plain = augment_batch(r, TrainConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(plain, augment_batch(r, TrainConfig(stroke=0.0), torch.Generator().manual_seed(1)))
    assert not torch.equal(plain, augment_batch(r, TrainConfig(stroke=0.5), torch.Generator().manual_seed(1)))


def test_train_cli_passes_the_levers(monkeypatch):
    from lenet_cli import api

    seen = []
    monkeypatch.setattr(api, "train", lambda request, events=None: seen.append(request) or (_ for _ in ()).throw(SystemExit(0)))
    CliRunner().invoke(app, ["train", "--epochs", "2", "--ema", "0.99", "--elastic", "20", "--stroke", "0.5",
                             "--precision", "bf16", "--clean-epochs", "1"])  # 2 epochs: one may be clean
    (request,) = seen
    cfg = request.config
    assert (cfg.ema_decay, cfg.elastic, cfg.stroke, cfg.precision, cfg.clean_epochs) == (0.99, 20.0, 0.5, "bf16", 1)
    assert (cfg.batch_size, cfg.lr, cfg.label_smoothing) == (128, 1e-2, 0.1)


BF16 = TrainConfig(epochs=2, batch_size=64, val_size=100, seed=3, precision="bf16", clean_epochs=0)


def test_precision_auto_is_bf16_only_on_a_cpu_with_amx(monkeypatch):
    from lenet_cli.training import recipe

    for amx, want in ((True, "bf16"), (False, "float32")):
        monkeypatch.setattr(recipe, "cpu_has_amx", lambda amx=amx: amx)
        assert recipe.resolve_precision(TrainConfig(), CPU).precision == want
        # Not measured on GPUs: float32 there; an explicit choice is kept as given.
        assert recipe.resolve_precision(TrainConfig(), torch.device("meta")).precision == "float32"
        assert recipe.resolve_precision(TrainConfig(precision="float32"), CPU).precision == "float32"
        assert recipe.resolve_precision(BF16, torch.device("meta")).precision == "bf16"


def test_a_bf16_run_is_deterministic_differs_from_float32_and_resumes_exactly(splits, tmp_path):
    # bfloat16 autocast runs on any CPU (slowly without AMX): these hold on every machine.
    first, again = train(BF16, *splits, CPU), train(BF16, *splits, CPU)
    fp32 = train(TrainConfig(**{**BF16.__dict__, "precision": "float32"}), *splits, CPU)
    for k, v in first.last_state.items():
        assert torch.equal(v, again.last_state[k]), k
        assert v.dtype == fp32.last_state[k].dtype, k  # the weights stay float32
    assert any(not torch.equal(v, fp32.last_state[k]) for k, v in first.last_state.items() if v.is_floating_point())
    stop, ckpt = StopSignal(), tmp_path / CHECKPOINT_NAME
    train(BF16, *splits, CPU, StopAt(stop, 1, 2), stop=stop, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    state = load_checkpoint(ckpt)
    assert state.config.precision == "bf16"
    resumed = train(state.config, *splits, CPU, resume=state)
    for k, v in first.last_state.items():
        assert torch.equal(v, resumed.last_state[k]), k


def test_train_records_the_precision_that_ran(tiny_mnist, tmp_path, monkeypatch):
    from lenet_cli.training import recipe

    monkeypatch.setattr(recipe, "cpu_has_amx", lambda: True)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--epochs", "1", "--dry-run", "--val-size", "100", "--data-dir",
                                      str(tiny_mnist), "--no-download", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["precision"] == "bf16"
    assert load_checkpoint(out / CHECKPOINT_NAME).config.precision == "bf16"
    info, _ = read_info(out / "best.safetensors")
    assert info.training["precision"] == "bf16"
    # A resumed run keeps its precision: asking for another one is a clash, not a silent switch.
    again = CliRunner().invoke(app, ["train", "--resume", str(out), "--precision", "float32", "--data-dir",
                                     str(tiny_mnist), "--no-download"])
    assert again.exit_code == 2 and "--precision" in again.output
    # The start line says when the forward pass runs in bf16.
    shown = CliRunner().invoke(app, ["train", "--epochs", "1", "--dry-run", "--val-size", "100", "--data-dir",
                                     str(tiny_mnist), "--no-download", "-o", str(tmp_path / "shown")])
    assert shown.exit_code == 0, shown.output
    assert ", bf16 autocast:" in shown.output
