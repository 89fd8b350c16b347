"""The core API: one function per command. A request dataclass in, `Events` for progress, a report back.

    from lenet_cli import api
    report = api.evaluate(api.EvalRequest(plots=False))
    print(report.result.accuracy)

Nothing here prints, and nothing here knows about Typer or Rich: the command line (cli/)
builds a request from its options, calls one of these functions and renders the report; a
notebook or a test can call them the same way. Each function resolves `--device` once and
passes the device itself down to the core modules.

Each command's module (training, evaluation, prediction, exporting, benchmarking, serving, checking) is loaded
on first use of one of its names, so that `lenet --help` loads none of them: they bring numpy
(0.1 s on a 2-core machine), and `lenet --help` has no use for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from lenet_cli.api.benchmarking import (
        BENCH_BACKENDS,
        BenchReport,
        BenchRequest,
        bench,
    )
    from lenet_cli.api.checking import ChecksReport, ChecksRequest, checks
    from lenet_cli.api.evaluation import EvalReport, EvalRequest, evaluate
    from lenet_cli.api.exporting import ExportReport, ExportRequest, export
    from lenet_cli.api.prediction import PredictReport, PredictRequest, predict
    from lenet_cli.api.serving import ServeReport, ServeRequest, serve
    from lenet_cli.api.training import FIELD_FLAGS, TrainReport, TrainRequest, train

_MODULES = {
    "training": ("FIELD_FLAGS", "TrainReport", "TrainRequest", "train"),
    "evaluation": ("EvalReport", "EvalRequest", "evaluate"),
    "prediction": ("PredictReport", "PredictRequest", "predict"),
    "exporting": ("ExportReport", "ExportRequest", "export"),
    "benchmarking": ("BENCH_BACKENDS", "BenchReport", "BenchRequest", "bench"),
    "serving": ("ServeReport", "ServeRequest", "serve"),
    "checking": ("ChecksReport", "ChecksRequest", "checks"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Load the module that defines `name` (PEP 562) and keep its value here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
