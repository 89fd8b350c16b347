"""The `lenet` command: thin Typer commands over the core modules.

Each command parses options, builds a config, calls the core and renders the result.
Nothing heavy is imported at module level: `lenet --help` must not import torch.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional, TypeVar

import typer

from lenet_cli import __version__
from lenet_cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, LenetError

if TYPE_CHECKING:  # pragma: no cover
    from lenet_cli.checkpoint import TrainState
    from lenet_cli.train import TrainConfig

app = typer.Typer(
    name="lenet",
    help="Train, evaluate, run, export and benchmark LeNet-5 on MNIST.\n\n"
    "Every command works right after install with the bundled model; "
    "run `lenet COMMAND --help` for options and examples.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": bool(os.environ.get("LENET_DEBUG"))}
F = TypeVar("F", bound=Callable[..., object])

# Shared options, declared once. Input paths are checked by the core, not by Click (readable=False):
# an unreadable file is a failure to fix (exit 1, with what to do), like a missing one, not a usage error.
DeviceOpt = Annotated[
    str, typer.Option("--device", "-d", help="auto | cpu | cuda | cuda:N | mps. 'auto' picks CUDA, then MPS, then CPU.")
]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Folder with the MNIST files. [default: $LENET_DATA_DIR or ~/.cache/lenet]",
                 show_default=False, readable=False),
]
NoDownloadOpt = Annotated[bool, typer.Option("--no-download", help="Never download MNIST; fail if it is missing.")]
WeightsOpt = Annotated[
    Optional[Path],
    typer.Option("--weights", "-w", help="A .safetensors file from `lenet train` (or .onnx where supported). "
                 "[default: the bundled model]", show_default=False, readable=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lenet {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Train, evaluate, run, export and benchmark LeNet-5 on MNIST."""
    if debug:
        _state["debug"] = True


def handle_errors(fn: F) -> F:
    """Turn LenetError (and Ctrl-C) into one line on stderr and an exit code; traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from lenet_cli import console

        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except LenetError as exc:
            if _state["debug"]:
                console.err.print_exception()
            console.error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.error("Interrupted.")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The reader went away (`lenet eval --json | head -c 10`): stop quietly with exit code 1,
            # like Rich and Click do, and as Python's documentation recommends (see _quiet_broken_pipe).
            _quiet_broken_pipe()
            raise typer.Exit(EXIT_FAILURE) from None
        except Exception as exc:  # a bug: say so plainly, never dump a traceback on a user by default
            if _state["debug"]:
                console.err.print_exception()
            console.error(
                f"Unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                "(run with `lenet --debug ...` for the traceback and report it)."
            )
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper  # type: ignore[return-value]


def _quiet_broken_pipe() -> None:
    """Point stdout at devnull so the interpreter's final flush cannot fail a second time.

    Python's recipe (docs: signal, "Note on SIGPIPE"). Nothing is printed: the user
    closed the pipe on purpose, and stderr may be the same closed pipe.
    """
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (tests, embedding): nothing to protect
        pass


def _run_dir(output_dir: Optional[Path], prefix: str) -> Path:
    """--output-dir, else runs/<prefix>-<timestamp> (never overwriting an earlier run)."""
    if output_dir is not None:
        return output_dir
    base = Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _resume_config(path: Path, given: "TrainConfig") -> tuple["TrainConfig", "TrainState", Path]:
    """The checkpoint's config; settings typed on the command line must agree with it."""
    import dataclasses

    from lenet_cli.checkpoint import load_checkpoint
    from lenet_cli.errors import UsageError
    from lenet_cli.train import TrainConfig

    path = path.expanduser()
    if path.is_dir():  # a run folder: its checkpoint
        from lenet_cli.checkpoint import CHECKPOINT_NAME

        path = path / CHECKPOINT_NAME
    state = load_checkpoint(path)
    saved, default = state.config, TrainConfig()
    clash = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "device"
             and getattr(given, f.name) != getattr(default, f.name) and getattr(given, f.name) != getattr(saved, f.name)]
    if clash:
        flags = ", ".join("--" + name.replace("_", "-") for name in clash)
        verb = "differs" if len(clash) == 1 else "differ"
        raise UsageError(f"--resume continues the run with the settings it was started with; {flags} {verb}.",
                         f"Drop {flags}, or start a new run without --resume.")
    device = given.device if given.device != "auto" else saved.device
    return dataclasses.replace(saved, device=device), state, path


