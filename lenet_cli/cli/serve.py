"""`lenet serve`: its options, one call into the API, and the line it prints when it stops.

The defaults are literals, as in the other commands' modules, because reading them from
`api.ServeRequest` would load the web stack into `lenet --help`; the recorder test in
tests/test_cli_options.py holds them equal to the request's.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lenet_cli import api
from lenet_cli.cli.console import RichEvents, note
from lenet_cli.cli.options import WeightsOpt, examples
from lenet_cli.utils.memory import reuse_freed_memory

EPILOG = examples(
    "lenet serve  # http://127.0.0.1:8000/ : draw a digit",
    "lenet serve --port 0  # any free port; the address is printed",
    "lenet serve --workers 1  # one serving process",
    "lenet serve --weights runs/train-*/best.safetensors  # exported to ONNX in memory at start",
    "curl -F file=@digit.png http://127.0.0.1:8000/api/predict  # from another terminal",
    "curl --data-binary @digit.png -H 'Content-Type: image/png' 'http://127.0.0.1:8000/api/predict?preview=1'",
)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on. 0.0.0.0 opens it to the network (with a "
                                      "warning).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on (0: a free one).",
                                      min=0, max=65535)] = 8000,
    weights: WeightsOpt = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Serving processes on the one port, each with its own onnxruntime session "
             "classifying one image at a time.",
        min=1, max=64, show_default="the CPU cores")] = None,
) -> None:
    """Serve a page to draw or upload a digit, and an HTTP API, on the bundled model or --weights.

    GET / is the page; POST /api/predict takes an image (multipart field
    `file`, or raw bytes with an image/* content type) and answers the fields
    of one row of `lenet predict --json`; GET /api/health, GET /api/model;
    API docs at /docs. Inference runs in onnxruntime: the bundled model and
    .onnx files never import torch; a .safetensors file is exported to ONNX in
    memory at start, in each process. Ctrl-C or SIGTERM stop it after the
    requests in flight (at most 5 s). Bad input is a 4xx JSON error.

    Limits, per serving process, and what a client sees past each:
    a body over 10 MiB: 413 JSON (the rest of the body is read and dropped
    for up to 10 s or 64 MiB first, so a client that sends it all before
    reading still gets the answer); an image over 4096x4096 pixels: 413;
    headers not all in within 10 s, or the body within 30 s more: 408, closed;
    request line and headers over 16 KiB: 400, closed; a keep-alive
    connection idle for 5 s: closed; over 1,000 open connections: 503,
    closed; over 64 images waiting for the model, or 256 MiB of bodies
    held at once: 503 with Retry-After. Details: docs/serving.md.
    """
    reuse_freed_memory()  # every request preprocesses an image: utils/memory.py
    request = api.ServeRequest(host=host, port=port, weights=weights, workers=workers)
    with RichEvents() as events:
        report = api.serve(request, events)
    note(f"Stopped after {report.requests:,} image(s) classified.")
