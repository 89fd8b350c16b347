"""`lenet train`: its options, one call into the API, its rendering."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from lenet_cli import api
from lenet_cli.cli.console import (
    RichEvents,
    epoch_table,
    key_value_table,
    note,
    out,
    pct,
    print_json,
    warn,
)
from lenet_cli.cli.options import (
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    NoDownloadOpt,
    device_spec,
    examples,
)
from lenet_cli.errors import EXIT_INTERRUPTED
from lenet_cli.model.calibration import MIN_IMAGES
from lenet_cli.training.config import TrainConfig

D = TrainConfig()  # the defaults of every option below come from the config, not repeated here

EPILOG = examples(
    "lenet train  # 15 epochs, modern preset, auto device",
    "lenet train --epochs 15 --device cuda --seed 1",
    "lenet train --epochs 1  # a good model fast: about 99% test accuracy",
    "lenet train --arch classic --output-dir runs/classic",
    "lenet train --epochs 1 --dry-run  # one batch per epoch: check the set-up",
    "lenet train --resume runs/train-20261121-101500  # continue a stopped run",
)
# --help groups the options: each panel is its own table, so the short ones keep a wide help column at 80 columns.
RECIPE, AUGMENT = "Recipe (the defaults were chosen on the validation split)", "Augmentation"
FILE_LABELS = (("best", "best weights"), ("last", "last weights"), ("curves", "curves"),
               ("history_csv", "history (CSV)"), ("history_json", "history (JSON)"), ("checkpoint", "checkpoint"))


def train(
    ctx: typer.Context,
    epochs: Annotated[int, typer.Option(help="Passes over the training set.", min=1)] = D.epochs,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per step.")] = D.batch_size,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle schedule).")] = D.lr,
    seed: Annotated[int, typer.Option(help="Random seed: same seed and device give the same weights.")] = D.seed,
    arch: Annotated[str, typer.Option("--arch", "--preset", help="Model preset: modern | classic.")] = D.preset,
    data_dir: DataDirOpt = None,
    output_dir: Annotated[
        Optional[Path], typer.Option("--output-dir", "-o", help="Where weights, history and curves go.",
                                     show_default="runs/train-<time>")
    ] = None,
    val_size: Annotated[int, typer.Option(
        rich_help_panel=RECIPE, help=f"Training images held out for validation: it picks best.safetensors and fits the temperature "
        f"(under {MIN_IMAGES:,}: none fitted).", min=0)] = D.val_size,
    weight_decay: Annotated[float, typer.Option(help="AdamW/SGD weight decay.", min=0.0,
                                                               rich_help_panel=RECIPE)] = D.weight_decay,
    optimizer: Annotated[str, typer.Option(help="adamw | sgd.", rich_help_panel=RECIPE)] = D.optimizer,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", rich_help_panel=AUGMENT,
                                          help="Random rotation/scale/shift of training digits (every epoch but the "
                                               "last --clean-epochs).")] = D.augment,
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.99, rich_help_panel=RECIPE,
                                                   help="Cross-entropy label smoothing.")] = D.label_smoothing,
    clean_epochs: Annotated[Optional[int], typer.Option(
        "--clean-epochs", min=0, rich_help_panel=AUGMENT, show_default=f"{D.clean_epochs}, at most --epochs minus 1",
        help="Train the last N epochs on the digits as they are, without augmentation. Never the first "
             "epoch: a 2-epoch run has at most 1, a 1-epoch run none. --elastic and --stroke pause with the "
             "rest of the augmentation.")] = None,
    elastic: Annotated[float, typer.Option("--elastic", min=0.0, rich_help_panel=AUGMENT, help="Strength (alpha, in Simard et al.'s units) of "
                                           "elastic distortion of training digits; 0: none.")] = D.elastic,
    stroke: Annotated[float, typer.Option("--stroke", min=0.0, max=1.0, rich_help_panel=AUGMENT, help="Stroke-width jitter: move each "
                                          "training digit up to this fraction of the way to its 3x3 dilation "
                                          "or erosion; 0: none.")] = D.stroke,
    ema: Annotated[float, typer.Option("--ema", help="Keep an exponential moving average of the weights with this "
                                       "per-step decay (e.g. 0.999) and save it as the result; 0: off.",
                                       min=0.0, max=0.9999, rich_help_panel=RECIPE)] = D.ema_decay,
    precision: Annotated[str, typer.Option(
        "--precision", rich_help_panel=RECIPE, help="auto | float32 | bf16: bf16 runs the forward pass under bfloat16 autocast. auto: bf16 "
                            "on CPUs with AMX (faster at the same accuracy), float32 elsewhere.")] = D.precision,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="One batch per epoch, to check that everything runs.")] = D.dry_run,
    no_download: NoDownloadOpt = False,
    resume: Annotated[
        Optional[Path], typer.Option("--resume", help="Continue a stopped run from its checkpoint.safetensors "
                                     "(or its folder), with the settings it was started with.", show_default=False)
    ] = None,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Let this run replace the files of a run already "
                                           "in --output-dir (without it, such a folder is refused).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train LeNet-5 on MNIST and save the weights as safetensors.

    Holds out --val-size training images to measure every epoch. best.safetensors
    is the last epoch of a finished run (the one-cycle schedule ends at its best);
    a stopped run keeps the epoch with the best validation accuracy. The 10,000
    test images are only used for the final report. Each saved model gets a
    temperature fitted on the validation split, so its probabilities are
    calibrated (accuracy unchanged). Also writes last.safetensors, history.csv,
    history.json and curves.png.

    Under torchrun (torchrun --standalone --nproc-per-node N -m lenet_cli train
    ...) the processes train in DistributedDataParallel, --batch-size being the
    global batch; rank 0 alone prints and writes (docs: Training, "Several
    processes").
    """
    # An unset --clean-epochs (None) takes the default for this many epochs (TrainConfig.for_budget).
    cfg = TrainConfig.for_budget(epochs, preset=arch, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                 optimizer=optimizer, label_smoothing=label_smoothing, ema_decay=ema,
                                 clean_epochs=clean_epochs,
                                 elastic=elastic, stroke=stroke, augment=augment, val_size=val_size, seed=seed,
                                 precision=precision, dry_run=dry_run)
    request = api.TrainRequest(config=cfg, device=device_spec(device), data_dir=data_dir, output_dir=output_dir,
                               allow_download=not no_download, resume=resume, exist_ok=exist_ok,
                               given=typed_settings(ctx))
    with RichEvents() as events:
        report = api.train(request, events)
    show(report, json_out)
    if report.result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


