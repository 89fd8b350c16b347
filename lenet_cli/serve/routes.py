"""`lenet serve`'s routes: the page and its files, `POST /api/predict`, health, model metadata, errors.

Each `add_*` function registers one group of routes on the app. fastapi and starlette are
imported inside them: `lenet --help` must not pay for them.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at run time,
# and `Request` / `Query` are imported inside the functions, where string annotations could not find them.
import functools
from importlib import resources
from typing import Any

from lenet_cli.serve.classify import ServeConfig, ServedModel, classify_upload

# The only files the app serves from disk, by name: no path from a request ever reaches the filesystem.
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
# What the page may load: its own files and the previews (data: URLs); nothing from elsewhere.
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
HTTP_STATUS = {"too_large": 413, "unsupported_media_type": 415, "no_ink": 422, "busy": 503}  # others: 400


def static_text(name: str) -> bytes:
    """One of the page's files, from the installed package."""
    return (resources.files("lenet_cli") / "serve" / "static" / name).read_bytes()


def error(message: str, kind: str, status: int | None = None) -> Any:
    """A JSON error answer; the status follows from `kind` unless given."""
    from fastapi.responses import JSONResponse

    status = status or HTTP_STATUS.get(kind, 400)
    return JSONResponse({"error": message, "error_kind": kind}, status_code=status,
                        headers={"Retry-After": "1"} if status == 503 else None)


def add_error_handlers(app: Any) -> None:
    """Every error as {error, error_kind} JSON; a client gone mid-upload is not a server error."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

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


def add_page_routes(app: Any) -> None:
    """`GET /` (the page) and `GET /static/<name>` (its script and style), read once at start."""
    from fastapi.responses import Response

    page = static_text("index.html")
    static = {name: static_text(name) for name in STATIC_FILES}

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static:
            return error(f"no such file: {name}", "not_found", 404)
        return Response(static[name], media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


def add_info_routes(app: Any, model: ServedModel) -> None:
    """`GET /api/health` and `GET /api/model`."""

    @app.get("/api/health", summary="Is the server up and the model loaded?")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model.backend.path.name}

    @app.get("/api/model", summary="The model's metadata: preset, test accuracy, source hash, versions")
    async def model_info() -> dict[str, Any]:
        return model.info()


def predict_doc(cfg: ServeConfig) -> dict[str, Any]:
    """The OpenAPI description of `POST /api/predict`'s body and error answers."""
    return {"requestBody": {"required": True, "description": (
        f"An image (PNG, JPEG, BMP, GIF, TIFF, WebP): multipart form field `file`, or the raw bytes with an "
        f"`image/...` content type. At most {cfg.max_bytes:,} bytes and {cfg.max_pixels:,} pixels."),
        "content": {"multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                       "properties": {"file": {"type": "string", "format": "binary"}}}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"400": {"description": "not an image, damaged, empty, or no file field: {error, error_kind}"},
                      "413": {"description": "over the byte or pixel limit"},
                      "415": {"description": "the content type is neither multipart/form-data nor image/*"},
                      "408": {"description": "the body did not arrive in time"},
                      "422": {"description": "no ink found (a blank image), or a bad query parameter"},
                      "503": {"description": "busy: too many requests at once; try again (Retry-After)"}}}


async def read_upload(request: Any) -> "bytes | Any":
    """The uploaded image's bytes, or the JSON error answer for a body that holds none.

    A multipart body must hold exactly one file field named `file`; its file name is never
    read (no path from a request reaches the filesystem, and no name is echoed back).
    """
    from starlette.formparsers import MultiPartException

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            async with request.form(max_files=1, max_fields=4) as form:
                uploads = form.getlist("file")
                if len(uploads) > 1:
                    return error("the form has more than one field named 'file'; send one image.", "bad_request")
                if not uploads or isinstance(uploads[0], str):
                    return error("the form has no file field named 'file'.", "missing_file")
                return await uploads[0].read()
        except MultiPartException as exc:
            return error(f"a malformed multipart/form-data body ({exc.message})", "bad_request")
    if content_type.startswith("image/"):
        return await request.body()  # Pillow reads the format from the bytes; the type only routes the body
    return error(f"send the image as multipart/form-data (field 'file') or with an image/* content type, "
                 f"not {content_type or 'no content type'}.", "unsupported_media_type")


def add_predict_route(app: Any, model: ServedModel, cfg: ServeConfig) -> None:
    """`POST /api/predict`: the CPU work of a request goes to a worker thread, at most `cfg.threads` at a
    time, so the event loop keeps reading, timing and answering other connections meanwhile. At most
    `cfg.limits.max_queued` requests wait for or are in the model; more are answered 503 at once."""
    import anyio
    from fastapi import Query, Request
    from fastapi.responses import JSONResponse

    limiter: list[Any] = []  # the CapacityLimiter, made on the server's event loop at first use
    queued = [0]  # requests whose body is in, waiting for a thread or classified now
    app.state.requests = 0

    @app.post("/api/predict", summary="Classify one image of a digit", openapi_extra=predict_doc(cfg))
    async def predict(
        request: Request,
        preview: bool = Query(False, description="Add `preview`: the 28x28 image the model saw, as a PNG data URL."),
        top_k: int = Query(3, ge=1, le=10, description="How many classes `top_k` lists (10: all of them)."),
        invert: bool | None = Query(None, description="Force polarity (true: dark ink on light paper). Default: detect."),
    ) -> Any:
        """The same fields as one row of `lenet predict --json` (prediction, confidence, top_k, inverted,
        passthrough, notes), or `error` and `error_kind` with a 4xx status (503: busy, try again)."""
        data = await read_upload(request)
        if not isinstance(data, bytes):
            return data
        if queued[0] >= cfg.limits.max_queued:
            return error(f"the server has {queued[0]} images waiting already; try again in a moment.", "busy")
        if not limiter:
            limiter.append(anyio.CapacityLimiter(cfg.threads))
        work = functools.partial(classify_upload, model, data, cfg, top_k, invert, preview)
        queued[0] += 1
        try:
            row = await anyio.to_thread.run_sync(work, limiter=limiter[0])
        finally:
            queued[0] -= 1
        if row.get("error"):
            return error(row["error"], row["error_kind"])
        app.state.requests += 1  # images classified: a failed upload is not one
        # The row is plain JSON already (str, int, float, bool, lists): FastAPI's own encoding of a
        # returned dict walked it again, a tenth of the HTTP stack's time per request.
        return JSONResponse(row)
