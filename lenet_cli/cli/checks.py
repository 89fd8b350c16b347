"""`lenet checks`: its options, one call into the API, its table."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lenet_cli import api
from lenet_cli.cli.console import out, pct, run_and_show
from lenet_cli.cli.options import DataDirOpt, JsonOpt, examples

EPILOG = examples(
    "lenet checks  # paste its output into a bug report",
    "lenet checks --no-torch  # about 4x sooner: no devices",
    "lenet checks --data-dir ~/mnist --json > checks.json",
)


def checks(
    data_dir: DataDirOpt = None,
    no_torch: Annotated[bool, typer.Option(
        "--no-torch", help="Do not import torch: no devices and no --device auto choice, about 4x sooner.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """What this machine offers lenet, for a bug report.

    Versions of lenet, Python and its libraries; the CPU and its features;
    the GPUs torch sees (CUDA, MPS) and the NVIDIA driver; onnxruntime's
    providers; whether the four MNIST files are where lenet reads them, and
    valid; the bundled model; what --device auto picks, and why.

    Downloads nothing, writes nothing, and exits 0 whatever it finds. It
    imports torch to ask about devices; --no-torch leaves that out.
    """
    run_and_show(api.checks, api.ChecksRequest(data_dir=data_dir, use_torch=not no_torch), render, json_out)


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "no"


def _cuda_rows(report: api.ChecksReport) -> list[tuple[str, str]]:
    d = report.devices
    rows = [("driver", escape(report.cuda_driver or "none found"))]
    if d is None:
        return rows + [("devices", "not probed (--no-torch)")]
    rows.append(("torch built for", f"CUDA {d['cuda_built']}" if d["cuda_built"] else "no CUDA (a CPU build)"))
    if d["cudnn"]:
        rows.append(("cuDNN", str(d["cudnn"])))
    rows.append(("available", _yes(d["cuda_available"])))
    for g in d["gpus"]:
        rows.append((f"cuda:{g['index']}", escape(f"{g['name']}: capability {g['capability']}, "
                                                  f"{g['memory_gib']} GiB, {g['multiprocessors']} SMs")))
    return rows


def _mnist_rows(report: api.ChecksReport) -> list[tuple[str, str]]:
    rows = [("folder", escape(str(report.data_dir)))]
    for f in report.mnist:
        state = f"[green]ok[/]: {f.count:,} items" if f.problem is None else f"[red]{escape(f.problem)}[/]"
        rows.append((f.name.split("-idx")[0], state))
    return rows


def _model_rows(model: dict[str, Any]) -> list[tuple[str, str]]:
    if "problem" in model:
        return [("problem", f"[red]{escape(model['problem'])}[/]")]
    accuracy = model.get("test_accuracy")
    return [("weights", escape(model["weights"])), ("SHA-256", model["weights_sha256"]),
            ("test accuracy", pct(accuracy) if isinstance(accuracy, float) else "not recorded"),
            ("ONNX", escape(model["onnx"])), ("ONNX SHA-256", model["onnx_sha256"])]


def sections(report: api.ChecksReport) -> list[tuple[str, list[tuple[str, str]]]]:
    """The table's sections: a title and its (item, value) rows."""
    cpu = report.cpu
    cores = f"{cpu.cores} cores, " if cpu.cores else ""
    features = " · ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu.flags.items()) or "unknown"
    ort = report.onnxruntime
    auto = report.auto
    return [
        ("Versions", [(k, escape(v) if v else "[dim]not installed[/]") for k, v in report.versions.items()]),
        ("CPU", [("model", escape(cpu.model)), ("threads", f"{cores}{cpu.threads} threads ({cpu.usable} usable)"),
                 ("features", features)]),
        ("CUDA", _cuda_rows(report)),
        ("MPS", [("available", "not probed (--no-torch)" if report.devices is None
                  else _yes(report.devices["mps_available"]))]),
        ("onnxruntime", [("providers", escape(", ".join(ort["providers"]) or ort.get("error", "none"))),
                         ("--device auto", escape(", ".join(report.onnx_auto) or "none"))]),
        ("MNIST", _mnist_rows(report)),
        ("Bundled model", _model_rows(report.model)),
        ("--device auto", [("not probed", "(--no-torch)")] if auto is None
         else [("device", f"[bold]{auto['device']}[/]"), ("why", escape(auto["reason"]))]),
    ]


def render(report: api.ChecksReport) -> None:
    """One table, a section per area; then any probe that failed."""
    table = Table(title="What this machine offers lenet", title_justify="left", show_header=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("", overflow="fold")
    for title, rows in sections(report):
        for i, (item, value) in enumerate(rows):
            table.add_row(title if i == 0 else "", item, value, end_section=i == len(rows) - 1)
    out.print(table)
    for problem in report.problems:
        out.print(f"[red]Problem:[/] {escape(problem)}", soft_wrap=True)
