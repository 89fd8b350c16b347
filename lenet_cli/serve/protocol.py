"""uvicorn's h11 protocol with the limits HTTP framing needs: a time limit on request headers, a cap on
open connections, JSON for malformed requests, and the staged ("lingering") close of RFC 9112 §9.6.

Why the lingering close: when the server answers early (413 for a body over the limit) and
closes with the body unread, the kernel resets the connection, and a client that sends its
whole body before reading (Python's urllib, requests) gets ConnectionResetError instead of the
answer. So the server half-closes (its answer is complete), then reads and drops what the
client still sends, for a bounded time and number of bytes, and closes when the client does.

Imported only by `lenet serve`'s processes (it imports uvicorn and h11 at module level).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from lenet_cli.serve.limits import Limits, error_body


def raw_error(status: int, reason: str, message: str, kind: str) -> bytes:
    """A whole HTTP/1.1 error answer that closes the connection, for when no request was parsed yet."""
    body = error_body(message, kind)
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\nx-content-type-options: nosniff\r\n\r\n").encode() + body


class _LingeringTransport:
    """The connection's transport as uvicorn sees it: `close()` with a request body still unread lingers
    (see the module docstring) instead of closing at once. Everything else goes to the real transport."""

    def __init__(self, transport: asyncio.Transport, protocol: "GuardedProtocol") -> None:
        self._transport, self._protocol = transport, protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self._protocol.lingering or self._transport.is_closing():
            return
        if self._protocol.conn.their_state is h11.SEND_BODY:  # the client may still be sending its body
            self._protocol.start_lingering()
        else:
            self._transport.close()


class GuardedProtocol(H11Protocol):
    """H11Protocol plus a header deadline, a connection cap, JSON 400s and the lingering close.

    The class attribute `limits` is set by `protocol_class(limits)`; uvicorn makes one instance per connection.
    """

    limits: Limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lingering = False
        self.lingered = 0  # bytes read and dropped while lingering
        self.header_bytes = 0  # bytes received since this request's first byte, while its headers are incomplete
        self.header_timer: asyncio.TimerHandle | None = None
        self.linger_timers: list[asyncio.TimerHandle] = []
        self.raw: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.raw = transport
        self.transport = _LingeringTransport(transport, self)  # type: ignore[assignment]
        if len(self.connections) > self.limits.max_connections:
            self._answer_and_close(raw_error(503, "Service Unavailable", "the server has too many open "
                                             "connections; try again in a moment.", "busy"))
            return
        self._arm_header_timer()  # a connection that sends no request at all is closed as well

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._drop(len(data))
            return
        if self.conn.their_state is h11.IDLE:
            if self.header_timer is None:
                self._arm_header_timer()  # the first byte of a request (the keep-alive timer stops here)
            self.header_bytes += len(data)
            if self.header_bytes > self.limits.max_header_bytes and self._headers_too_long(data):
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self.header_bytes = 0
            if self.header_timer is not None:
                self.header_timer.cancel()  # the headers are in: the body's deadline is BodyGuard's
                self.header_timer = None

    def _headers_too_long(self, data: bytes) -> bool:
        """Past the header size limit: 400. (h11 checks its limit only while headers are incomplete, so
        a long request line and headers that arrive in one read would pass it.)"""
        buffered = self.conn.trailing_data[0] + data
        end = buffered.find(b"\r\n\r\n")
        if 0 <= end <= self.limits.max_header_bytes:
            return False
        self.send_400_response("headers too long")
        return True

    def eof_received(self) -> bool | None:
        if self.lingering:  # the client finished sending: now the close resets nothing
            self._close_now()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.header_timer is not None and self.conn.their_state is h11.IDLE:
            self.header_timer.cancel()  # between requests, uvicorn's keep-alive timeout applies
            self.header_timer = None

    def shutdown(self) -> None:
        if self.lingering:
            self._close_now()
            return
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        """A malformed request (bad request line, headers over the size limit, ...): 400 JSON, then close."""
        self._answer_and_close(raw_error(400, "Bad Request", f"malformed HTTP request (the request line and "
                                         f"headers may be at most {self.limits.max_header_bytes:,} bytes).",
                                         "bad_request"))

    # ------------------------------------------------------------------ timers and the lingering close

    def _arm_header_timer(self) -> None:
        self.header_timer = self.loop.call_later(self.limits.headers_timeout_s, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if self.conn.their_state is h11.IDLE and not self.raw.is_closing() and not self.lingering:
            self._answer_and_close(raw_error(408, "Request Timeout", f"the request headers did not arrive "
                                             f"within {self.limits.headers_timeout_s:g} s.", "timeout"))

    def _answer_and_close(self, answer: bytes) -> None:
        """A whole answer written outside h11 (no request was parsed), then the lingering close: what the
        client still sends would otherwise reset the connection before it reads the answer."""
        self.raw.write(answer)
        self.start_lingering()

    def start_lingering(self) -> None:
        """Half-close (the answer is complete), then read and drop the rest of the body, within bounds."""
        self.lingering = True
        self._cancel_timers()
        self._unset_keepalive_if_required()
        self.raw.resume_reading()
        if self.raw.can_write_eof():
            self.raw.write_eof()
        self.linger_timers = [self.loop.call_later(self.limits.linger_s, self._close_now),
                              self.loop.call_later(self.limits.linger_idle_s, self._close_now)]

    def _drop(self, size: int) -> None:
        self.lingered += size
        if self.lingered > self.limits.linger_bytes:
            self._close_now()
            return
        self.linger_timers[1].cancel()  # the client is still sending: wait for it a while longer
        self.linger_timers[1] = self.loop.call_later(self.limits.linger_idle_s, self._close_now)

    def _close_now(self) -> None:
        self._cancel_timers()
        if not self.raw.is_closing():
            self.raw.close()

    def _cancel_timers(self) -> None:
        for timer in [self.header_timer, *self.linger_timers]:
            if timer is not None:
                timer.cancel()
        self.header_timer, self.linger_timers = None, []


def protocol_class(limits: Limits) -> type[GuardedProtocol]:
    """A GuardedProtocol subclass bound to `limits`, to pass to uvicorn as its `http` protocol."""
    return type("LenetProtocol", (GuardedProtocol,), {"limits": limits})
