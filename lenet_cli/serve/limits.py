"""`lenet serve`'s limits on what a client may send and how long it may take, and the ASGI middleware
that holds the ones above HTTP framing: body size, body time, body memory.

The limits below HTTP (header time, header size, lingering close, connections) live in
protocol.py, in uvicorn's own h11 protocol. The middleware needs nothing of FastAPI.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Callable

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Every limit of `lenet serve`, per serving process. docs/serving.md says what a client sees past each."""

    max_body_bytes: int = 10 * MiB  # one request body, multipart framing included: 413
    headers_timeout_s: float = 10.0  # from a request's first byte to its last header byte: 408, closed
    body_timeout_s: float = 30.0  # from the last header byte to the body's last byte: 408, closed
    keep_alive_s: float = 5.0  # an idle keep-alive connection between two requests: closed
    max_header_bytes: int = 16 * 1024  # request line and headers together: 400, closed
    max_connections: int = 1000  # open sockets; more are answered 503 and closed at once
    max_queued: int = 64  # requests with their body in, waiting for or in the model: more get 503
    max_buffered_bytes: int = 256 * MiB  # request bodies held in memory at once: more gets 503
    linger_s: float = 10.0  # after an early answer (413), unread body is read and dropped this long at most
    linger_idle_s: float = 2.0  # ... and closed as soon as the client is silent this long
    linger_bytes: int = 64 * MiB  # ... or has sent this much after the answer
    shutdown_s: float = 5.0  # on SIGTERM, requests in flight get this long to finish


class _Refused(Exception):
    """The request broke a limit while its body was being read: answer `status` with this message."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_body(message: str, kind: str) -> bytes:
    """The JSON body of every error answer: {"error": ..., "error_kind": ...}."""
    return json.dumps({"error": message, "error_kind": kind}).encode()


async def send_error(send: Callable, status: int, message: str, kind: str, close: bool = True) -> None:
    """An error answer as JSON straight through ASGI; `close`: the connection ends after it."""
    body = error_body(message, kind)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-content-type-options", b"nosniff")]
    if close:
        headers.append((b"connection", b"close"))
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """ASGI middleware: bodies over the byte limit get 413 before they are stored anywhere, bodies that
    take too long get 408, and the bodies held in memory at once stay under a budget (503 past it).

    A declared Content-Length over the limit is refused before any byte is read (a client that
    waits for `100 Continue` then sends nothing); a chunked body is counted as it arrives.
    (Starlette would otherwise spool a large multipart file to disk first.) Every answer gets
    `X-Content-Type-Options: nosniff` here, in plain ASGI, which costs less than an HTTP middleware.
    """

    def __init__(self, app: Any, limits: Limits = Limits()) -> None:
        self.app, self.limits = app, limits
        self.buffered = 0  # bytes of request bodies received by requests not yet answered, this process

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_error(send, 413, f"the request is larger than the limit of {limit:,} bytes.", "too_large")
            return
        state = {"seen": 0, "done": False, "started": False}
        deadline = asyncio.get_running_loop().time() + self.limits.body_timeout_s
        try:
            await self.app(scope, self._receive(receive, state, deadline), self._send(send, state))
        except _Refused as exc:
            if state["started"]:
                raise
            await send_error(send, exc.status, exc.message, exc.kind)
        finally:
            self.buffered -= state["seen"]

    def _receive(self, receive: Callable, state: dict, deadline: float) -> Callable:
        async def guarded() -> dict:
            if state["done"]:  # the body is in: a later receive waits for a disconnect, with no deadline
                return await receive()
            try:  # asyncio.wait_for, not timeout_at: Python 3.10 has no timeout_at
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except (TimeoutError, asyncio.TimeoutError):
                raise _Refused(408, f"the request body did not arrive within {self.limits.body_timeout_s:g} s.",
                               "timeout") from None
            if message["type"] != "http.request":
                return message
            size = len(message.get("body", b""))
            state["seen"] += size
            self.buffered += size
            state["done"] = not message.get("more_body", False)
            if state["seen"] > self.limits.max_body_bytes:
                raise _Refused(413, f"the request is larger than the limit of {self.limits.max_body_bytes:,} "
                                    "bytes.", "too_large")
            if self.buffered > self.limits.max_buffered_bytes:
                raise _Refused(503, "the server holds too many uploads at once; try again in a moment.", "busy")
            return message

        return guarded

    @staticmethod
    def _send(send: Callable, state: dict) -> Callable:
        async def watching(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                message = {**message, "headers": [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]}
            await send(message)

        return watching
