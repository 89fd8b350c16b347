"""What each command does, between option parsing (cli.py) and the core modules.

This is the UI layer: it wires core functions together and renders with Rich.
Core modules (data, model, train, evaluate, weights, images, onnx_io, bench) stay
free of Rich and Typer.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lenet_cli import console
from lenet_cli.console import err, out, pct
from lenet_cli.errors import UsageError
from lenet_cli.train import TrainObserver  # light: torch is imported inside its functions


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """'1,64,1024' -> (1, 64, 1024); a UsageError for anything else."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} takes comma-separated integers, got {text!r}.") from None
    if not values or any(v < 1 for v in values):
        raise UsageError(f"{option} needs positive integers, got {text!r}.")
    return values


# --------------------------------------------------------------------------- train


class RichTrainObserver(TrainObserver):
    """Live progress bar (loss, images/s, time left) and a growing epoch table on stderr.

    When stderr is not a terminal, prints one plain line per epoch instead.
    """

    def __init__(self, cfg, device_name: str, resume=None) -> None:
        self.cfg = cfg
        self.device_name = device_name
        self.history: list = list(resume.history) if resume is not None else []
        self.live_mode = err.is_terminal
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[ips]:,.0f} img/s"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=err,
        )
        self.task = None
        self.live: Live | None = None

    def __enter__(self):
        if self.live_mode:
            self.live = Live(self._render(), console=err, refresh_per_second=8, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def _render(self):
        return Group(console.epoch_table(self.history), self.progress)

    def on_start(self, info: dict) -> None:
        err.print(
            f"Training LeNet-5 '{self.cfg.preset}' ({info['param_count']:,} parameters) on {self.device_name}: "
            f"{info['train_size']:,} train / {info['val_size']:,} validation images, "
            f"{self.cfg.epochs} epochs of {info['steps_per_epoch']} steps.",
            soft_wrap=True,
        )
        if info.get("resumed_from"):
            epoch, step = info["resumed_from"]
            if epoch > self.cfg.epochs:
                err.print(f"All {self.cfg.epochs} epochs were done; evaluating and saving the weights.")
            else:
                err.print(f"Resuming at epoch {epoch}, step {step + 1}.")

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, epoch=epoch, epochs=self.cfg.epochs, loss=float("nan"), ips=0.0)

    def on_step(self, epoch: int, step: int, steps: int, loss: float, images_per_s: float) -> None:
        self.progress.update(self.task, completed=step, loss=loss, ips=images_per_s)
        if self.live is not None:
            self.live.update(self._render())

    def on_epoch_end(self, record) -> None:
        self.history.append(record)
        if self.live is not None:
            self.live.update(self._render())
        else:
            err.print(
                f"epoch {record.epoch:>3}/{self.cfg.epochs}  train loss {record.train_loss:.4f} acc {pct(record.train_acc)}  "
                f"val loss {record.val_loss:.4f} acc {pct(record.val_acc)}  lr {record.lr:.2e}  "
                f"{record.seconds:.1f}s  {record.images_per_s:,.0f} img/s",
                soft_wrap=True,
            )


def resume_command(checkpoint: Path, data_dir: Path | None, device: str) -> str:
    """The exact command that continues a stopped run."""
    import shlex

    parts = ["lenet", "train", "--resume", str(checkpoint)]
    if data_dir is not None:
        parts += ["--data-dir", str(data_dir)]
    if device != "auto":
        parts += ["--device", device]
    return " ".join(shlex.quote(p) for p in parts)


