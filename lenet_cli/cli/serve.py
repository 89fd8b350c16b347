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

EPILOG = examples(
    "lenet serve  # http://127.0.0.1:8000/ : draw a digit",
    "lenet serve --port 0  # any free port; the address is printed",
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
        help="Images classified at the same time (threads sharing one onnxruntime session).",
        min=1, max=64, show_default="the CPU cores, at most 4")] = None,
) -> None:
    """Serve a page to draw or upload a digit, and an HTTP API, on the bundled model or --weights.

    GET / is the page; POST /api/predict takes an image (multipart field `file`, or
    raw bytes with an image/* content type) and answers the fields of one row of
    `lenet predict --json`; GET /api/health, GET /api/model; API docs at /docs.
    An upload may be up to 10 MiB and 4096x4096 pixels; bad input is a 4xx JSON error.
    Inference runs in onnxruntime: the bundled model and .onnx files never import
    torch; a .safetensors file is exported to ONNX in memory at start.
    Ctrl-C or SIGTERM stop it after the requests in flight.
    """
    request = api.ServeRequest(host=host, port=port, weights=weights, workers=workers)
    with RichEvents() as events:
        report = api.serve(request, events)
    note(f"Stopped after {report.requests:,} image(s) classified.")
