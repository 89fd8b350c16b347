"""The training loop. Reports progress through `Events`, returns a TrainResult; never prints.

The whole data set sits on the training device as uint8; each step slices a batch and
runs `recipe.train_step` on it. Shuffling draws from a CPU generator seeded by --seed, so
the order of examples does not depend on the device. After every epoch (and when a stop is
requested mid-epoch) the run's complete state goes to `on_checkpoint`; `resume` continues
from such a state to exactly the weights of an uninterrupted run (on the CPU).

Under torchrun (`dist` active) the same loop runs in every process on its slice of each global
batch, in DistributedDataParallel (distributed.py says how the work is split); only rank 0
validates, and stops are agreed on every step so that all processes stop at the same one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lenet_cli.devices import describe_device
from lenet_cli.errors import UsageError
from lenet_cli.events import Events
from lenet_cli.model.metrics import summarize, torch_logits
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.distributed import (
    SINGLE,
    DistContext,
    ShardWeight,
    any_rank,
    check_shardable,
    shard,
    sum_over_ranks,
    wrap_ddp,
)
from lenet_cli.training.divergence import check_losses, check_states
from lenet_cli.training.recipe import (
    augment_batch,
    resolve_precision,
    to_device,
)
from lenet_cli.training.resume import check_resumable, restore
from lenet_cli.training.setup import build_setup
from lenet_cli.training.state import (
    EpochRecord,
    TrainResult,
    TrainState,
    copied,
    cpu_state,
)
from lenet_cli.utils.signals import StopSignal

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lenet_cli.data.mnist import MnistSplit

Checkpointer = Callable[[TrainState], None]
PROGRESS_EVERY = 20  # steps between progress reports (each reads the loss: a GPU sync)


def select_best(cfg: TrainConfig, record: EpochRecord, has_val: bool, best_score: float) -> float | None:
    """The score that makes this epoch best.safetensors, or None when an earlier epoch stays best.

    Model selection uses the validation split (never the test set); without one, the last
    epoch. A finished one-cycle run ends at a learning rate near zero, where the model is at
    its best, so its last epoch is its result: an earlier epoch's higher validation accuracy is
    mostly noise at this scale (5,000 images: a standard error of ~0.13 points).
    """
    score = record.val_acc if has_val else float(record.epoch)
    finished_cycle = cfg.schedule == "onecycle" and record.epoch == cfg.epochs
    return score if finished_cycle or score > best_score else None


class _Run:
    """One training run's moving parts: model, optimizer, schedule, generator, data and bookkeeping."""

    def __init__(self, cfg: TrainConfig, model_cfg: Any, train_split: "MnistSplit", val_split: "MnistSplit",
                 device: "torch.device", resume: TrainState | None, dist: DistContext = SINGLE) -> None:
        import torch

        self.cfg, self.device, self.resume, self.dist = cfg, device, resume, dist
        n = len(train_split)
        self.bs = min(cfg.batch_size, n)
        self.steps = 1 if cfg.dry_run else math.ceil(n / self.bs)
        self.setup = build_setup(cfg, model_cfg, device, self.steps)
        s = self.setup
        self.model, self.net, self.opt, self.sched, self.ema, self.gen = s.model, s.net, s.opt, s.sched, s.ema, s.gen
        # With --ema the run's result is the moving average: it is what validation sees and what is saved.
        self.result_model = s.result_model
        # The whole data set goes to the device once: no DataLoader, no per-sample Python.
        self.x_train, self.y_train = train_split.images.to(device), train_split.labels.to(device).long()
        self.x_val, self.y_val = val_split.images.to(device), val_split.labels.to(device).long()
        self.n = n
        self.step_net = self.net
        if dist.active:
            check_shardable(self.n, self.bs, dist.world_size)
            self.weight = ShardWeight(1.0 / dist.world_size)
            self.step_net = wrap_ddp(self.net, device, self.weight)
        self.history: list[EpochRecord] = []
        self.best_score, self.best_epoch = -1.0, 0
        self.best_state: dict[str, torch.Tensor] = {}
        self.start_epoch, self.start_step, self.prior_seconds = 1, 0, 0.0
        self.started = time.perf_counter()
        # MPS has no float64: the running loss sum stays in float32 there.
        self.acc_dtype = torch.float32 if device.type == "mps" else torch.float64
        if resume is not None:
            check_resumable(resume, cfg, self.n, self.steps)
            restore(resume, self.model, self.opt, self.sched, self.gen, device, self.ema)
            self.history = list(resume.history)
            self.best_score, self.best_epoch = resume.best_score, resume.best_epoch
            self.best_state = dict(resume.best_state)
            self.start_epoch, self.start_step = resume.epochs_done + 1, resume.step
            self.prior_seconds = resume.train_seconds
        # The weights of the last completed epoch: what a resumed run holds at an epoch boundary.
        # Resumed mid-epoch, they are not in memory, and an earlier session has written them already.
        self.last_state = cpu_state(self.result_model) if self.history and self.start_step == 0 else {}

    def seconds(self) -> float:
        """Training time so far, earlier sessions of a resumed run included."""
        return self.prior_seconds + time.perf_counter() - self.started

    def snapshot(self, epochs_done: int, step: int, perm=None, sums=None) -> TrainState:
        """The run's complete state between two steps, as CPU copies."""
        import torch

        return TrainState(
            config=self.cfg, epochs_done=epochs_done, step=step, model=cpu_state(self.model),
            optimizer=copied(self.opt.state_dict()), scheduler=self.sched.state_dict(),
            rng_shuffle=self.gen.get_state(), rng_torch=torch.get_rng_state(),
            rng_cuda=torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            history=list(self.history), best_epoch=self.best_epoch, best_score=self.best_score,
            best_state=self.best_state, perm=None if perm is None else perm.to("cpu"), sums=sums,
            train_seconds=self.seconds(),
            extra={"train_size": self.n, "steps_per_epoch": self.steps, "world_size": self.dist.world_size},
            model_config=self.model.cfg, ema=None if self.ema is None else cpu_state(self.ema),
        )

    def epoch_start(self, epoch: int) -> tuple["torch.Tensor", int, list[float]]:
        """This epoch's order of examples, its first step and its running sums (loss, correct, seen, seconds).

        The first epoch of a run resumed mid-epoch continues with the saved order and sums.
        """
        import torch

        r = self.resume
        if epoch == self.start_epoch and self.start_step > 0 and r is not None and r.perm is not None:
            sums = r.sums.tolist() if r.sums is not None else [0.0, 0.0, 0.0, 0.0]
            if not self.dist.is_main:  # the saved sums are the global ones: counted once, by rank 0
                sums = [0.0, 0.0, 0.0, sums[3]]
            return r.perm.to(self.device), self.start_step, sums
        return to_device(torch.randperm(self.n, generator=self.gen), self.device), 0, [0.0, 0.0, 0.0, 0.0]

    def run_epoch(self, epoch: int, events: Events, stop: StopSignal) -> tuple[int | None, list[float]]:
        """Train one epoch. Returns the step it stopped after (None: it ran to its end) and its sums."""
        import torch

        self.step_net.train()
        events.on_epoch_start(epoch, self.steps)
        perm, first, sums = self.epoch_start(epoch)
        self.perm = perm  # saved with a mid-epoch checkpoint
        loss_sum = torch.full((), sums[0], device=self.device, dtype=self.acc_dtype)
        correct = torch.full((), int(sums[1]), device=self.device, dtype=torch.long)
        seen, carried, start, done = int(sums[2]), float(sums[3]), time.perf_counter(), 0
        # Every step's loss, kept on the device: divergence is checked where the loop reads the device
        # anyway (progress, a stop, the epoch's end), and this says at which step it began.
        losses = torch.zeros(self.steps, device=self.device, dtype=torch.float32)
        checked, stopped_at = first, None
        augment = self.cfg.augments(epoch)
        for step in range(first, self.steps):
            idx = perm[step * self.bs : (step + 1) * self.bs]
            if self.dist.active:
                loss, logits, y = self._shard_step(idx, augment)
            else:
                y = self.y_train[idx]
                loss, logits = self.setup.step(self.x_train[idx], y, augment)
            # Accumulate on the device; a .item() per step would synchronise the GPU every step.
            losses[step] = loss
            loss_sum += loss.to(self.acc_dtype) * y.shape[0]
            correct += (logits.argmax(1) == y).sum()
            seen += y.shape[0]
            done += idx.shape[0]  # images of the global batch: every process's share
            last = step == self.steps - 1
            if step % PROGRESS_EVERY == 0 or last or stop.requested:
                self._check_finite(losses, checked, step + 1, epoch)
                checked = step + 1
                elapsed = time.perf_counter() - start
                events.on_step(epoch, step + 1, self.steps, loss.item(), done / max(elapsed, 1e-9))
            # A stop asked for during this step (a signal, or by on_step itself) ends the epoch here; the
            # losses up to this step were checked just above. Under torchrun, in every process at once.
            if self.stop_agreed(stop) and not last:
                stopped_at = step + 1
                break
        totals = [loss_sum.item(), float(correct.item()), float(seen)]
        if self.dist.active:
            totals = sum_over_ranks(totals, self.device)
        return stopped_at, [*totals, carried + time.perf_counter() - start]

    def _shard_step(self, idx: "torch.Tensor", augment: bool) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """This process's train_step on its slice of the global batch `idx`; also returns the slice's labels."""
        lo, hi = shard(idx.shape[0], self.dist.rank, self.dist.world_size)
        x = self.x_train[idx]
        if augment:
            # Augmentation is drawn for the whole global batch, then sliced: every process's generator
            # draws what a single process draws (the next shuffle agrees everywhere), and each image gets
            # the warp it gets in a single-process run of the same seed, whatever the number of processes.
            x = augment_batch(x.unsqueeze(1).float(), self.cfg, self.gen).squeeze(1)
        self.weight.value = (hi - lo) / idx.shape[0]
        y = self.y_train[idx[lo:hi]]
        # Augmented above (or not at all): the step itself must not augment again.
        loss, logits = self.setup.step(x[lo:hi], y, augment=False, net=self.step_net)
        return loss, logits, y

    def stop_agreed(self, stop: StopSignal) -> bool:
        """Whether to stop now: `stop.requested`; under torchrun, whether any process asked (one all-reduce).

        torchrun forwards a signal to every process, but they receive it at different steps; each
        process would otherwise stop at its own step and wait forever in the others' next collective.
        Every process calls this at the same points, and all get the same answer.
        """
        if not self.dist.active:
            return stop.requested
        if any_rank(stop.requested, self.device):
            stop.request()  # no-op where it was asked for; elsewhere the same request (and its notice)
            return True
        return False

    def _check_finite(self, losses: "torch.Tensor", start: int, stop: int, epoch: int) -> None:
        check_losses(losses, start, stop, epoch, self.steps, self.cfg.lr)

    def check_weights(self, epoch: int, step: int) -> None:
        """DivergedError when a parameter or buffer is NaN or infinite (before any checkpoint of them)."""
        states = [self.model.state_dict()] + ([] if self.ema is None else [self.ema.state_dict()])
        check_states(states, epoch, step, self.steps, self.cfg.lr)

    def end_epoch(self, epoch: int, sums: list[float]) -> EpochRecord:
        """Validate, record the epoch and keep its weights as best where `select_best` says so."""
        from lenet_cli.model.cpu_paths import speed_up

        net = self.net if self.ema is None else speed_up(self.result_model, self.device)
        # Under torchrun rank 0 alone validates (the others wait at the next collective): its figures are
        # those of the weights it saves, computed as in a single process.
        val = (summarize(torch_logits(net, self.x_val), self.y_val)
               if self.x_val.shape[0] and self.dist.is_main else None)
        loss_sum, correct, seen, seconds = sums
        record = EpochRecord(
            epoch=epoch, train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1),
            val_loss=val.loss if val else float("nan"), val_acc=val.accuracy if val else float("nan"),
            lr=self.opt.param_groups[0]["lr"], seconds=seconds, images_per_s=seen / max(seconds, 1e-9),
        )
        self.history.append(record)
        self.last_state = cpu_state(self.result_model)
        score = select_best(self.cfg, record, val is not None, self.best_score)
        if score is not None:
            self.best_score, self.best_epoch, self.best_state = score, epoch, self.last_state
        return record

    def result(self, interrupted: bool, stopped_in: tuple[int, int, int] | None) -> TrainResult:
        """What the run produced."""
        from lenet_cli.model.lenet5 import count_parameters

        return TrainResult(
            history=self.history, best_epoch=self.best_epoch, best_state=self.best_state,
            last_state=self.last_state, model=self.model, param_count=count_parameters(self.model),
            device=str(self.device), train_seconds=self.seconds(), interrupted=interrupted, stopped_in=stopped_in,
        )