def _check_device(spec: str) -> None:
    from lenet_cli.devices import parse_device_spec

    parse_device_spec(spec)  # raises UsageError (exit 2) on a typo, before anything slow


@app.command(
    epilog="[bold]Examples[/]\n\n"
    "  lenet train                                  [dim]# 15 epochs, modern preset, auto device[/]\n\n"
    "  lenet train --epochs 15 --device cuda --seed 1\n\n"
    "  lenet train --arch classic --output-dir runs/classic\n\n"
    "  lenet train --epochs 1 --dry-run             [dim]# one batch per epoch: check the set-up[/]\n\n"
    "  lenet train --resume runs/train-20261121-101500   [dim]# continue a stopped run (its folder or checkpoint)[/]"
)
@handle_errors
def train(
    epochs: Annotated[int, typer.Option(help="Passes over the training set.", min=1)] = 15,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per step.", min=1)] = 256,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle schedule).")] = 6e-3,
    seed: Annotated[int, typer.Option(help="Random seed: same seed and device give the same weights.")] = 0,
    arch: Annotated[str, typer.Option("--arch", "--preset", help="Model preset: modern | classic.")] = "modern",
    data_dir: DataDirOpt = None,
    output_dir: Annotated[
        Optional[Path], typer.Option("--output-dir", "-o", help="Where weights, history and curves go. "
                                     "[default: runs/train-<time>]", show_default=False)
    ] = None,
    val_size: Annotated[int, typer.Option(help="Training images held out for validation (model selection).", min=0)] = 5000,
    weight_decay: Annotated[float, typer.Option(help="AdamW/SGD weight decay.", min=0.0)] = 5e-4,
    optimizer: Annotated[str, typer.Option(help="adamw | sgd.")] = "adamw",
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random rotation/scale/shift of training digits.")] = True,
    label_smoothing: Annotated[float, typer.Option(help="Cross-entropy label smoothing.", min=0.0, max=0.99)] = 0.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="One batch per epoch, to check that everything runs.")] = False,
    no_download: NoDownloadOpt = False,
    resume: Annotated[
        Optional[Path], typer.Option("--resume", help="Continue a stopped run from its checkpoint.safetensors, "
                                     "with the settings it was started with.", show_default=False)
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train LeNet-5 on MNIST and save the weights as safetensors.

    Holds out --val-size training images to measure every epoch. best.safetensors
    is the last epoch of a finished run (the one-cycle schedule ends at its best);
    a stopped run keeps the epoch with the best validation accuracy. The 10,000
    test images are only used for the final report. Also writes last.safetensors,
    history.csv, history.json and curves.png.
    """
    from lenet_cli import console
    from lenet_cli.train import TrainConfig

    _check_device(device)
    cfg = TrainConfig(
        preset=arch, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, optimizer=optimizer,
        label_smoothing=label_smoothing, augment=augment, val_size=val_size, seed=seed, device=device, dry_run=dry_run,
    )
    cfg.validate()
    from lenet_cli.model import PRESETS

    if arch not in PRESETS:
        from lenet_cli.errors import UsageError

        raise UsageError(f"Unknown --arch {arch!r}.", f"Choose one of: {', '.join(PRESETS)}.")
    state = None
    if resume is not None:
        cfg, state, checkpoint = _resume_config(resume, cfg)
        output_dir = output_dir or checkpoint.parent
    out_dir = _run_dir(output_dir, "train")
    from lenet_cli.workflows import run_training

    summary = run_training(cfg, data_dir, out_dir, allow_download=not no_download, json_mode=json_out, resume=state)
    if json_out:
        console.print_json(summary)
    if summary.get("interrupted"):
        raise typer.Exit(EXIT_INTERRUPTED)


@app.command(
    name="eval",
    epilog="[bold]Examples[/]\n\n"
    "  lenet eval                                   [dim]# the bundled model[/]\n\n"
    "  lenet eval --weights runs/train-*/best.safetensors\n\n"
    "  lenet eval --weights model.onnx --json > metrics.json",
)
@handle_errors
def eval_(
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    output_dir: Annotated[
        Optional[Path], typer.Option("--output-dir", "-o", help="Where the PNGs go. [default: runs/eval-<time>]",
                                     show_default=False)
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write confusion-matrix and misclassified PNGs.")] = True,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Accuracy on the 10,000 MNIST test images: overall, per class, confusion matrix.

    Accepts a .safetensors file (PyTorch) or an exported .onnx file (onnxruntime).
    """
    from lenet_cli import console
    from lenet_cli.workflows import run_eval

    _check_device(device)
    plot_dir = _run_dir(output_dir, "eval") if plots else None
    report = run_eval(weights, device, data_dir, plot_dir, allow_download=not no_download)
    if json_out:
        console.print_json(report)
    else:
        from lenet_cli.workflows import render_eval

        render_eval(report)


@app.command(
    epilog="[bold]Examples[/]\n\n"
    "  lenet predict digit.png\n\n"
    "  lenet predict photos/ 'scans/*.jpg' --top-k 3\n\n"
    "  lenet predict digit.png --weights model.onnx --json\n\n"
    "  lenet predict drawing.png --save-preview previews/   [dim]# see what the model saw[/]"
)
@handle_errors
def predict(
    images: Annotated[list[str], typer.Argument(help="Image files, directories or glob patterns.", show_default=False)],
    weights: WeightsOpt = None,
    device: Annotated[
        str, typer.Option("--device", "-d", help="auto | cpu | cuda | cuda:N | mps. auto: the bundled model runs on the "
                          "CPU through onnxruntime (no torch); other weights pick CUDA, then MPS, then CPU.")
    ] = "auto",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many top classes to show.", min=1, max=10)] = 3,
    invert: Annotated[
        Optional[bool], typer.Option("--invert/--no-invert", help="Force polarity (dark ink on light paper = invert). "
                                     "[default: detect]", show_default=False)
    ] = None,
    save_preview: Annotated[
        Optional[Path], typer.Option("--save-preview", help="Write the 28x28 images the model saw into this folder.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Classify images of digits: photos, scans, drawings, icons, MNIST crops.

    Each image is turned into MNIST's form first (polarity, contrast, crop,
    stroke width, 20x20 fit, centre of mass). A file that fails is reported in
    its row; the others are still classified; the exit code is 1 if any failed.
    """
    from lenet_cli import console
    from lenet_cli.workflows import render_predictions, report_failures, run_predict

    _check_device(device)
    rows = run_predict(images, weights, device, top_k, invert, save_preview)
    if json_out:
        console.print_json(rows)
    else:
        render_predictions(rows, top_k)
    if report_failures(rows, "the JSON" if json_out else "the table"):
        raise typer.Exit(EXIT_FAILURE)


@app.command(
    epilog="[bold]Examples[/]\n\n"
    "  lenet export --onnx                          [dim]# bundled model -> lenet5.onnx[/]\n\n"
    "  lenet export --onnx --weights runs/train-*/best.safetensors --output model.onnx --opset 18\n\n"
    "  lenet export --onnx --quantize int8            [dim]# -> lenet5-int8.onnx, with accuracy and speed[/]"
)
@handle_errors
def export(
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the only format so far).")] = False,
    weights: WeightsOpt = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="The .onnx file to write. [default: lenet5.onnx, "
                                     "or lenet5-int8.onnx with --quantize int8]", show_default=False)
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version (18 or newer: PyTorch's exporter starts there).",
                                       min=18, max=23)] = 18,
    quantize: Annotated[
        Optional[str], typer.Option("--quantize", help="int8: static int8 quantization with onnxruntime (calibrated on "
                                    "1,024 training images), compared with float32 on the test set.",
                                    show_default=False)
    ] = None,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export to ONNX (dynamic batch, standard operators, raw 0-255 pixels in) and verify it.

    The export is checked with onnx.checker and compared with PyTorch on real
    MNIST test images at batch sizes 1 and 256 before the file is written.
    """
    from lenet_cli import console
    from lenet_cli.workflows import render_export, run_export

    if not onnx:
        from lenet_cli.errors import UsageError

        raise UsageError("Choose a format: --onnx.", "Example: lenet export --onnx --output model.onnx")
    report = run_export(weights, output, opset, data_dir, allow_download=not no_download, quantize=quantize)
    if json_out:
        console.print_json(report)
    else:
        render_export(report)


@app.command(
    epilog="[bold]Examples[/]\n\n"
    "  lenet bench --quick\n\n"
    "  lenet bench --batch-sizes 1,64,1024 --device cuda --output bench.json\n\n"
    "  lenet bench --backends onnxruntime --json"
)
@handle_errors
def bench(
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated inference batch sizes.")] = "1,64,1024",
    backends: Annotated[str, typer.Option(help="Comma-separated: torch, torch-compile, onnxruntime.")] = "torch,torch-compile,onnxruntime",
    seconds: Annotated[float, typer.Option(help="Timing budget per backend and batch size.", min=0.0)] = 1.0,
    quick: Annotated[bool, typer.Option("--quick", help="A fast look: small budget, no torch.compile.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", help="Also write the JSON report to this file.")] = None,
    train_batch_size: Annotated[Optional[int], typer.Option(
        help="Batch size of the timed training step. [default: lenet train's]", min=1, show_default=False)] = None,
    tutorial: Annotated[bool, typer.Option("--tutorial/--no-tutorial",
                                           help="Also time a typical tutorial's DataLoader training pipeline.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Measure inference latency and throughput per backend, and training speed, on this machine.

    Every figure is measured in this run, after a warm-up: p50/p90/p99 latency per batch,
    images/s, GFLOP/s and the fraction of the machine's measured float32 matmul rate.
    """
    from lenet_cli import console
    from lenet_cli.workflows import parse_int_list, render_bench, run_bench_cmd

    _check_device(device)
    sizes = parse_int_list(batch_sizes, "--batch-sizes")
    names = tuple(b.strip() for b in backends.split(",") if b.strip())
    report = run_bench_cmd(weights, device, sizes, names, seconds, quick, output, train_batch_size, tutorial)
    if json_out:
        console.print_json(report)
    else:
        render_bench(report)


# Typer raises Click's exceptions from its own private copy of Click; reach their common base
# through Typer's public BadParameter instead of importing Click.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """Console-script entry point: a usage error is one line on stderr and exit code 2, like every error."""
    import sys

    try:
        code = app(standalone_mode=False)
    except _ClickException as exc:  # an unknown option, a value out of range, a missing argument
        from lenet_cli import console

        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            console.out.print(ctx.get_help())  # plain `lenet`: the help, and Click's exit code for it
            sys.exit(exc.exit_code)
        where = ctx.command_path if ctx is not None else "lenet"
        message = exc.format_message().rstrip(".")
        console.error(f"{message}. See `{where} --help`.")
        sys.exit(exc.exit_code)
    except typer.Abort:
        from lenet_cli import console

        console.error("Aborted.")
        sys.exit(EXIT_FAILURE)
    sys.exit(code if isinstance(code, int) else 0)
