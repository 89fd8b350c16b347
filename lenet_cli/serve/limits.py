"""`lenet serve`'s limits on what a client may send: a request body over the byte limit is refused early.

ASGI middleware, below the routes: it needs nothing of FastAPI.
"""

from __future__ import annotations

import json
from typing import Any, Callable


class _TooLarge(Exception):
    """The request body went past the byte limit while it was being read."""


def error_body(message: str, kind: str) -> bytes:
    """The JSON body of every error answer: {"error": ..., "error_kind": ...}."""
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
        body = error_body(f"the request is larger than the limit of {self.limit:,} bytes.", "too_large")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