def run_training(cfg, data_dir: Path | None, out_dir: Path, allow_download: bool, json_mode: bool,
                 resume=None) -> dict[str, Any]:
    """Load data, train with live progress, save everything, evaluate the best weights on the test set.

    A checkpoint is written after every epoch and when Ctrl-C stops the run mid-epoch;
    `resume` (a TrainState) continues a stopped run.
    """
    from lenet_cli.checkpoint import CHECKPOINT_NAME, save_checkpoint
    from lenet_cli.data import load_split, resolve_data_dir, train_val_split
    from lenet_cli.devices import describe_device, resolve_device
    from lenet_cli.evaluate import metrics_from_logits, torch_logits
    from lenet_cli.fileio import ensure_dir
    from lenet_cli.train import StopSignal, save_run, train

    device = resolve_device(cfg.device)
    ensure_dir(out_dir)  # fail on an unwritable output dir before spending minutes training
    root = resolve_data_dir(data_dir)
    with err.status(f"Loading MNIST from {root} ..."):
        full = load_split(root, "train", allow_download=allow_download)
        test = load_split(root, "test", allow_download=allow_download)
    if cfg.val_size >= len(full):
        raise UsageError(f"--val-size {cfg.val_size} leaves no training images (the training set has {len(full)}).",
                         f"Use a --val-size below {len(full)}; the default is 5000.")
    train_split, val_split = train_val_split(full, cfg.val_size)

    checkpoint = out_dir / CHECKPOINT_NAME
    again = resume_command(checkpoint, data_dir, cfg.device)
    stop = StopSignal()
    stop.on_request.append(lambda: console.warn("Stopping at the end of this step to save a checkpoint "
                                                "(press Ctrl-C again to quit at once)."))
    observer = RichTrainObserver(cfg, describe_device(device), resume)
    saved = {"checkpoint": False}

    def keep(state) -> None:
        save_checkpoint(checkpoint, state)
        saved["checkpoint"] = True

    # The handler stays on through the test evaluation and the saving: a Ctrl-C there must not
    # cost the weights of a finished run (the run simply completes).
    with stop.catch_signals():
        try:
            with observer:
                result = train(cfg, train_split, val_split, device, observer, resume=resume, stop=stop,
                               on_checkpoint=keep)
        except KeyboardInterrupt:
            if saved["checkpoint"] or resume is not None:
                console.warn(f"Aborted. The last checkpoint is {checkpoint}; continue with:")
                err.print(f"  {again}", soft_wrap=True, markup=False, highlight=False)
            raise
        if not result.history:  # stopped inside the first epoch: only the checkpoint exists
            epoch, done, steps = result.stopped_in
            console.warn(f"Stopped in epoch {epoch} after step {done}/{steps}; checkpoint saved to {checkpoint}. "
                         "Continue with:")
            err.print(f"  {again}", soft_wrap=True, markup=False, highlight=False)
            return {"config": cfg.to_dict(), "interrupted": True, "checkpoint": str(checkpoint),
                    "resume_command": again, "history": [], "train_seconds": result.train_seconds}

        # The test set is used once, for the report; never for choosing the epoch.
        model = result.model
        model.load_state_dict({k: v.to(next(model.parameters()).device) for k, v in result.best_state.items()})
        test_eval = metrics_from_logits(torch_logits(model, test.images.to(device)), test.labels)
        test_metrics = {"test_accuracy": test_eval.accuracy, "test_loss": test_eval.loss}
        paths = save_run(result, cfg, out_dir, test_metrics)
        paths["checkpoint"] = checkpoint

    best = result.best
    if not json_mode:
        out.print(console.epoch_table(result.history, result.best_epoch))
        rows = [
            ("preset", f"{cfg.preset} ({result.param_count:,} parameters)"),
            ("device", observer.device_name),
            ("training time", f"{result.train_seconds:.1f}s"),
            ("best epoch", f"{result.best_epoch} (validation accuracy {pct(best.val_acc) if best else 'n/a'})"),
            ("test accuracy", f"{pct(test_eval.accuracy)}  ({test_eval.count - test_eval.correct} errors of {test_eval.count:,})"),
            ("test loss", f"{test_eval.loss:.4f}"),
        ]
        out.print(console.summary_table("Result", rows))
        files = Table(title="Files", title_justify="left", show_header=False)
        files.add_column(style="bold")
        files.add_column()
        for key, label in (("best", "best weights"), ("last", "last weights"), ("curves", "curves"),
                           ("history_csv", "history (CSV)"), ("history_json", "history (JSON)"), ("checkpoint", "checkpoint")):
            if key in paths:
                files.add_row(label, str(paths[key]))
        out.print(files)
        best_path = paths.get("best", out_dir / "best.safetensors")
        out.print("[bold]Next:[/]")
        out.print(f"  lenet eval --weights {best_path}", soft_wrap=True)
        out.print(f"  lenet predict digit.png --weights {best_path}", soft_wrap=True)
        out.print(f"  lenet export --onnx --weights {best_path} --output {best_path.with_suffix('.onnx')}", soft_wrap=True)
    if result.interrupted:
        where = (f"in epoch {result.stopped_in[0]} after step {result.stopped_in[1]}/{result.stopped_in[2]}"
                 if result.stopped_in else f"after epoch {result.history[-1].epoch}")
        console.warn(f"Stopped {where}. The weights of the completed epochs are in {out_dir}; "
                     f"the checkpoint is {checkpoint}. Continue with:")
        err.print(f"  {again}", soft_wrap=True, markup=False, highlight=False)
    return {
        "config": cfg.to_dict(),
        "param_count": result.param_count,
        "device": observer.device_name,
        "train_seconds": result.train_seconds,
        "best_epoch": result.best_epoch,
        "val_accuracy": best.val_acc if best else None,
        "test_accuracy": test_eval.accuracy,
        "test_loss": test_eval.loss,
        "interrupted": result.interrupted,
        "resume_command": again if result.interrupted else None,
        "history": [vars(r) for r in result.history],
        "files": {k: str(v) for k, v in paths.items()},
    }


