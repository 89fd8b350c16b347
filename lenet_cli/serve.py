"""`lenet serve`'s web app: the page, `POST /api/predict`, health and model metadata, on FastAPI.

The prediction is `predict.py`'s (`predict_one`: the same preprocessing, the same row fields
as `lenet predict --json`) on one shared onnxruntime session. onnxruntime's `run` is safe to
call from several threads at once, so every request uses that one session; the CPU work of a
request (decode, preprocess, run) goes to a worker thread, at most `workers` at a time, so
the event loop keeps accepting and answering while images are classified.

fastapi, starlette, anyio and uvicorn are imported inside the functions: this module is
loaded only by `lenet serve`, and `lenet --help` must not pay for them.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run time,
# and `Request` / `Query` are imported inside create_app, where string annotations could not find them.
import base64
import contextlib
import functools
import io
import os
import socket
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from lenet_cli import __version__
from lenet_cli.backends import OnnxBackend
from lenet_cli.errors import ServeError
from lenet_cli.images import prepare_bytes
from lenet_cli.predict import predict_one
from lenet_cli.signals import StopSignal

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a whole request body, multipart framing included
MAX_UPLOAD_PIXELS = 4096 * 4096  # read from the header before decoding: a bomb costs nothing
MAX_CONNECTIONS = 64  # more at once are answered 503 at once, instead of queueing without bound
DEFAULT_WORKERS = min(os.cpu_count() or 1, 4)
# Each request is one image: parallelism comes from running requests side by side,
# so one intra-op thread per run (more would fight the other workers for the same cores).
SESSION_THREADS = 1
STATIC_DIR = "serve_static"
# The only files the app serves from disk, by name: no path from a request ever reaches the filesystem.
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
# What the page may load: its own files and the previews (data: URLs); nothing from elsewhere.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
HTTP_STATUS = {"too_large": 413, "unsupported_media_type": 415, "no_ink": 422}  # others: 400
ALL_INTERFACES = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class ServeConfig:
    """How the app answers: limits and the worker pool."""

    max_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_UPLOAD_PIXELS
    workers: int = DEFAULT_WORKERS


@dataclass
class ServedModel:
    """The one onnxruntime backend every request uses, and what `GET /api/model` says about it."""

    backend: OnnxBackend
    source: str  # "bundled", "onnx", or "safetensors (exported to ONNX in memory at start)"

    def info(self) -> dict[str, Any]:
        """Preset, test accuracy, hash of the weights it was made from, versions: from the model's metadata."""
        meta = self.backend.metadata
        metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        return {
            "name": self.backend.path.name,
            "source": self.source,
            "backend": self.backend.name,
            "preset": meta.get("preset"),
            "test_accuracy": metrics.get("test_accuracy"),
            "param_count": meta.get("param_count"),
            "source_weights_sha256": meta.get("source_weights_sha256"),
            "source_weights_name": meta.get("source_weights_name"),
            "model_lenet_version": meta.get("lenet_cli_version"),
            "opset": meta.get("opset"),
            "quantization": meta.get("quantization"),
            "server_version": __version__,
        }


def served_model(path: Path, bundled: bool = False) -> ServedModel:
    """onnxruntime on a `.onnx` file (no torch), or on a `.safetensors` file exported in memory (imports torch)."""
    if path.suffix.lower() == ".onnx":
        return ServedModel(OnnxBackend(path, "cpu", threads=SESSION_THREADS), "bundled" if bundled else "onnx")
    from lenet_cli.export import export_in_memory
    from lenet_cli.weights import resolve_weights_path

    path = resolve_weights_path(path)
    session, _ = export_in_memory(path, threads=SESSION_THREADS)
    return ServedModel(OnnxBackend(path, "cpu", session=session),
                       "safetensors (exported to ONNX in memory at start)")


def is_all_interfaces(host: str) -> bool:
    """True for an address that listens on every network interface (reachable from other machines)."""
    return host.strip("[]") in ALL_INTERFACES