def train(
    cfg: TrainConfig,
    train_split: "MnistSplit",
    val_split: "MnistSplit",
    device: "torch.device",
    events: Events | None = None,
    *,
    resume: TrainState | None = None,
    stop: StopSignal | None = None,
    on_checkpoint: Checkpointer | None = None,
    dist: DistContext = SINGLE,
) -> TrainResult:
    """Train a LeNet-5 preset and return its history and best/last states.

    `stop.requested` ends the run at the end of the current step (`interrupted=True`).
    A bare KeyboardInterrupt (no StopSignal handler installed) stops at once and
    returns the completed epochs. Under torchrun (`dist`), every process calls this with the same
    arguments; pass `on_checkpoint` on rank 0 only.
    """
    from lenet_cli.model.lenet5 import count_parameters, preset_config

    cfg.validate()
    cfg = resolve_precision(cfg, device)  # callers that record the config resolve it first (api.train does)
    events, stop = events or Events(), stop or StopSignal()
    try:
        model_cfg = preset_config(cfg.preset)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    if resume is not None and resume.model_config is not None:
        # The model the run started with; it trains at temperature 1 whatever the file says (calibrate.py).
        model_cfg = dataclasses.replace(resume.model_config, temperature=1.0)
    if len(train_split) == 0:
        raise UsageError("The training set is empty.")
    run = _Run(cfg, model_cfg, train_split, val_split, device, resume, dist)
    events.on_start({"preset": cfg.preset, "epochs": cfg.epochs, "device": describe_device(device),
                     "precision": cfg.precision,
                     "param_count": count_parameters(run.model), "train_size": run.n,
                     "val_size": int(run.x_val.shape[0]), "steps_per_epoch": run.steps, "history": list(run.history),
                     "resumed_from": (run.start_epoch, run.start_step) if resume is not None else None})
    run.started = time.perf_counter()
    interrupted, stopped_in = False, None
    for epoch in range(run.start_epoch, cfg.epochs + 1):
        try:
            stopped_at, sums = run.run_epoch(epoch, events, stop)
        except KeyboardInterrupt:
            if stop.requested:  # the second Ctrl-C: quit now (the last checkpoint is on disk)
                raise
            # A Ctrl-C with no StopSignal handler installed lands anywhere inside a step, so this
            # epoch's partial state is not trustworthy; keep the completed epochs only.
            interrupted = True
            break
        if stopped_at is not None:
            run.check_weights(epoch, stopped_at)
            if on_checkpoint is not None:
                import torch

                on_checkpoint(run.snapshot(epoch - 1, stopped_at, run.perm, torch.tensor(sums, dtype=torch.float64)))
            interrupted, stopped_in = True, (epoch, stopped_at, run.steps)
            break
        run.check_weights(epoch, run.steps)
        events.on_epoch_end(run.end_epoch(epoch, sums))
        if on_checkpoint is not None:
            on_checkpoint(run.snapshot(epoch, 0))
        if run.stop_agreed(stop):  # a signal during validation: every process ends here or none does
            interrupted = epoch < cfg.epochs
            break
    if not run.history and stopped_in is None:
        raise KeyboardInterrupt
    return run.result(interrupted, stopped_in)