def show(report: api.TrainReport, json_out: bool) -> None:
    """The report as tables or JSON on stdout; how to continue a stopped run on stderr."""
    if report.quiet:  # a process of a torchrun launch other than rank 0: rank 0 reports for all
        return
    if json_out:  # the notice first, then the data (as the stopped run prints it in a terminal)
        _say_how_to_continue(report)
        print_json(report.to_dict())
        return
    if report.test is not None:
        render(report)
    _say_how_to_continue(report)


def typed_settings(ctx: typer.Context) -> frozenset[str]:
    """The TrainConfig fields whose options were typed, even where the value typed is the default:
    `--resume run --epochs 15` on a 2-epoch run is a clash, not a silent 2."""
    option_field = {flag: field for field, flag in api.FIELD_FLAGS.items()}  # --arch -> preset
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    typed = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT"):
            field = option_field.get("--" + name, name)
            if field in fields:
                typed.add(field)
    return frozenset(typed)


def render(report: api.TrainReport) -> None:
    """The epoch table, the result, the files and what to run next."""
    result, test = report.result, report.test
    assert test is not None
    best = result.best
    out.print(epoch_table(result.history, result.best_epoch))
    out.print(key_value_table("Result", [
        ("preset", f"{report.config.preset} ({result.param_count:,} parameters)"),
        ("device", f"{report.device_name}, {report.config.precision}"),
        ("training time", f"{result.train_seconds:.1f}s"),
        ("best epoch", f"{result.best_epoch} (validation accuracy {pct(best.val_acc) if best else 'n/a'})"),
        ("test accuracy", f"{pct(test.accuracy)}  ({test.count - test.correct:,} errors of {test.count:,})"),
        ("test loss", f"{test.loss:.4f}"),
        ("temperature", f"{report.temperature:g} (calibration, fitted on the validation split)"
         if report.temperature is not None else
         f"1 (none fitted: a validation split under {MIN_IMAGES:,} images, without a mistake, or whose loss has "
         "no minimum in range)"),
    ]))
    files = Table(title="Files", title_justify="left", show_header=False)
    files.add_column(style="bold")
    files.add_column()
    for key, label in FILE_LABELS:
        if key in report.files:
            files.add_row(label, str(report.files[key]))
    out.print(files)
    best_path = report.files.get("best", report.checkpoint.parent / "best.safetensors")
    out.print("[bold]Next:[/]")
    out.print(f"  lenet eval --weights {best_path}", soft_wrap=True)
    out.print(f"  lenet predict digit.png --weights {best_path}", soft_wrap=True)
    out.print(f"  lenet export --onnx --weights {best_path} --output {best_path.with_suffix('.onnx')}", soft_wrap=True)


def _say_how_to_continue(report: api.TrainReport) -> None:
    """After a stopped run: where things are and the command that continues it (stderr)."""
    result = report.result
    if not result.interrupted:
        return
    if report.test is None:  # stopped inside the first epoch: only the checkpoint exists
        epoch, done, steps = result.stopped_in
        warn(f"Stopped in epoch {epoch} after step {done}/{steps}; checkpoint saved to {report.checkpoint}. "
             "Continue with:")
    else:
        where = (f"in epoch {result.stopped_in[0]} after step {result.stopped_in[1]}/{result.stopped_in[2]}"
                 if result.stopped_in else f"after epoch {result.history[-1].epoch}")
        warn(f"Stopped {where}. The weights of the completed epochs are in {report.checkpoint.parent}; "
             f"the checkpoint is {report.checkpoint}. Continue with:")
    note(f"  {report.resume_command}")