def preview_data_url(pixels: np.ndarray) -> str:
    """The 28x28 image the model saw, as a PNG data URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def classify_upload(model: ServedModel, data: bytes, cfg: ServeConfig, top_k: int, invert: bool | None,
                    preview: bool) -> dict[str, Any]:
    """One uploaded image's row: `lenet predict --json`'s fields, plus the preview as a data URL on request."""
    row, prepared = predict_one(lambda: prepare_bytes(data, invert, "upload", cfg.max_pixels), "upload",
                                model.backend.logits, top_k)
    row.setdefault("notes", [])  # notes the core adds (low confidence, ...) pass through as they are
    if preview and prepared is not None:
        row["preview"] = preview_data_url(prepared.pixels)
    return row


class _TooLarge(Exception):
    """The request body went past the byte limit while it was being read."""


def _error_body(message: str, kind: str) -> bytes:
    import json

    return json.dumps({"error": message, "error_kind": kind}).encode()


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before it is stored anywhere.

    A declared Content-Length over the limit is refused before any byte is read; a chunked body
    is counted as it arrives. (Starlette would otherwise spool a large multipart file to disk first.)
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen, started = 0, False

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def watching_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _TooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        body = _error_body(f"the request is larger than the limit of {self.limit:,} bytes.", "too_large")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _static_text(name: str) -> bytes:
    return (resources.files("lenet_cli") / STATIC_DIR / name).read_bytes()


def create_app(model: ServedModel, cfg: ServeConfig = ServeConfig()) -> "FastAPI":
    """The ASGI app: `GET /` (the page), `/static/<file>`, `POST /api/predict`, `GET /api/health`,
    `GET /api/model`, and FastAPI's `/docs` and `/openapi.json`. No CORS headers: only pages
    served by this app (same origin) can read its answers from a browser."""
    import anyio
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    app = FastAPI(title="lenet serve", version=__version__,
                  description="LeNet-5 on MNIST: draw or upload a digit at `/`, or POST an image to `/api/predict`.")
    app.add_middleware(BodyLimit, limit=cfg.max_bytes)
    page = _static_text("index.html")
    static = {name: _static_text(name) for name in STATIC_FILES}
    limiter: list[Any] = []  # the CapacityLimiter, made on the server's event loop at first use
    app.state.requests = 0

    def error(message: str, kind: str, status: int | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "error_kind": kind}, status_code=status or HTTP_STATUS.get(kind, 400))

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, exc: ClientDisconnect) -> Response:
        # The client closed its connection mid-upload: nobody reads an answer, and it is no server error
        # (unhandled, it would print a traceback on the server's terminal for every dropped upload).
        return Response(status_code=400)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error(str(exc.detail), kind, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _bad_params(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return error(f"{where}: {first.get('msg', 'invalid value')}", "bad_request", 422)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static:
            return error(f"no such file: {name}", "not_found", 404)
        return Response(static[name], media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    @app.get("/api/health", summary="Is the server up and the model loaded?")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model.backend.path.name}

    @app.get("/api/model", summary="The model's metadata: preset, test accuracy, source hash, versions")
    async def model_info() -> dict[str, Any]:
        return model.info()

    body_doc = {"requestBody": {"required": True, "description": (
        f"An image (PNG, JPEG, BMP, GIF, TIFF, WebP): multipart form field `file`, or the raw bytes with an "
        f"`image/...` content type. At most {cfg.max_bytes:,} bytes and {cfg.max_pixels:,} pixels."),
        "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"400": {"description": "not an image, damaged, empty, or no file field: {error, error_kind}"},
                      "413": {"description": "over the byte or pixel limit"},
                      "415": {"description": "the content type is neither multipart/form-data nor image/*"},
                      "422": {"description": "no ink found (a blank image), or a bad query parameter"}}}

    @app.post("/api/predict", summary="Classify one image of a digit", openapi_extra=body_doc)
    async def predict(
        request: Request,
        preview: bool = Query(False, description="Add `preview`: the 28x28 image the model saw, as a PNG data URL."),
        top_k: int = Query(3, ge=1, le=10, description="How many classes `top_k` lists (10: all of them)."),
        invert: bool | None = Query(None, description="Force polarity (true: dark ink on light paper). Default: detect."),
    ) -> Any:
        """The same fields as one row of `lenet predict --json` (prediction, confidence, top_k, inverted,
        passthrough, notes), or `error` and `error_kind` with a 4xx status."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            async with request.form(max_files=1, max_fields=4) as form:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    return error("the form has no file field named 'file'.", "missing_file")
                data = await upload.read()
        elif content_type.startswith("image/"):
            data = await request.body()  # Pillow reads the format from the bytes; the type only routes the body
        else:
            return error(f"send the image as multipart/form-data (field 'file') or with an image/* content type, "
                         f"not {content_type or 'no content type'}.", "unsupported_media_type")
        if not limiter:
            limiter.append(anyio.CapacityLimiter(cfg.workers))
        work = functools.partial(classify_upload, model, data, cfg, top_k, invert, preview)
        row = await anyio.to_thread.run_sync(work, limiter=limiter[0])
        if row.get("error"):
            return error(row["error"], row["error_kind"])
        app.state.requests += 1  # images classified: a failed upload is not one
        return row

    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port (port 0: a free one); ServeError when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]") or None, port,
                                                             type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ServeError(f"Cannot use the address {host}: {exc.strerror or exc}.",
                         "Pass an IP address or host name of this machine, e.g. --host 127.0.0.1.") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once after a stop (TIME_WAIT)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                         "Choose another --port (--port 0 picks a free one), or stop what uses it.") from exc
    return sock


def url_of(sock: socket.socket) -> str:
    """http://host:port of a bound socket (IPv6 in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(app: Any, sock: socket.socket, stop: StopSignal, on_ready: Callable[[str], None]) -> None:
    """Serve `app` on `sock` until Ctrl-C or SIGTERM, then shut down gracefully (requests in flight finish).

    uvicorn runs in a thread so that the signals stay with the project's StopSignal (uvicorn
    installs no handlers outside the main thread): the first signal asks uvicorn to stop, a
    second one ends at once (KeyboardInterrupt, exit 130).
    """
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, limit_concurrency=MAX_CONNECTIONS,
                            timeout_graceful_shutdown=5, lifespan="off")
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=serve, name="uvicorn", daemon=True)
    stop.on_request.append(lambda: setattr(server, "should_exit", True))
    with stop.catch_signals():
        thread.start()
        try:
            while thread.is_alive() and not server.started:
                thread.join(0.05)
            if server.started:
                on_ready(url_of(sock))
            while thread.is_alive():
                thread.join(0.2)
        except KeyboardInterrupt:
            server.force_exit = True  # the second Ctrl-C: do not wait for requests in flight
            thread.join(2)
            raise
        finally:
            with contextlib.suppress(OSError):
                sock.close()
    if failure or not server.started:
        detail = f": {failure[0]}" if failure and str(failure[0]) else ""
        raise ServeError(f"The web server stopped unexpectedly{detail}.", "Run with `lenet --debug serve` for details.")
