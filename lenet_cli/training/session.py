"""One `lenet train` session: the run folder, resume, torchrun, calibration and the test report.

The policy around the loop: which folder a run writes (and never another run's files unless
asked), what a resume may change, how the processes of a torchrun launch share the work (rank
0 picks, locks and writes the run folder and reports; the others train their share quietly),
and what happens after training (a temperature fitted on the validation split for each saved
state, then one pass over the test set). `api.train` is this module's `run_session`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lenet_cli.data.mnist import (
    MnistSplit,
    load_split,
    resolve_data_dir,
    train_val_split,
)
from lenet_cli.devices import (
    AUTO,
    DeviceSpec,
    describe_device,
    parse_device,
    resolve_device,
)
from lenet_cli.errors import DivergedError, OutputError, UsageError
from lenet_cli.events import Events
from lenet_cli.model.calibration import calibrated_logits, fit_temperature
from lenet_cli.model.metrics import EvalResult, metrics_from_logits, torch_logits
from lenet_cli.training.checkpoint import (
    check_checkpoint_file,
    load_checkpoint,
    save_checkpoint,
)
from lenet_cli.training.config import TrainConfig
from lenet_cli.training.distributed import (
    SINGLE,
    DistContext,
    barrier,
    detect,
    from_main,
    is_peer_failure,
    peer_failure,
    process_group,
    rank_device,
    relaunch_prefix,
)
from lenet_cli.training.loop import train as train_loop
from lenet_cli.training.recipe import resolve_precision
from lenet_cli.training.run_dir import (
    checkpoint_path,
    new_run_dir,
    resume_command,
    run_files,
    run_lock,
    save_run,
)
from lenet_cli.training.state import TrainResult, TrainState
from lenet_cli.utils.fileio import ensure_dir
from lenet_cli.utils.signals import StopSignal

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from lenet_cli.model.lenet5 import LeNet5, ModelConfig


@dataclass(frozen=True)
class TrainRequest:
    """`lenet train`: the recipe, and where the run happens."""

    config: TrainConfig = TrainConfig()
    device: DeviceSpec = AUTO
    data_dir: Path | None = None
    output_dir: Path | None = None  # None: runs/train-<time>, or the resumed run's folder
    allow_download: bool = True
    resume: Path | None = None  # a run folder or its checkpoint.safetensors
    exist_ok: bool = False  # may replace the files of a run already in output_dir
    # The TrainConfig fields the user gave (the command line knows); None: count as given those that
    # differ from the default. With --resume, each given setting must agree with the checkpoint's.
    given: frozenset[str] | None = None


# The options whose names are not their TrainConfig field's.
FIELD_FLAGS = {"preset": "--arch", "ema_decay": "--ema"}


@dataclass
class TrainReport:
    """What a training run did: its result, the test figures of best.safetensors, its files."""

    config: TrainConfig
    device: DeviceSpec  # asked for
    device_name: str  # used
    checkpoint: Path
    resume_command: str
    result: TrainResult
    test: EvalResult | None = None  # None when stopped inside the first epoch (and on ranks other than 0)
    files: dict[str, Path] = field(default_factory=dict)
    dist: DistContext = SINGLE  # the torchrun launch this process was part of
    # best.safetensors' temperature, fitted on the validation split (calibrate.py); None: nothing to fit, the
    # file keeps T = 1.
    temperature: float | None = None

    @property
    def quiet(self) -> bool:
        """True on the processes of a torchrun launch that leave reporting to rank 0."""
        return not self.dist.is_main

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `lenet train --json`."""
        r = self.result
        config = self.config.to_dict(str(self.device))
        if self.test is None:
            return {"config": config, "interrupted": True, "checkpoint": str(self.checkpoint),
                    "resume_command": self.resume_command, "history": [], "train_seconds": r.train_seconds}
        return {
            "config": config, "param_count": r.param_count, "device": self.device_name,
            "train_seconds": r.train_seconds, "best_epoch": r.best_epoch,
            "val_accuracy": r.best.val_acc if r.best else None,
            "test_accuracy": self.test.accuracy, "test_loss": self.test.loss, "temperature": self.temperature,
            "interrupted": r.interrupted,
            "resume_command": self.resume_command if r.interrupted else None,
            "history": [vars(h) for h in r.history], "files": {k: str(v) for k, v in self.files.items()},
        }


