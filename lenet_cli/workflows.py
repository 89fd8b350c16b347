"""What each command does, between option parsing (cli.py) and the core modules.

This is the UI layer: it wires core functions together and renders with Rich.
Core modules (data, model, train, evaluate, weights, images, onnx_io, bench) stay
free of Rich and Typer.
"""

from __future__ import annotations

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

    def __init__(self, cfg, device_name: str) -> None:
        self.cfg = cfg
        self.device_name = device_name
        self.history: list = []
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


def run_training(cfg, data_dir: Path | None, out_dir: Path, allow_download: bool, json_mode: bool) -> dict[str, Any]:
    """Load data, train with live progress, save everything, evaluate the best weights on the test set."""
    from lenet_cli.data import load_split, resolve_data_dir, train_val_split
    from lenet_cli.devices import describe_device, resolve_device
    from lenet_cli.evaluate import metrics_from_logits, torch_logits
    from lenet_cli.fileio import ensure_dir
    from lenet_cli.train import save_run, train

    device = resolve_device(cfg.device)
    ensure_dir(out_dir)  # fail on an unwritable output dir before spending minutes training
    root = resolve_data_dir(data_dir)
    with err.status(f"Loading MNIST from {root} ..."):
        full = load_split(root, "train", allow_download=allow_download)
        test = load_split(root, "test", allow_download=allow_download)
    if cfg.val_size >= len(full):
        raise UsageError(f"--val-size {cfg.val_size} leaves no training images (the training set has {len(full)}).")
    train_split, val_split = train_val_split(full, cfg.val_size)

    observer = RichTrainObserver(cfg, describe_device(device))
    with observer:
        result = train(cfg, train_split, val_split, device, observer)

    # The test set is used once, for the report; never for choosing the epoch.
    model = result.model
    model.load_state_dict({k: v.to(next(model.parameters()).device) for k, v in result.best_state.items()})
    test_eval = metrics_from_logits(torch_logits(model, test.images.to(device)), test.labels)
    test_metrics = {"test_accuracy": test_eval.accuracy, "test_loss": test_eval.loss}
    paths = save_run(result, cfg, out_dir, test_metrics)

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
                           ("history_csv", "history (CSV)"), ("history_json", "history (JSON)")):
            files.add_row(label, str(paths[key]))
        out.print(files)
        best_path = paths["best"]
        out.print("[bold]Next:[/]")
        out.print(f"  lenet eval --weights {best_path}", soft_wrap=True)
        out.print(f"  lenet predict digit.png --weights {best_path}", soft_wrap=True)
        out.print(f"  lenet export --onnx --weights {best_path} --output {best_path.with_suffix('.onnx')}", soft_wrap=True)
    if result.interrupted:
        console.warn(f"Interrupted after epoch {result.history[-1].epoch}; what was learned so far is saved in {out_dir}.")
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
        "history": [vars(r) for r in result.history],
        "files": {k: str(v) for k, v in paths.items()},
    }


# --------------------------------------------------------------------------- eval


def run_eval(weights: Path | None, device: str, data_dir: Path | None, plot_dir: Path | None,
             allow_download: bool) -> dict[str, Any]:
    """Evaluate a safetensors or ONNX model on the MNIST test set; optionally write PNGs."""
    from lenet_cli.backends import OnnxBackend, TorchBackend, is_onnx_path
    from lenet_cli.data import load_split, resolve_data_dir
    from lenet_cli.evaluate import metrics_from_logits
    from lenet_cli.weights import resolve_weights_path

    path = resolve_weights_path(weights)
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
        ensure_dir(save_preview)  # an unwritable preview folder fails before any work
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
    failed = 0
    for row in report["results"]:
        if row.get("error"):
            failed += 1
            table.add_row(escape(row["file"]), "[red]error[/]", "", f"[red]{escape(row['error'])}[/]",
                          row.get("error_kind", ""))
            continue
        tops = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in row["top_k"])
        notes = "MNIST form, unchanged" if row["passthrough"] else ("inverted" if row["inverted"] else "")
        table.add_row(escape(row["file"]), f"[bold]{row['prediction']}[/]", f"{100 * row['confidence']:.1f}%", tops, notes)
    out.print(table)
    if failed:
        out.file.flush()  # the table first, then the summary, even when both streams go to one pipe
        err.print(f"[red]{failed} of {len(report['results'])} file(s) could not be classified.[/]")


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
                  seconds: float, quick: bool, output: Path | None) -> dict[str, Any]:
    """Run the benchmark with a progress display and optionally save the JSON report."""
    import json

    from lenet_cli.bench import BenchConfig, run_bench
    from lenet_cli.fileio import atomic_write_text
    from lenet_cli.weights import resolve_weights_path

    known = {"torch", "torch-compile", "onnxruntime"}
    unknown = set(backends) - known
    if unknown:
        raise UsageError(f"Unknown backend(s): {', '.join(sorted(unknown))}.", f"Choose from: {', '.join(sorted(known))}.")
    if quick:
        backends = tuple(b for b in backends if b != "torch-compile")
        seconds = min(seconds, 0.2)
    cfg = BenchConfig(batch_sizes=sizes, device=device, backends=backends, min_seconds=seconds,
                      warmup=3 if quick else 10, train_steps=5 if quick else 50, quick=quick)
    path = resolve_weights_path(weights)
    with err.status("Benchmarking ...") as status:
        report = run_bench(path, cfg, progress=lambda msg: status.update(f"Benchmarking: {msg} ..."))
    if output is not None:
        atomic_write_text(output, json.dumps(report, indent=2))
        report["output"] = str(output)
    return report


def render_bench(report: dict[str, Any]) -> None:
    """Header with the environment, then inference and training tables."""
    env = report["environment"]
    out.print(console.summary_table("Environment", [(k, str(v)) for k, v in env.items()]))
    table = Table(title="Inference (latency per batch, microseconds)", title_justify="left")
    for name in ("backend", "device", "batch", "p50 µs", "p90 µs", "p99 µs", "images/s"):
        table.add_column(name, justify="right")
    for r in report["inference"]:
        table.add_row(r["backend"], r["device"], str(r["batch_size"]), f"{r['p50_us']:,.1f}", f"{r['p90_us']:,.1f}",
                      f"{r['p99_us']:,.1f}", f"{r['images_per_s']:,.0f}")
    out.print(table)
    t = report["training"]
    out.print(console.summary_table("Training step", [
        ("device", t["device"]), ("batch size", str(t["batch_size"])),
        ("images/s", f"{t['images_per_s']:,.0f}"), ("seconds per epoch (55,000 images)", f"{t['seconds_per_epoch']:.2f}"),
    ]))
    for k, v in report.get("skipped", {}).items():
        console.warn(f"skipped {k}: {v}")
    if report.get("output"):
        out.print(f"Report written to {report['output']}")
