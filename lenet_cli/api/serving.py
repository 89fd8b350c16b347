"""`lenet serve`: the page and the HTTP API in N serving processes on one port, until Ctrl-C or SIGTERM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenet_cli.devices import DeviceSpec
from lenet_cli.errors import UsageError
from lenet_cli.events import Events
from lenet_cli.inference.pipeline import default_model_path
from lenet_cli.serve.app import create_app
from lenet_cli.serve.classify import DEFAULT_WORKERS, ServeConfig, served_model
from lenet_cli.serve.server import bind, is_all_interfaces, run
from lenet_cli.serve.workers import WorkerSpec, run_processes
from lenet_cli.utils.signals import StopSignal

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class ServeRequest:
    """`lenet serve`: where to listen, which model, how many serving processes."""

    host: str = DEFAULT_HOST  # this machine only; 0.0.0.0 opens it to the network (with a warning)
    port: int = DEFAULT_PORT  # 0: a free port, printed when the server is ready
    weights: Path | None = None  # None: the bundled ONNX model (no torch); .onnx; or .safetensors (exported at start)
    workers: int | None = None  # serving processes on the one port; None: the CPU cores


@dataclass
class ServeReport:
    """Where it listened and how many images it classified before it was stopped."""

    url: str
    model: dict[str, Any]
    requests: int

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (for programs that call `api.serve`)."""
        return {"url": self.url, "model": self.model, "requests": self.requests}


def serve(request: ServeRequest, events: Events | None = None, stop: StopSignal | None = None) -> ServeReport:
    """Load the model, listen, serve until Ctrl-C / SIGTERM (or `stop.request()`), then shut down cleanly."""
    events = events or Events()
    stop = stop or StopSignal()
    if not 0 <= request.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {request.port}.")
    workers = DEFAULT_WORKERS if request.workers is None else request.workers
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}.")
    path = default_model_path(request.weights, DeviceSpec("cpu"))
    what = "Exporting it to ONNX in memory" if path.suffix.lower() != ".onnx" else "Loading it in onnxruntime"
    with events.stage(f"{what}: {path.name} ..."):
        model = served_model(path, bundled=request.weights is None)
    cfg = ServeConfig()
    sock = bind(request.host, request.port)
    if is_all_interfaces(request.host):
        events.warn(f"listening on all network interfaces ({request.host}): anyone who can reach this machine "
                    "can use the model. Use --host 127.0.0.1 (the default) to keep it to this machine.")
    url = [""]

    def ready(address: str) -> None:
        url[0] = address
        events.note(f"lenet serve: {address}/ (the page), {address}/docs (the API); model {path.name}. "
                    "Press Ctrl-C to stop.")

    if workers == 1:  # in this process: no process to start, and the model is loaded already
        app = create_app(model, cfg)
        run(app, sock, stop, ready, cfg.limits)
        return ServeReport(url[0], model.info(), app.state.requests)
    spec = WorkerSpec(path, request.weights is None, cfg)
    return ServeReport(url[0], model.info(), run_processes(spec, sock, workers, stop, ready))