def resolve_resume(request: TrainRequest) -> tuple[TrainConfig, DeviceSpec, TrainState]:
    """The checkpoint's settings and device; settings given in the request must agree with them.

    Given: `request.given`, or where it is None, the settings that differ from the default.
    """
    assert request.resume is not None
    state = load_checkpoint(checkpoint_path(request.resume))
    asked, saved = request.config, state.config
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    if request.given is not None:
        given = [name for name in names if name in request.given]
    else:
        # What the command line gives when an option is left out: the recipe for the given epoch budget.
        default = dataclasses.replace(TrainConfig.for_budget(asked.epochs), epochs=TrainConfig.epochs)
        given = [name for name in names if getattr(asked, name) != getattr(default, name)]
    clash = [name for name in given if getattr(asked, name) != getattr(saved, name)]
    if clash:
        flags = ", ".join(FIELD_FLAGS.get(name, "--" + name.replace("_", "-")) for name in clash)
        verb = "differs" if len(clash) == 1 else "differ"
        raise UsageError(f"--resume continues the run with the settings it was started with; {flags} {verb}.",
                         f"Drop {flags}, or start a new run without --resume.")
    device = request.device if not request.device.is_auto else parse_device(state.device)
    return saved, device, state


def _fit(model: "LeNet5", state: dict[str, "torch.Tensor"], val_split: MnistSplit,
         device: "torch.device") -> float | None:
    """The temperature that calibrates `state` on the validation split; None where there is nothing to
    fit (see `fit_temperature`). Leaves `state` loaded into `model`, which trained at T = 1."""
    from lenet_cli.model.cpu_paths import speed_up

    model.load_state_dict({k: v.to(device) for k, v in state.items()})
    if len(val_split) == 0:
        return None
    return fit_temperature(torch_logits(speed_up(model, device), val_split.images.to(device)), val_split.labels)


def _with_temperature(cfg: "ModelConfig", temperature: float | None) -> "ModelConfig":
    return cfg if temperature is None else dataclasses.replace(cfg, temperature=temperature)


def _load_training_data(request: TrainRequest, cfg: TrainConfig, events: Events
                        ) -> tuple[MnistSplit, MnistSplit, MnistSplit]:
    root = resolve_data_dir(request.data_dir)
    with events.stage(f"Loading MNIST from {root} ..."):
        full = load_split(root, "train", allow_download=request.allow_download)
        test = load_split(root, "test", allow_download=request.allow_download)
    if cfg.val_size >= len(full):
        raise UsageError(f"--val-size {cfg.val_size} leaves no training images (the training set has {len(full)}).",
                         f"Use a --val-size below {len(full)}; the default is {TrainConfig().val_size}.")
    train_split, val_split = train_val_split(full, cfg.val_size)
    if cfg.batch_size > len(train_split):
        raise UsageError(f"--batch-size {cfg.batch_size} is larger than the {len(train_split):,} training images "
                         f"(after --val-size {cfg.val_size}): every epoch would be one step.",
                         f"Use a --batch-size of at most {len(train_split):,}; the default is {TrainConfig().batch_size}.")
    return train_split, val_split, test