# --------------------------------------------------------------------------- eval


def run_eval(weights: Path | None, device: str, data_dir: Path | None, plot_dir: Path | None,
             allow_download: bool) -> dict[str, Any]:
    """Evaluate a safetensors or ONNX model on the MNIST test set; optionally write PNGs."""
    from lenet_cli.weights import resolve_weights_path

    path = resolve_weights_path(weights)
    if plot_dir is None:
        return _eval_and_plot(path, device, data_dir, None, allow_download)
    from lenet_cli.fileio import ensure_dir

    created = not plot_dir.exists()
    ensure_dir(plot_dir)  # an unwritable --output-dir fails before any work, not after it
    try:
        return _eval_and_plot(path, device, data_dir, plot_dir, allow_download)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                plot_dir.rmdir()  # a failed run leaves no empty runs/eval-<time> behind (only if empty)
        raise


def _eval_and_plot(path: Path, device: str, data_dir: Path | None, plot_dir: Path | None,
                   allow_download: bool) -> dict[str, Any]:
    from lenet_cli.backends import OnnxBackend, TorchBackend, is_onnx_path
    from lenet_cli.data import load_split, resolve_data_dir
    from lenet_cli.evaluate import metrics_from_logits

    root = resolve_data_dir(data_dir)
    with err.status(f"Loading MNIST test set from {root} ..."):
        test = load_split(root, "test", allow_download=allow_download)
    start = time.perf_counter()
    with err.status(f"Evaluating {path.name} on {len(test):,} test images ..."):
        if is_onnx_path(path):
            backend = OnnxBackend(path, "cpu" if device == "auto" else device)
            import torch

            logits = torch.from_numpy(backend.logits(test.images.numpy()))
        else:
            backend = TorchBackend(path, device)
            logits = backend.logits_tensor(test.images)
        result = metrics_from_logits(logits, test.labels)
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {
        "weights": str(path),
        "backend": backend.name,
        "device": backend.device,
        "preset": backend.metadata.get("preset"),
        "seconds": seconds,
        **result.to_dict(),
    }
    if plot_dir is not None:
        from lenet_cli.plots import save_confusion_matrix, save_misclassified_grid

        wrong = result.misclassified
        report["files"] = {
            "confusion_matrix": str(save_confusion_matrix(result.confusion, plot_dir / "confusion_matrix.png",
                                                          f"Confusion matrix: {path.name}, accuracy {pct(result.accuracy)}")),
            "misclassified": str(save_misclassified_grid(
                test.images[wrong[:64]] if wrong else test.images[:0],
                [int(test.labels[i]) for i in wrong[:64]],
                [result.predictions[i] for i in wrong[:64]],
                plot_dir / "misclassified.png",
            )),
        }
    return report


