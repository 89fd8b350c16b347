"""`lenet predict URL`: one HTTP(S) GET, bounded in bytes and in total time, with a redirect policy.

The standard library's urllib only, so the URL path costs no import beyond it (and never torch).

* Size: at most MAX_DOWNLOAD_BYTES, whatever Content-Length says (a body that never ends is cut).
* Time: URL_TIMEOUT_S is a deadline for the whole download (connecting, redirects, headers,
  body), not a limit per read: a server that drips a byte a second is cut off at the deadline.
* Redirects: at most MAX_REDIRECTS, only to http: or https:, and never from a public address to
  a private one (loopback, private networks, link-local, ...). A public page must not make
  `lenet predict` fetch from the user's own network (a router's page, a cloud metadata service)
  behind their back; a private address the user typed is theirs to ask for, and so are
  redirects within private addresses.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

from lenet_cli import __version__
from lenet_cli.errors import ImageError, first_line

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # a URL or stdin: more than any photo of a digit needs
URL_TIMEOUT_S = 10.0  # seconds for the whole download, from connecting to the body's last byte
MAX_REDIRECTS = 5
CHUNK = 64 * 1024
SCHEMES = ("http", "https")


def is_url(item: str) -> bool:
    """An http:// or https:// address (other schemes are taken as file names, and not found)."""
    return item.lower().startswith(("http://", "https://"))


def is_public_host(host: str) -> bool:
    """True when every address `host` resolves to is a global (internet) one; False for private ones,
    and for a name that does not resolve (it cannot be shown to be public)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    return bool(addresses) and all(a.is_global for a in addresses)


class _Deadline:
    """Closes the download's sockets when its time is up, wherever it is blocked (connect, headers, body)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.expired = seconds, False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True

    def remaining(self, start: float) -> float:
        return max(0.01, self.seconds - (time.monotonic() - start))

    def watch(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                self._shut(sock)

    def _expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # a blocked recv returns at once; close() alone would not wake it
        except OSError:
            pass


def _check_redirect(url: str, source_url: str, target_url: str) -> None:
    """ImageError unless the redirect from `source_url` to `target_url` may be followed (module docstring)."""
    from urllib.parse import urlsplit

    target, source = urlsplit(target_url), urlsplit(source_url)
    if target.scheme.lower() not in SCHEMES:
        raise ImageError(f"{url}: the server redirects to {target.scheme or 'a'}: address, not http(s); "
                         "not followed.", kind="bad_redirect")
    if (target.hostname or "") != (source.hostname or "") and is_public_host(source.hostname or "") \
            and not is_public_host(target.hostname or ""):
        raise ImageError(f"{url}: the server redirects from a public address to a private one "
                         f"({target.hostname}); not followed.", kind="bad_redirect")


def _opener(url: str, deadline: _Deadline) -> Any:
    """A urllib opener whose connections report to `deadline` and whose redirects follow the policy."""
    import http.client
    import urllib.request
    from urllib.parse import urljoin

    def watched(base: type) -> type:
        class Connection(base):  # type: ignore[misc, valid-type]
            def connect(self) -> None:
                super().connect()
                deadline.watch(self.sock)
        return Connection

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(watched(http.client.HTTPConnection), req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(watched(http.client.HTTPSConnection), req, context=self._context)

    class Redirects(urllib.request.HTTPRedirectHandler):
        max_redirections = MAX_REDIRECTS

        def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
            # Checked before urllib's own check, which lets ftp: through and words file: as an HTTP error.
            location = headers.get("location") or headers.get("uri") or ""
            _check_redirect(url, req.full_url, urljoin(req.full_url, location))
            return super().http_error_302(req, fp, code, msg, headers)

        http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    return urllib.request.build_opener(HTTP, HTTPS, Redirects)


def _read_body(response: Any, url: str, max_bytes: int) -> bytes:
    """The body, in chunks, at most `max_bytes` (one more byte tells "exactly the limit" from "over it")."""
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ImageError(f"{url}: the server sends {int(length):,} bytes, over the limit of {max_bytes:,}.",
                         kind="too_large")
    chunks, size = [], 0
    while size <= max_bytes:
        chunk = response.read(min(CHUNK, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > max_bytes:
        raise ImageError(f"{url}: over the download limit of {max_bytes:,} bytes.", kind="too_large")
    return b"".join(chunks)


def fetch_url(url: str, max_bytes: int = MAX_DOWNLOAD_BYTES, timeout: float = URL_TIMEOUT_S) -> tuple[bytes, str]:
    """The body of an HTTP(S) GET (at most `max_bytes`, within `timeout` seconds in all) and its content
    type; any failure is one ImageError (kinds: too_large, timeout, bad_redirect, not_found, http_error,
    unreachable)."""
    import http.client
    import urllib.error
    import urllib.request

    start, deadline = time.monotonic(), _Deadline(timeout)
    request = urllib.request.Request(url, headers={"User-Agent": f"lenet/{__version__}"})
    too_slow = ImageError(f"{url}: no answer within {timeout:g} s (the limit for the whole download).",
                          kind="timeout")
    deadline.timer.start()
    try:
        with _opener(url, deadline).open(request, timeout=deadline.remaining(start)) as response:
            data = _read_body(response, url, max_bytes)
            kind = response.headers.get_content_type()
    except ImageError:
        raise
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise ImageError(f"{url}: too many redirects (a loop, or more than {MAX_REDIRECTS}).",
                             kind="bad_redirect") from None
        what = "not_found" if exc.code in (404, 410) else "http_error"
        raise ImageError(f"{url}: the server answered HTTP {exc.code} {exc.reason}.", kind=what) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
        reason = getattr(exc, "reason", exc)
        if deadline.expired or isinstance(reason, (TimeoutError, socket.timeout)):
            raise too_slow from None
        if isinstance(exc, urllib.error.URLError):
            detail = getattr(reason, "strerror", None) or reason
            raise ImageError(f"{url}: cannot connect ({detail}).", kind="unreachable") from exc
        raise ImageError(f"{url}: download failed ({first_line(exc)}).", kind="unreachable") from exc
    finally:
        deadline.timer.cancel()
    if deadline.expired:  # cut off at the deadline: what came is not the whole body
        raise too_slow
    return data, kind