def _check_folder(out_dir: Path, request: TrainRequest, events: Events) -> None:
    """A run never replaces another run's files, unless --exist-ok says so; --resume writes its own folder."""
    resumed_from = checkpoint_path(request.resume) if request.resume is not None else None
    own = resumed_from is not None and out_dir.resolve() == resumed_from.parent.resolve()
    files = run_files(out_dir)
    if not files or own:
        return
    if not request.exist_ok:
        raise OutputError(f"{out_dir} already holds a run ({', '.join(files)}).",
                          f"Continue it with `lenet train --resume {out_dir}`, replace its files with --exist-ok, "
                          "or choose another --output-dir.")
    # Removed now, under the lock, not as each is rewritten: a run stopped early or diverged would
    # otherwise leave the earlier run's weights beside its own checkpoint, as if they were its own.
    for name in files:
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()
    events.warn(f"--exist-ok: removed the earlier run's {', '.join(files)} from {out_dir}; this run writes its own.")


def run_session(request: TrainRequest, events: Events | None = None) -> TrainReport:
    """Load data, train, save everything, evaluate best.safetensors on the test set.

    A checkpoint is written after every epoch and when Ctrl-C or SIGTERM stops the run
    mid-epoch; `request.resume` continues a stopped run. The run holds its folder's lock from
    before it looks into the folder until its last file is written. The test set is used once,
    for the report; never for choosing the epoch.
    """
    from lenet_cli.model.lenet5 import PRESETS  # model.py imports torch

    events = events or Events()
    request.config.validate()
    if request.config.preset not in PRESETS:
        raise UsageError(f"Unknown --arch {request.config.preset!r}.", f"Choose one of: {', '.join(PRESETS)}.")
    default = None
    if request.resume is not None:
        # A mistyped --resume fails here, before any folder is chosen, locked or created.
        default = check_checkpoint_file(checkpoint_path(request.resume)).parent
    ctx = detect()
    if ctx.active:
        return _train_distributed(request, ctx, events, request.output_dir or default)
    return _train_main(new_run_dir("train", request.output_dir or default), request, events, SINGLE, None)


def _train_main(out_dir: Path, request: TrainRequest, events: Events, ctx: DistContext,
                device: "torch.device | None") -> TrainReport:
    """The process that owns the run folder (the only one, or rank 0): lock it, check it, train into it."""
    created = not out_dir.exists()
    ensure_dir(out_dir)  # fail on an unwritable output dir before spending minutes training
    try:
        with run_lock(out_dir, events.warn):
            _check_folder(out_dir, request, events)
            cfg, spec, state = request.config, request.device, None
            if request.resume is not None:
                cfg, spec, state = resolve_resume(request)
            return _train_in(out_dir, request, cfg, spec, state, events, ctx, device)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a run that failed before writing anything leaves no empty folder behind
        raise


def _train_distributed(request: TrainRequest, ctx: DistContext, events: Events, output_dir: Path | None
                       ) -> TrainReport:
    """One process of a torchrun launch: join the others, train its share; rank 0 does what a single run does.

    An error of this process goes up as it is (its own message); a collective that fails because
    another process failed or hung becomes one DistributedError (exit 1), never a wait without end.
    """
    spec = request.device
    if request.resume is not None and spec.is_auto:
        spec = parse_device(load_checkpoint(checkpoint_path(request.resume)).device)
    device = rank_device(ctx, spec)
    with process_group(ctx, device) as ctx:
        try:
            # Rank 0 alone picks the folder (runs/train-<time> would differ between processes by a second).
            out_dir = Path(from_main(str(new_run_dir("train", output_dir)) if ctx.is_main else None))
            if ctx.is_main:
                report = _train_main(out_dir, request, events, ctx, device)
            else:
                cfg, spec, state = request.config, request.device, None
                if request.resume is not None:
                    cfg, spec, state = resolve_resume(request)
                report = _train_in(out_dir, request, cfg, spec, state, Events(), ctx, device)
            barrier()  # the others end once rank 0 has written the run folder
        except Exception as exc:
            if is_peer_failure(exc):
                raise peer_failure(exc, ctx) from exc
            raise
    return report