def render_eval(report: dict[str, Any]) -> None:
    """Overall, per-class and confusion tables."""
    from lenet_cli.evaluate import ClassMetrics, EvalResult

    result = EvalResult(
        accuracy=report["accuracy"], loss=report["loss"], count=report["count"], correct=report["correct"],
        per_class=[ClassMetrics(**c) for c in report["per_class"]], confusion=report["confusion_matrix"],
    )
    out.print(console.summary_table("MNIST test set", [
        ("weights", report["weights"]),
        ("backend", f"{report['backend']} on {report['device']}"),
        ("accuracy", f"[bold]{pct(result.accuracy)}[/]  ({result.count - result.correct} errors of {result.count:,})"),
        ("loss", f"{result.loss:.4f}"),
        ("time", f"{report['seconds']:.2f}s"),
    ]))
    out.print(console.per_class_table(result))
    out.print(console.confusion_table(result.confusion))
    for label, path in report.get("files", {}).items():
        out.print(f"{label.replace('_', ' ')}: {path}")


# --------------------------------------------------------------------------- predict


def run_predict(items: list[str], weights: Path | None, device: str, top_k: int, invert: bool | None,
                save_preview: Path | None) -> dict[str, Any]:
    """Preprocess and classify every image; per-file errors go into their row."""
    from lenet_cli.backends import load_backend
    from lenet_cli.fileio import ensure_dir
    from lenet_cli.images import expand_inputs
    from lenet_cli.predict import PredictConfig, default_model_path, predict_files

    paths = expand_inputs(items)
    if not paths:
        raise UsageError("No images given.", "Example: lenet predict digit.png")
    model_path = default_model_path(weights, device)
    if save_preview is not None:
        ensure_dir(save_preview, "--save-preview")  # an unwritable preview folder fails before any work
    cfg = PredictConfig(top_k=top_k, invert=invert, preview_dir=save_preview)
    backend = load_backend(model_path, device)
    if len(paths) < 50:
        rows = predict_files(paths, backend.logits, cfg)
    else:  # a folder of scans: show progress on stderr (transient, silent when not a terminal)
        progress = Progress(TextColumn("Classifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=err, transient=True)
        with progress:
            task = progress.add_task("predict", total=len(paths))
            rows = predict_files(paths, backend.logits, cfg, on_file=lambda: progress.advance(task))
    return {
        "weights": str(model_path),
        "backend": backend.name,
        "device": backend.device,
        "results": rows,
    }


def render_predictions(report: dict[str, Any], top_k: int) -> None:
    """One row per file: prediction, confidence, top-k and what preprocessing decided, or the error."""
    table = Table(title=f"Predictions ({report['backend']} on {report['device']})", title_justify="left")
    longest = max(len(row["file"]) for row in report["results"])
    table.add_column("file", overflow="fold", min_width=min(longest, 48))  # fold only very long paths
    table.add_column("digit", justify="center")
    table.add_column("confidence", justify="right")
    table.add_column(f"top {top_k}")
    table.add_column("notes", style="dim")
    for row in report["results"]:
        if row.get("error"):
            table.add_row(escape(row["file"]), "[red]error[/]", "", f"[red]{escape(row['error'])}[/]",
                          row.get("error_kind", ""))
            continue
        tops = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in row["top_k"])
        notes = "MNIST form, unchanged" if row["passthrough"] else ("inverted" if row["inverted"] else "")
        table.add_row(escape(row["file"]), f"[bold]{row['prediction']}[/]", f"{100 * row['confidence']:.1f}%", tops, notes)
    out.print(table)


def report_failures(report: dict[str, Any], where: str = "the table") -> bool:
    """One line on stderr when files failed: how many, the first one's error and what to do. True if any."""
    from lenet_cli.predict import IMAGE_HINTS

    rows = report["results"]
    failed = [row for row in rows if row.get("error")]
    if not failed:
        return False
    first = failed[0]
    hint = IMAGE_HINTS.get(first.get("error_kind", ""), "")
    head = f"{len(failed)} of {len(rows)} file(s) could not be classified"
    head += ": " if len(failed) == 1 else f" (see {where}); the first, "
    sys.stdout.flush()  # the data first, then the summary, even when both streams go to one pipe
    console.error(f"{head}{first['file']}: {first['error']} {hint}".rstrip())
    return True


# --------------------------------------------------------------------------- export


def run_export(weights: Path | None, output: Path | None, opset: int, data_dir: Path | None,
               allow_download: bool, quantize: str | None = None) -> dict[str, Any]:
    """Export, verify, optionally quantize, write; the report includes the parity table."""
    from lenet_cli.data import load_split, resolve_data_dir
    from lenet_cli.onnx_io import CALIBRATION_IMAGES, PROB_TOLERANCE, QUANT_MAX_DROP, export_onnx
    from lenet_cli.weights import resolve_weights_path

    if quantize is not None and quantize != "int8":
        raise UsageError(f"--quantize supports only int8, got {quantize!r}.", "Example: lenet export --onnx --quantize int8")
    if output is None:
        output = Path("lenet5-int8.onnx" if quantize else "lenet5.onnx")
    if output.suffix.lower() != ".onnx":
        raise UsageError(f"--output should end in .onnx, got {output}.")
    path = resolve_weights_path(weights)
    from lenet_cli.fileio import ensure_dir

    ensure_dir(output.parent, "--output")  # an unwritable --output fails before the export, not after it
    if output.is_dir():
        from lenet_cli.errors import OutputError

        raise OutputError(f"--output {output} is a directory.", "Give a file name, e.g. --output model.onnx.")
    folder = resolve_data_dir(data_dir)
    test = load_split(folder, "test", allow_download=allow_download)
    images, labels = test.images.numpy(), test.labels.numpy()
    calibration = None
    if quantize:
        # Calibrate on training images: the test set only ever measures.
        calibration = load_split(folder, "train", allow_download=allow_download).images[:CALIBRATION_IMAGES].numpy()
    what = f"Exporting {path.name} to ONNX opset {opset}" + (" and quantizing to int8" if quantize else "")
    with err.status(f"{what}, verifying ..."):
        written, rows, meta, quant_rows = export_onnx(path, output, opset, images[:256], quantize, calibration,
                                                      images, labels)
    report: dict[str, Any] = {
        "weights": str(path),
        "output": str(written),
        "opset": opset,
        "bytes": written.stat().st_size,
        "tolerance": PROB_TOLERANCE,
        "verification": [vars(r) for r in rows],
        "metadata": meta,
    }
    if quantize:
        report["quantization"] = {"type": quantize, "max_accuracy_drop": QUANT_MAX_DROP,
                                  "comparison": [vars(r) for r in quant_rows]}
    return report


def render_export(report: dict[str, Any]) -> None:
    """Parity table and where the file went."""
    table = Table(title=f"Verification: onnxruntime vs PyTorch (tolerance {report['tolerance']:.0e})", title_justify="left")
    for name in ("batch size", "images", "top-1 agree", "max |Δp|", "result"):
        table.add_column(name, justify="right")
    for r in report["verification"]:
        table.add_row(str(r["batch_size"]), str(r["images"]), f"{r['top1_agree']}/{r['images']}",
                      f"{r['max_abs_prob_diff']:.1e}", "[green]pass[/]" if r["passed"] else "[red]fail[/]")
    out.print(table)
    if "quantization" in report:
        q = report["quantization"]
        rows = q["comparison"]
        table = Table(title=f"float32 vs int8 on {rows[0]['test_images']:,} MNIST test images, onnxruntime on the CPU",
                      title_justify="left")
        for name in ("model", "size", "test accuracy", "agrees with float32", "batch 1 p50", "batch 1024"):
            table.add_column(name, justify="right")
        for r in rows:
            table.add_row(r["model"], f"{r['bytes'] / 1024:.0f} KiB", pct(r["test_accuracy"]),
                          pct(r["top1_agree_with_float"]), f"{r['batch1_p50_us']:.0f} µs",
                          f"{r['batch1024_images_per_s']:,.0f} img/s")
        out.print(table)
    out.print(f"Wrote {report['output']} ({report['bytes'] / 1024:.0f} KiB, opset {report['opset']}): "
              "input 'pixels' float32 [N, 1, 28, 28] raw 0-255, output 'logits' [N, 10].")
    out.print(f"[bold]Next:[/] lenet eval --weights {report['output']}")


# --------------------------------------------------------------------------- bench


def run_bench_cmd(weights: Path | None, device: str, sizes: tuple[int, ...], backends: tuple[str, ...],
                  seconds: float, quick: bool, output: Path | None, train_batch_size: int | None = None,
                  tutorial: bool = True) -> dict[str, Any]:
    """Run the benchmark with a progress bar on stderr and optionally save the JSON report."""
    import json
    import math

    from lenet_cli.bench import BenchConfig, run_bench
    from lenet_cli.fileio import atomic_write_text, ensure_dir
    from lenet_cli.train import TrainConfig
    from lenet_cli.weights import resolve_weights_path

    known = {"torch", "torch-compile", "onnxruntime"}
    if not backends:
        raise UsageError("--backends is empty.", f"Choose from: {', '.join(sorted(known))}.")
    if not (math.isfinite(seconds) and 0 <= seconds <= 600):
        raise UsageError(f"--seconds must be between 0 and 600, got {seconds}.")
    unknown = set(backends) - known
    if unknown:
        raise UsageError(f"Unknown backend(s): {', '.join(sorted(unknown))}.", f"Choose from: {', '.join(sorted(known))}.")
    if quick:
        backends = tuple(b for b in backends if b != "torch-compile")
        seconds = min(seconds, 0.2)
    cfg = BenchConfig(batch_sizes=sizes, device=device, backends=backends, min_seconds=seconds,
                      warmup=3 if quick else 10, train_steps=5 if quick else 40,
                      train_batch_size=train_batch_size or TrainConfig().batch_size,
                      tutorial=tutorial, tutorial_steps=5 if quick else 60, quick=quick)
    path = resolve_weights_path(weights)
    if output is not None:
        ensure_dir(output.parent)  # an unwritable --output fails before the measurements, not after
    progress = Progress(TextColumn("[bold]Benchmarking[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True)
    with progress:
        task = progress.add_task("", total=None)

        def update(label: str, done: int, total: int) -> None:
            progress.update(task, description=label, completed=done, total=total)

        report = run_bench(path, cfg, progress=update)
    if output is not None:
        atomic_write_text(output, json.dumps(report, indent=2))
        report["output"] = str(output)
    return report


def _us(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _peak(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction:.1%}"


def render_bench(report: dict[str, Any]) -> None:
    """Header with the environment, then inference and training tables."""
    env = report["environment"]
    peak = report.get("peak_gflops", {})
    rows = [(k, str(v)) for k, v in env.items()]
    rows += [(f"matmul peak ({k})", f"{v:,.0f} GFLOP/s (float32, measured)") for k, v in peak.items()]
    out.print(console.summary_table("Environment", rows))
    table = Table(title="Inference: latency per batch (µs), throughput at the median", title_justify="left")
    table.add_column("backend", justify="left")
    for name in ("batch", "p50 µs", "p90 µs", "p99 µs", "images/s", "GFLOP/s", "of peak"):
        table.add_column(name, justify="right")
    for r in report["inference"]:
        backend = r["backend"] if r["backend"].startswith("onnxruntime") else f"{r['backend']} ({r['device']})"
        table.add_row(backend, str(r["batch_size"]), _us(r["p50_us"]), _us(r["p90_us"]), _us(r["p99_us"]),
                      f"{r['images_per_s']:,.0f}", f"{r['gflops']:,.1f}", _peak(r.get("fraction_of_peak")))
    out.print(table)
    train = Table(title="Training: full steps, epoch = 55,000 images", title_justify="left")
    train.add_column("pipeline", justify="left")
    for name in ("device", "batch", "images/s", "s/epoch", "GFLOP/s", "of peak"):
        train.add_column(name, justify="right")
    labels = {"lenet": "lenet train", "tutorial": "tutorial DataLoader"}
    for t in report["training"]:
        train.add_row(labels.get(t["pipeline"], t["pipeline"]), t["device"], str(t["batch_size"]),
                      f"{t['images_per_s']:,.0f}", f"{t['seconds_per_epoch']:.2f}", f"{t['gflops']:,.1f}",
                      _peak(t.get("fraction_of_peak")))
    out.print(train)
    if report.get("training_speedup_vs_tutorial"):
        out.print(f"lenet's training step is {report['training_speedup_vs_tutorial']:.1f}x the tutorial pipeline's "
                  "throughput on this machine.")
    for k, v in report.get("skipped", {}).items():
        console.warn(f"skipped {k}: {v}")
    if report.get("output"):
        out.print(f"Report written to {report['output']}")
