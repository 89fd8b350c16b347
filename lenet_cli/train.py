"""The training loop. Reports progress through an observer, returns metrics; never prints.

The whole data set sits on the training device as uint8; each step slices a batch,
converts it to float and (optionally) augments it with one batched affine warp.
Shuffling and augmentation draw from a CPU generator seeded by --seed, so the
order of examples does not depend on the device.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenet_cli.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lenet_cli.checkpoint import TrainState
    from lenet_cli.data import MnistSplit
    from lenet_cli.model import LeNet5
    from lenet_cli.optim import Constant, FlatOptimizer, OneCycle


@dataclass(frozen=True)
class TrainConfig:
    """All settings of a training run. Saved in the weights file's metadata."""

    preset: str = "modern"
    epochs: int = 15
    batch_size: int = 256  # the fastest per image on a 2-core CPU that keeps >= 99.3%
    lr: float = 6e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 5e-4
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9  # for sgd
    schedule: str = "onecycle"  # onecycle | constant
    label_smoothing: float = 0.0
    augment: bool = True
    max_rotation: float = 8.0  # degrees
    max_shift: float = 2.0  # pixels
    max_scale: float = 0.08  # +/- fraction
    val_size: int = 5000
    seed: int = 0
    device: str = "auto"
    dry_run: bool = False  # one batch per epoch: a quick check that everything runs

    def validate(self) -> None:
        """Raise UsageError for settings that cannot work."""
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, got {self.lr}.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UsageError(f"--weight-decay must be a number >= 0, got {self.weight_decay}.")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.val_size < 0:
            raise UsageError(f"--val-size must be >= 0, got {self.val_size}.")
        if self.optimizer not in ("adamw", "sgd"):
            raise UsageError(f"--optimizer must be adamw or sgd, got {self.optimizer!r}.")
        if self.schedule not in ("onecycle", "constant"):
            raise UsageError(f"--schedule must be onecycle or constant, got {self.schedule!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for metadata and JSON output."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EpochRecord:
    """One row of the per-epoch table."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    images_per_s: float


@dataclass
class TrainResult:
    """What a run produced: history, best epoch and the models' states (CPU tensors)."""

    history: list[EpochRecord]
    best_epoch: int
    best_state: dict[str, "torch.Tensor"]
    last_state: dict[str, "torch.Tensor"]
    model: "LeNet5"
    param_count: int
    device: str
    train_seconds: float
    interrupted: bool = False
    stopped_in: tuple[int, int, int] | None = None  # (epoch, steps done, steps) when stopped mid-epoch
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> EpochRecord | None:
        """The epoch saved as best.safetensors (see the model selection at the end of each epoch in `train`)."""
        return next((r for r in self.history if r.epoch == self.best_epoch), None)


class TrainObserver:
    """Receives progress; the CLI subclasses it to draw Rich progress. Methods are no-ops here."""

    def on_start(self, info: dict[str, Any]) -> None:
        """Called once the data is on the device and the model is built."""

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        """Called before the first step of an epoch."""

    def on_step(self, epoch: int, step: int, steps: int, loss: float, images_per_s: float) -> None:
        """Called every few steps with the running loss."""

    def on_epoch_end(self, record: EpochRecord) -> None:
        """Called after validation at the end of an epoch."""


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (model init, dropout) on every device."""
    import torch

    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def keep_freed_memory() -> None:
    """Let glibc reuse freed memory for the training step's tensors instead of unmapping it.

    A CPU step allocates and frees dozens of 1-10 MB tensors. glibc serves blocks that big
    with mmap and unmaps them on free, so each step page-faults its tensors in again; with
    the thresholds raised they stay in the heap (batch 512 on 2 cores: ~25% more images/s).
    A process-wide setting that stays for the life of the process: a notebook that trains
    keeps up to 512 MiB of freed heap. Only the training paths call it; a no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: glibc's maximum, 32 MiB on 64-bit
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD: keep up to 512 MiB of free heap
    except (OSError, AttributeError):  # not glibc (musl): nothing to tune
        pass


def augment_batch(x: "torch.Tensor", cfg: TrainConfig, gen: "torch.Generator") -> "torch.Tensor":
    """Random rotation, scale and shift of a batch (B, 1, 28, 28) with one affine warp.

    Parameters are drawn on the CPU from `gen` so the same seed gives the same
    augmentation on every device. Pixels outside the image are black (0), as in MNIST.
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
    m = torch.stack([cos, -sin, shift[:, 0], sin, cos, shift[:, 1]], 1).to(x.device, x.dtype).view(b, 6, 1, 1)
    # The sampling grid of the affine map, written out: F.affine_grid does the same with a
    # batched matmul that costs twice as much as this on the CPU.
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1  # pixel centres (align_corners=False)
    ys = ((torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1).view(h, 1)
    gx = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]
    gy = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=False)


def _optimizer(model: "LeNet5", cfg: TrainConfig) -> "FlatOptimizer":
    from lenet_cli.optim import FlatOptimizer

    # No weight decay on biases and norm parameters: decaying them only hurts.
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return FlatOptimizer(groups, cfg.optimizer, cfg.lr, momentum=cfg.momentum)


def _scheduler(opt: "FlatOptimizer", cfg: TrainConfig, steps_per_epoch: int) -> "OneCycle | Constant":
    from lenet_cli.optim import Constant, OneCycle

    if cfg.schedule == "constant":
        return Constant(opt)
    return OneCycle(opt, cfg.lr, cfg.epochs * steps_per_epoch, pct_start=0.2)


class StopSignal:
    """A request to stop after the current step, set by Ctrl-C or SIGTERM (see `catch_signals`) or by a caller."""

    def __init__(self) -> None:
        self.requested = False
        self.on_request: list[Callable[[], None]] = []

    def request(self) -> None:
        """Ask the loop to stop at the end of the current step."""
        if not self.requested:
            self.requested = True
            for callback in self.on_request:
                callback()

    @contextlib.contextmanager
    def catch_signals(self) -> Iterator["StopSignal"]:
        """While active, the first Ctrl-C (SIGINT) or SIGTERM requests a stop; a second one aborts at once.

        Stopping between steps (not wherever the signal lands) is what makes the saved
        checkpoint consistent: the optimizer and the schedule have both stepped. SIGTERM is
        what job schedulers and `kill` send before they give up on a process.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return

        def handler(signum, frame):  # noqa: ARG001 - signal handler signature
            if self.requested:
                raise KeyboardInterrupt
            self.request()

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:  # e.g. a background job of a script: ignored stays ignored
                continue
            previous[sig] = old
            signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                # None: the old handler was not set from Python; the default is the closest match.
                default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
                signal.signal(sig, old if old is not None else default)


def _cpu_state(model: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _copied(value: Any) -> Any:
    """A deep copy of an optimizer state_dict's tensors (the live ones change at the next step)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


def train(
    cfg: TrainConfig,
    train_split: "MnistSplit",
    val_split: "MnistSplit",
    device: "torch.device",
    observer: TrainObserver | None = None,
    *,
    resume: "TrainState | None" = None,
    stop: StopSignal | None = None,
    on_checkpoint: Callable[["TrainState"], None] | None = None,
) -> TrainResult:
    """Train a LeNet-5 preset and return its history and best/last states.

    `on_checkpoint` receives the run's complete state after every epoch and when a
    stop is requested mid-epoch; `resume` continues from such a state. On the CPU a
    resumed run ends with exactly the weights of an uninterrupted one: the order of
    examples, the augmentation and dropout draws, the optimizer moments and the
    schedule all continue from where they stopped.

    `stop.requested` ends the run at the end of the current step (`interrupted=True`).
    A bare KeyboardInterrupt (no StopSignal handler installed) stops at once and
    returns the completed epochs.
    """
    import torch
    import torch.nn.functional as F

    from lenet_cli.checkpoint import TrainState
    from lenet_cli.evaluate import summarize, torch_logits
    from lenet_cli.model import build_model, count_parameters, preset_config

    cfg.validate()
    observer = observer or TrainObserver()
    stop = stop or StopSignal()
    try:
        model_cfg = preset_config(cfg.preset)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    if resume is not None and resume.model_config is not None:
        model_cfg = resume.model_config  # the model the run started with
    if len(train_split) == 0:
        raise UsageError("The training set is empty.")

    seed_everything(cfg.seed)
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    model = build_model(model_cfg).to(device)
    param_count = count_parameters(model)

    # The whole data set goes to the device once: no DataLoader, no per-sample Python.
    x_train = train_split.images.to(device)
    y_train = train_split.labels.to(device).long()
    x_val = val_split.images.to(device)
    y_val = val_split.labels.to(device).long()

    n = x_train.shape[0]
    bs = min(cfg.batch_size, n)
    steps = 1 if cfg.dry_run else math.ceil(n / bs)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, steps)
    gen = torch.Generator().manual_seed(cfg.seed)  # CPU generator: device-independent shuffling

    history: list[EpochRecord] = []
    best_score, best_epoch = -1.0, 0
    best_state: dict[str, torch.Tensor] = {}
    start_epoch, start_step, prior_seconds = 1, 0, 0.0
    if resume is not None:
        _check_resumable(resume, cfg, n, steps)
        try:
            model.load_state_dict({k: v.to(device) for k, v in resume.model.items()})
            opt.load_state_dict(resume.optimizer)
            sched.load_state_dict(resume.scheduler)
            gen.set_state(resume.rng_shuffle)
            torch.set_rng_state(resume.rng_torch)
            if device.type == "cuda" and resume.rng_cuda is not None:
                torch.cuda.set_rng_state(resume.rng_cuda, device)
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError, ArithmeticError) as exc:
            from lenet_cli.errors import WeightsError, first_line

            raise WeightsError(f"The checkpoint does not fit this model or optimizer ({first_line(exc)}).",
                               "Resume from the checkpoint.safetensors `lenet train` wrote for this run.") from exc
        history = list(resume.history)
        best_score, best_epoch, best_state = resume.best_score, resume.best_epoch, dict(resume.best_state)
        start_epoch, start_step, prior_seconds = resume.epochs_done + 1, resume.step, resume.train_seconds

    def snapshot(epochs_done: int, step: int, perm=None, sums=None) -> TrainState:
        return TrainState(
            config=cfg, epochs_done=epochs_done, step=step, model=_cpu_state(model), optimizer=_copied(opt.state_dict()),
            scheduler=sched.state_dict(), rng_shuffle=gen.get_state(), rng_torch=torch.get_rng_state(),
            rng_cuda=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            history=list(history), best_epoch=best_epoch, best_score=best_score, best_state=best_state,
            perm=None if perm is None else perm.to("cpu"), sums=sums,
            train_seconds=prior_seconds + time.perf_counter() - run_start,
            extra={"train_size": n, "steps_per_epoch": steps}, model_config=model.cfg,
        )

    observer.on_start(
        {"param_count": param_count, "train_size": n, "val_size": int(x_val.shape[0]), "steps_per_epoch": steps,
         "resumed_from": (start_epoch, start_step) if resume is not None else None}
    )
    interrupted = False
    stopped_in: tuple[int, int, int] | None = None  # (epoch, steps done, steps) of a mid-epoch stop
    # The weights of the last completed epoch: what a resumed run holds at an epoch boundary.
    # Resumed mid-epoch, they are not in memory, and an earlier session has written them already.
    last_state: dict[str, torch.Tensor] = _cpu_state(model) if history and start_step == 0 else {}
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    run_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs + 1):
        model.train()
        observer.on_epoch_start(epoch, steps)
        first = 0
        loss_sum = torch.zeros((), device=device, dtype=acc_dtype)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen, carried_seconds = 0, 0.0
        if epoch == start_epoch and start_step > 0 and resume is not None and resume.perm is not None:
            # Continue the interrupted epoch: same order of examples, same running sums.
            perm, first = resume.perm.to(device), start_step
            s = resume.sums.tolist() if resume.sums is not None else [0.0, 0.0, 0.0, 0.0]
            loss_sum.fill_(s[0])
            correct.fill_(int(s[1]))
            seen, carried_seconds = int(s[2]), float(s[3])
        else:
            perm = torch.randperm(n, generator=gen).to(device)
        start = time.perf_counter()
        stopped_at = None
        try:
            for step in range(first, steps):
                idx = perm[step * bs : (step + 1) * bs]
                x = x_train[idx].unsqueeze(1).float()  # (B, 1, 28, 28) raw pixels 0-255
                y = y_train[idx]
                if cfg.augment:
                    x = augment_batch(x, cfg, gen)
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                # Accumulate on the device; a .item() per step would synchronise the GPU every step.
                loss_sum += loss.detach().to(acc_dtype) * y.shape[0]
                correct += (logits.detach().argmax(1) == y).sum()
                seen += y.shape[0]
                if step % 20 == 0 or step == steps - 1:
                    elapsed = time.perf_counter() - start
                    observer.on_step(epoch, step + 1, steps, loss.item(), (seen - first * bs) / max(elapsed, 1e-9))
                if stop.requested and step < steps - 1:
                    stopped_at = step + 1
                    break
        except KeyboardInterrupt:
            if stop.requested:  # the second Ctrl-C: quit now (the last checkpoint is on disk)
                raise
            # A Ctrl-C with no StopSignal handler installed lands anywhere inside a step, so this
            # epoch's partial state is not trustworthy; keep the completed epochs only.
            interrupted = True
            break
        seconds = carried_seconds + time.perf_counter() - start
        if stopped_at is not None:
            sums = torch.tensor([loss_sum.item(), float(correct.item()), float(seen), seconds], dtype=torch.float64)
            if on_checkpoint is not None:
                on_checkpoint(snapshot(epoch - 1, stopped_at, perm, sums))
            interrupted, stopped_in = True, (epoch, stopped_at, steps)
            break
        val = summarize(torch_logits(model, x_val), y_val) if x_val.shape[0] else None
        record = EpochRecord(
            epoch=epoch,
            train_loss=(loss_sum / max(seen, 1)).item(),
            train_acc=correct.item() / max(seen, 1),
            val_loss=val.loss if val else float("nan"),
            val_acc=val.accuracy if val else float("nan"),
            lr=opt.param_groups[0]["lr"],
            seconds=seconds,
            images_per_s=seen / max(seconds, 1e-9),
        )
        history.append(record)
        observer.on_epoch_end(record)
        last_state = _cpu_state(model)
        # Model selection: the epoch with the best validation accuracy (never the test set);
        # without a validation split, the last epoch. A finished one-cycle run ends at a learning
        # rate near zero, where the model is at its best, so its last epoch is its result: an
        # earlier epoch's higher validation accuracy is mostly noise at this scale (5,000 images:
        # a standard error of ~0.13 points).
        score = record.val_acc if val else float(epoch)
        finished_cycle = cfg.schedule == "onecycle" and epoch == cfg.epochs
        if finished_cycle or score > best_score:
            best_score, best_epoch, best_state = score, epoch, last_state
        if on_checkpoint is not None:
            on_checkpoint(snapshot(epoch, 0))
        if stop.requested:
            interrupted = epoch < cfg.epochs
            break
    if not history and stopped_in is None:
        raise KeyboardInterrupt
    return TrainResult(
        history=history,
        best_epoch=best_epoch,
        best_state=best_state,
        last_state=last_state,
        model=model,
        param_count=param_count,
        device=str(device),
        train_seconds=prior_seconds + time.perf_counter() - run_start,
        interrupted=interrupted,
        stopped_in=stopped_in,
    )


def _check_resumable(state: "TrainState", cfg: TrainConfig, n: int, steps: int) -> None:
    """A checkpoint continues only the run it came from: same settings, same data size."""
    saved = state.config.to_dict()
    now = cfg.to_dict()
    differ = sorted(k for k in saved if k != "device" and saved[k] != now.get(k))
    if differ:
        raise UsageError(f"The checkpoint was made with different settings ({', '.join(differ)}).",
                         "Resume with the checkpoint's own settings (lenet train --resume PATH).")
    saved_n = state.extra.get("train_size", int(state.perm.numel()) if state.perm is not None else n)
    if saved_n != n or state.extra.get("steps_per_epoch", steps) != steps:
        raise UsageError(f"The checkpoint was made on {saved_n:,} training images, this data has {n:,}.",
                         "Resume with the same MNIST files and --val-size.")
    if state.epochs_done > cfg.epochs or (state.epochs_done == cfg.epochs and state.step):
        raise UsageError(f"The checkpoint is past the end of a {cfg.epochs}-epoch run.")
    if state.step >= steps:
        raise UsageError(f"The checkpoint's step {state.step} does not fit an epoch of {steps} steps.")


def history_rows(history: list[EpochRecord]) -> list[dict[str, Any]]:
    """History as a list of dicts (for JSON and CSV)."""
    return [dataclasses.asdict(r) for r in history]


def history_csv(history: list[EpochRecord]) -> str:
    """History as CSV text."""
    import csv
    import io

    buf = io.StringIO()
    fields = [f.name for f in dataclasses.fields(EpochRecord)]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in history_rows(history):
        writer.writerow(row)
    return buf.getvalue()


def save_run(
    result: TrainResult,
    cfg: TrainConfig,
    out_dir: Path,
    test_metrics: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write best/last weights, history (CSV and JSON) and curves (PNG) into out_dir, all atomically."""
    import json

    from lenet_cli.fileio import atomic_write_text, ensure_dir
    from lenet_cli.model import build_model
    from lenet_cli.plots import save_training_curves
    from lenet_cli.weights import save_weights

    ensure_dir(out_dir)
    training = cfg.to_dict() | {"best_epoch": result.best_epoch, "device_used": result.device}
    paths: dict[str, Path] = {}
    for name, state in (("best", result.best_state), ("last", result.last_state)):
        if not state:  # resumed mid-epoch and stopped again: the earlier session wrote this file
            continue
        model = build_model(result.model.cfg)
        model.load_state_dict(state)
        best = result.best if name == "best" else result.history[-1]
        metrics: dict[str, Any] = {}
        if best is not None:
            metrics = {"epoch": best.epoch, "val_accuracy": best.val_acc, "val_loss": best.val_loss}
        if name == "best" and test_metrics:
            metrics |= test_metrics
        paths[name] = save_weights(out_dir / f"{name}.safetensors", model, training=training, metrics=metrics)
    paths["history_csv"] = atomic_write_text(out_dir / "history.csv", history_csv(result.history))
    paths["history_json"] = atomic_write_text(
        out_dir / "history.json",
        json.dumps({"config": cfg.to_dict(), "best_epoch": result.best_epoch, "history": history_rows(result.history)}, indent=2),
    )
    paths["curves"] = save_training_curves(result.history, out_dir / "curves.png")
    return paths
