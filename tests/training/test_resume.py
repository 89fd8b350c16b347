"""Checkpoints and --resume: a stopped run continues to exactly the same weights; damaged or edited
checkpoints are clear errors. Ctrl-C, SIGTERM and `lenet train --resume` in real processes: test_resume_cli.py."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resumable import CFG, CPU, StopAt, assert_same_states
from safetensors.torch import load_file

from lenet_cli.errors import WeightsError
from lenet_cli.model.lenet5 import build_model
from lenet_cli.training.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
)
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.loop import train
from lenet_cli.training.recipe import resolve_precision
from lenet_cli.utils.signals import StopSignal


@pytest.mark.parametrize("epoch, step", [(1, 1), (2, 1), (2, 8)], ids=["first-epoch", "mid-epoch", "epoch-end"])
def test_interrupted_and_resumed_equals_uninterrupted(splits, uninterrupted, tmp_path, epoch, step):
    stop = StopSignal()
    ckpt = tmp_path / CHECKPOINT_NAME
    first = train(CFG, *splits, CPU, StopAt(stop, epoch, step), stop=stop,
                  on_checkpoint=lambda state: save_checkpoint(ckpt, state))
    assert first.interrupted
    state = load_checkpoint(ckpt)
    if step < 8:  # 500 images / 64 = 8 steps: step 1 is inside the epoch, step 8 ends it
        assert first.stopped_in == (epoch, 1, 8)
        assert (state.epochs_done, state.step) == (epoch - 1, 1)
        assert state.perm is not None
    else:
        assert first.stopped_in is None and (state.epochs_done, state.step) == (epoch, 0)
    resumed = train(CFG, *splits, CPU, resume=state)
    assert not resumed.interrupted
    assert_same_states(uninterrupted.last_state, resumed.last_state)
    assert_same_states(uninterrupted.best_state, resumed.best_state)
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert [r.val_loss for r in resumed.history] == [r.val_loss for r in uninterrupted.history]
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in uninterrupted.history]


def test_resume_refuses_other_settings(splits, tmp_path):
    stop = StopSignal()
    ckpt = tmp_path / CHECKPOINT_NAME
    train(CFG, *splits, CPU, StopAt(stop, 1, 1), stop=stop, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    from lenet_cli.errors import UsageError

    with pytest.raises(UsageError, match="lr"):
        train(TrainConfig(**{**CFG.to_dict(), "lr": 0.1}), *splits, CPU, resume=load_checkpoint(ckpt))


def test_checkpoint_is_safetensors_without_pickle(splits, tmp_path):
    ckpt = tmp_path / CHECKPOINT_NAME
    train(TrainConfig(**{**CFG.to_dict(), "epochs": 1}), *splits, CPU, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    tensors = load_file(ckpt)  # plain safetensors: raw arrays and a JSON header
    assert {"rng.shuffle", "rng.torch"} <= tensors.keys()
    assert any(k.startswith("optim.") for k in tensors) and any(k.startswith("model.") for k in tensors)
    # Nothing but the safetensors layout: an 8-byte length, a JSON header, then the raw tensor bytes
    # that the header accounts for, to the last byte. There is no room for a pickle.
    raw = ckpt.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    assert 8 + n + max(ends) == len(raw)
    # The device stays under "config" (as in every earlier checkpoint) though it is not part of the recipe.
    # The config is the one that ran: --precision auto made concrete for this CPU.
    ran = resolve_precision(CFG, CPU).to_dict()
    assert ran["precision"] in ("float32", "bf16")
    assert json.loads(header["__metadata__"]["lenet_checkpoint"])["config"] == ran | {"epochs": 1, "device": "auto"}


def _rewrite_header(path: Path, edit) -> None:
    """Change a checkpoint's JSON header in place, keeping the tensors (a hand-edited or hostile file)."""
    from safetensors.torch import load, save

    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8 : 8 + n])["__metadata__"]
    h = json.loads(meta["lenet_checkpoint"])
    edit(h)
    meta["lenet_checkpoint"] = json.dumps(h)
    path.write_bytes(save(load(raw), metadata=meta))