def _train_in(out_dir: Path, request: TrainRequest, cfg: TrainConfig, spec: DeviceSpec, state: TrainState | None,
              events: Events, ctx: DistContext = SINGLE, device: "torch.device | None" = None) -> TrainReport:
    from lenet_cli.model.cpu_paths import speed_up  # kernels.py imports torch

    device = device if device is not None else resolve_device(spec)
    cfg = resolve_precision(cfg, device)  # --precision auto, made concrete here so the files record what ran
    train_split, val_split, test = _load_training_data(request, cfg, events)
    checkpoint = checkpoint_path(out_dir)
    launcher = relaunch_prefix(ctx)
    again = resume_command(checkpoint, request.data_dir, str(spec), launcher, request.allow_download)
    # Under torchrun a second signal is not a second Ctrl-C: torchrun passes on the one it got (a terminal's
    # Ctrl-C reaches each process twice), and gives up on the processes by itself after its grace period.
    stop = StopSignal(repeat_aborts=not ctx.active)
    stop.on_request.append(lambda: events.warn("Stopping at the end of this step to save a checkpoint "
                                               "(press Ctrl-C again to quit at once)."))
    # The newest checkpoint on disk: the one resumed from until this run writes its own.
    saved = {"checkpoint": checkpoint_path(request.resume) if state is not None and request.resume else None}

    def keep(snapshot: TrainState) -> None:
        save_checkpoint(checkpoint, dataclasses.replace(snapshot, device=str(spec)))
        saved["checkpoint"] = checkpoint

    # The handler stays on through the test evaluation and the saving: a Ctrl-C there must not
    # cost the weights of a finished run (the run simply completes).
    with stop.catch_signals():
        try:
            result = train_loop(cfg, train_split, val_split, device, events, resume=state, stop=stop,
                                on_checkpoint=keep if ctx.is_main else None, dist=ctx)
        except KeyboardInterrupt:
            if saved["checkpoint"]:
                events.warn(f"Aborted. The last checkpoint is {saved['checkpoint']}; continue with:")
                command = resume_command(saved["checkpoint"], request.data_dir, str(spec), launcher,
                                         request.allow_download)
                events.note(f"  {command}")
            raise
        except DivergedError as exc:
            kept = f" The last checkpoint before it is kept: {saved['checkpoint']}." if saved["checkpoint"] else ""
            hint = f"{exc.hint}{kept} A new run needs another --output-dir, or --exist-ok."
            raise DivergedError(exc.message, hint, epoch=exc.epoch, step=exc.step) from exc
        report = TrainReport(cfg, spec, describe_device(device), checkpoint, again, result, dist=ctx)
        if not result.history or not ctx.is_main:  # stopped inside the first epoch: only the checkpoint exists
            return report
        # Each saved state gets its own temperature, fitted on the validation split; best last, so that
        # the model holds the best weights for the test pass.
        temperatures = {}
        if result.last_state:  # empty when resumed mid-epoch and stopped again: no last.safetensors then
            temperatures["last"] = _fit(result.model, result.last_state, val_split, device)
        temperatures["best"] = (temperatures["last"] if result.best_state is result.last_state  # fitted once
                                else _fit(result.model, result.best_state, val_split, device))
        configs = {name: _with_temperature(result.model.cfg, t) for name, t in temperatures.items()}
        report.temperature = temperatures["best"]
        net = speed_up(result.model, device)  # the CPU paths where they apply, as for validation
        logits = calibrated_logits(torch_logits(net, test.images.to(device)), configs["best"].temperature)
        report.test = metrics_from_logits(logits, test.labels)
        test_metrics = {"test_accuracy": report.test.accuracy, "test_loss": report.test.loss}
        report.files = save_run(result, cfg, out_dir, test_metrics, device=str(spec),
                                launch=ctx.describe() if ctx.active else None, model_configs=configs)
        report.files["checkpoint"] = checkpoint
    return report
