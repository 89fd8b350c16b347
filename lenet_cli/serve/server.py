"""`lenet serve`'s server: the listening socket, and uvicorn running the app until Ctrl-C or SIGTERM.

One serving process runs `run`; several (`--workers N`) are started by workers.py, each
running `run` on the same pre-bound socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, Callable

from lenet_cli.errors import ServeError
from lenet_cli.serve.limits import Limits
from lenet_cli.utils.signals import StopSignal

BACKLOG = 2048  # connections the kernel queues before a process accepts them (a burst of thousands)
FILES_BESIDE_CONNECTIONS = 256  # the model, libraries, pipes, logs: what a process holds besides sockets
ALL_INTERFACES = ("0.0.0.0", "::", "")


def is_all_interfaces(host: str) -> bool:
    """True for an address that listens on every network interface (reachable from other machines)."""
    return host.strip("[]") in ALL_INTERFACES


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


def uvicorn_config(app: Any, limits: Limits) -> Any:
    """uvicorn's settings for `app` under `limits`: the guarded h11 protocol, no connection-count 503
    (idle sockets must not lock anyone out: the app limits the requests it works on instead)."""
    import uvicorn

    from lenet_cli.serve.protocol import protocol_class

    return uvicorn.Config(app, log_level="warning", access_log=False, http=protocol_class(limits),
                          limit_concurrency=None, timeout_keep_alive=limits.keep_alive_s,
                          h11_max_incomplete_event_size=limits.max_header_bytes, backlog=BACKLOG,
                          timeout_graceful_shutdown=limits.shutdown_s, lifespan="off")


def raise_open_file_limit(wanted: int) -> None:
    """Let this process open `wanted` files where the hard limit allows (the soft one is often 1,024).

    Every connection is a file descriptor: at the default soft limit, accept() fails before the
    connection cap (Limits.max_connections) can answer 503, and the server stops accepting.
    """
    try:
        import resource
    except ImportError:  # Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(app: Any, sock: socket.socket, stop: StopSignal, on_ready: Callable[[str], None],
        limits: Limits = Limits()) -> None:
    """Serve `app` on `sock` until Ctrl-C or SIGTERM, then shut down gracefully (requests in flight finish).

    uvicorn runs in a thread so that the signals stay with the project's StopSignal (uvicorn
    installs no handlers outside the main thread): the first signal asks uvicorn to stop, a
    second one ends at once (KeyboardInterrupt, exit 130).
    """
    raise_open_file_limit(limits.max_connections + FILES_BESIDE_CONNECTIONS)
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, limits))
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