@pytest.mark.parametrize("edit", [
    lambda h: h["config"].update(epochs="15"),
    lambda h: h["config"].update(batch_size=2.5),
    lambda h: h["config"].update(epochs=0),
    lambda h: h.update(history=[1, 2]),
    lambda h: h.update(scheduler=[]),
    lambda h: h.update(step=3),  # mid-epoch without the epoch's order of examples
    lambda h: h.update(epochs_done=-1),
    lambda h: h["model_config"].update(preset="classic"),
    lambda h: h["model_config"].update(c1="6"),
    lambda h: h["model_config"].update(activation="gelu"),
    lambda h: h["model_config"].update(c5=10**9),  # must fail on the meta device, not allocate
], ids=["epochs-string", "batch-float", "epochs-zero", "history-list", "scheduler-list", "step-no-perm",
        "negative-epoch", "model-of-other-preset", "model-width-string", "unknown-activation", "huge-layer"])
def test_hand_edited_checkpoints_are_clear_errors(splits, tmp_path, edit):
    ckpt = tmp_path / CHECKPOINT_NAME
    train(TrainConfig(**{**CFG.to_dict(), "epochs": 1}), *splits, CPU, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    _rewrite_header(ckpt, edit)
    with pytest.raises(WeightsError, match="damaged checkpoint"):
        load_checkpoint(ckpt)


def test_checkpoint_of_a_pool_last_model_resumes_that_model(splits, tmp_path):
    """lenet 0.1.0's modern preset pooled last; its checkpoints must not resume as today's model."""
    ckpt = tmp_path / CHECKPOINT_NAME
    cfg = TrainConfig(**{**CFG.to_dict(), "epochs": 2})
    stop = StopSignal()
    train(cfg, *splits, CPU, StopAt(stop, 1, 8), stop=stop, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    assert load_checkpoint(ckpt).model_config.pool_first
    _rewrite_header(ckpt, lambda h: h["model_config"].pop("pool_first"))  # as lenet 0.1.0 wrote it
    state = load_checkpoint(ckpt)
    assert not state.model_config.pool_first
    resumed = train(cfg, *splits, CPU, resume=state)
    assert not resumed.model.cfg.pool_first
    assert len(resumed.history) == 2
    from lenet_cli.model.weights import load_model
    from lenet_cli.training.run_dir import save_run

    files = save_run(resumed, cfg, tmp_path / "run")
    assert not load_model(files["best"])[1].config.pool_first


def test_checkpoint_with_torch_optim_state_resumes_exactly(splits, uninterrupted, tmp_path):
    """Development builds of lenet 0.1.0 wrote torch.optim's fused AdamW and OneCycleLR state."""
    stop = StopSignal()
    ckpt = tmp_path / CHECKPOINT_NAME
    train(CFG, *splits, CPU, StopAt(stop, 2, 3), stop=stop, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    state = load_checkpoint(ckpt)
    # Pass the optimizer and schedule state through torch.optim, as if torch.optim had written it.
    model = build_model(state.model_config)
    groups = [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": CFG.weight_decay},
              {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=CFG.lr, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=CFG.lr, epochs=CFG.epochs, steps_per_epoch=8, pct_start=0.2)
    opt.load_state_dict(state.optimizer)
    sched.load_state_dict(state.scheduler)
    torch_written = dataclasses.replace(state, optimizer=opt.state_dict(), scheduler=sched.state_dict())
    assert "_schedule_phases" in torch_written.scheduler  # torch.optim's own fields
    save_checkpoint(ckpt, torch_written)
    resumed = train(CFG, *splits, CPU, resume=load_checkpoint(ckpt))
    assert_same_states(uninterrupted.last_state, resumed.last_state)


@pytest.mark.parametrize("edit", [
    lambda h: h["optimizer_param_groups"][0].update(lr="0.01"),
    lambda h: h["optimizer_param_groups"][0].update(betas=[0.9]),
    lambda h: h["optimizer_param_groups"][1].update(eps=None),
    lambda h: h["optimizer_param_groups"].pop(),
    lambda h: h["scheduler"].update(last_epoch=-1),
    lambda h: h["scheduler"].update(last_epoch=10**6),
    lambda h: h["scheduler"].update(last_epoch="3"),
    lambda h: h["scheduler"].update(total_steps=99),
    lambda h: h["scheduler"].pop("last_epoch"),
    lambda h: h["optimizer_state_keys"]["0"].pop("exp_avg_sq"),
    lambda h: h["optimizer_state_keys"].pop("3"),
    lambda h: h["optimizer_state_keys"]["0"].update(step="0"),
    lambda h: h["optimizer_state_keys"]["0"].update(step="1e400"),
    lambda h: h["optimizer_param_groups"].reverse(),  # each group lists the other's parameters
], ids=["lr-string", "one-beta", "eps-null", "one-group", "schedule-negative", "schedule-past-end",
        "schedule-string", "schedule-other-length", "schedule-no-position", "no-second-moment",
        "parameter-without-state", "step-zero", "step-overflow", "groups-swapped"])
def test_hand_edited_optimizer_state_is_a_clear_error(splits, tmp_path, edit):
    ckpt = tmp_path / CHECKPOINT_NAME
    cfg = TrainConfig(**{**CFG.to_dict(), "epochs": 2})
    stop = StopSignal()
    train(cfg, *splits, CPU, StopAt(stop, 1, 8), stop=stop, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    _rewrite_header(ckpt, edit)
    with pytest.raises(WeightsError, match="checkpoint"):
        train(cfg, *splits, CPU, resume=load_checkpoint(ckpt))


def _edit_rules(h: dict) -> None:
    """What a file may say but a run does not take from it: the update rule and the schedule's shape."""
    for group in h["optimizer_param_groups"]:
        group.update(amsgrad=True, maximize=True, decoupled_weight_decay=False, fused=None, foreach=True)
        group.pop("differentiable", None)
    h["scheduler"].update(_anneal_func_type="bogus", use_beta1=False, _schedule_phases="bogus")


def test_a_checkpoints_update_rule_and_schedule_shape_are_not_taken_from_the_file(splits, uninterrupted, tmp_path):
    stop = StopSignal()
    ckpt = tmp_path / CHECKPOINT_NAME
    train(CFG, *splits, CPU, StopAt(stop, 2, 3), stop=stop, on_checkpoint=lambda s: save_checkpoint(ckpt, s))
    _rewrite_header(ckpt, _edit_rules)
    resumed = train(CFG, *splits, CPU, resume=load_checkpoint(ckpt))
    assert_same_states(uninterrupted.last_state, resumed.last_state)


def test_a_finished_one_cycle_run_keeps_its_last_epoch(splits, uninterrupted):
    """The schedule's end is the result; with a constant rate, validation accuracy picks the epoch."""
    assert uninterrupted.best_epoch == CFG.epochs
    assert_same_states(uninterrupted.best_state, uninterrupted.last_state)
    constant = train(TrainConfig(**{**CFG.to_dict(), "schedule": "constant", "lr": 1e-3}), *splits, CPU)
    accs = [r.val_acc for r in constant.history]
    assert constant.best_epoch == accs.index(max(accs)) + 1


@pytest.mark.parametrize("damage", ["truncate", "garbage", "weights-file"])
def test_damaged_checkpoints_are_clear_errors(splits, tmp_path, damage):
    ckpt = tmp_path / CHECKPOINT_NAME
    if damage == "weights-file":
        from lenet_cli.model.weights import bundled_weights_path

        ckpt.write_bytes(bundled_weights_path().read_bytes())
    else:
        train(TrainConfig(**{**CFG.to_dict(), "epochs": 1}), *splits, CPU,
              on_checkpoint=lambda s: save_checkpoint(ckpt, s))
        raw = ckpt.read_bytes()
        ckpt.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else os.urandom(len(raw)))
    with pytest.raises(WeightsError, match="checkpoint"):
        load_checkpoint(ckpt)


def test_a_killed_checkpoint_save_leaves_the_previous_one(tmp_path):
    """SIGKILL in the middle of writing: the old file is still there and still loads."""
    target = tmp_path / "checkpoint.safetensors"
    target.write_bytes(b"previous good checkpoint")
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from lenet_cli.utils.fileio import atomic_write_with\n"
        "def writer(tmp):\n"
        "    with open(tmp, 'wb') as fh:\n"
        "        fh.write(b'x' * 100_000); fh.flush()\n"
        "        print('half', flush=True); time.sleep(60)\n"
        f"atomic_write_with(Path({str(target)!r}), writer)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half"
        proc.kill()
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"previous good checkpoint"
