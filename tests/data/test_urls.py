"""`lenet predict URL` against local servers that misbehave: each case ends in one error row within the
limits, and the other inputs are still classified. The servers run in threads on 127.0.0.1."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import handwriting
import numpy as np
import pytest
from typer.testing import CliRunner

from lenet_cli.cli.app import app
from lenet_cli.errors import ImageError

runner = CliRunner()


def png_bytes(label: int = 2, seed: int = 4) -> bytes:
    buf = io.BytesIO()
    handwriting.render(label, "marker", np.random.default_rng(seed)).image.save(buf, format="PNG")
    return buf.getvalue()


class RawServer:
    """A TCP server on 127.0.0.1 whose answer to each connection is the function `behave(conn, path)`:
    HTTP written by hand, so it can misbehave in ways no real server library allows."""

    def __init__(self, behave) -> None:
        self.behave = behave
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            path = head.split(b" ", 2)[1].decode()
            try:
                self.behave(conn, path, self)
            except OSError:  # the client hung up: the point of most cases
                pass

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def answer(conn, status: str, headers: dict, body: bytes = b"") -> None:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    conn.sendall("\r\n".join(lines).encode() + body)


@pytest.fixture
def server():
    made = []

    def start(behave) -> RawServer:
        made.append(RawServer(behave))
        return made[-1]

    yield start
    for s in made:
        s.close()


def drip(conn, path, srv):  # headers at once, then one byte a second, forever
    answer(conn, "200 OK", {"Content-Type": "image/png", "Content-Length": "100000"}, b"\x89")
    while not srv.stopped.is_set():
        time.sleep(1)
        conn.sendall(b"P")


def drip_headers(conn, path, srv):  # the status line and headers themselves, a byte a second
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Long: " + b"a" * 1000:
        if srv.stopped.is_set():
            return
        conn.sendall(bytes([byte]))
        time.sleep(1)


def endless(conn, path, srv):  # no Content-Length, a body that never ends
    answer(conn, "200 OK", {"Content-Type": "image/png"}, b"\x89PNG")
    while not srv.stopped.is_set():
        conn.sendall(b"\0" * 65536)


def lying_length(conn, path, srv):  # says 5,000 bytes, sends 100, keeps the connection open
    answer(conn, "200 OK", {"Content-Type": "image/png", "Content-Length": "5000"}, png_bytes()[:100])
    srv.stopped.wait(30)


def short_then_close(conn, path, srv):  # says 5,000 bytes, sends 100, closes
    answer(conn, "200 OK", {"Content-Type": "image/png", "Content-Length": "5000"}, png_bytes()[:100])


def loop(conn, path, srv):  # /a -> /b -> /a ...
    answer(conn, "302 Found", {"Location": "/b" if path == "/a" else "/a", "Content-Length": "0"})


def to_file(conn, path, srv):
    answer(conn, "302 Found", {"Location": "file:///etc/passwd", "Content-Length": "0"})


def to_ftp(conn, path, srv):
    answer(conn, "301 Moved", {"Location": "ftp://127.0.0.1/digit.png", "Content-Length": "0"})


def good(conn, path, srv):
    if path == "/hop":  # a redirect within private addresses is followed
        answer(conn, "302 Found", {"Location": "/digit.png", "Content-Length": "0"})
        return
    body = png_bytes()
    answer(conn, "200 OK", {"Content-Type": "image/png", "Content-Length": str(len(body))}, body)


def predict_rows(*args) -> tuple[int, list[dict]]:
    result = runner.invoke(app, ["predict", *args, "--json"])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)["results"]


@pytest.mark.slow
def test_misbehaving_servers_each_end_in_one_error_row_within_the_limits(server, monkeypatch):
    """Each bad server: one error row, the whole run within the deadline per URL, the good URL classified.
    On the code before the total deadline the dripping servers held the run for minutes."""
    import lenet_cli.data.sources as sources

    monkeypatch.setattr(sources, "URL_TIMEOUT_S", 2.0)
    monkeypatch.setattr(sources, "MAX_DOWNLOAD_BYTES", 1024 * 1024)
    cases = {
        server(drip).url + "/x.png": ("timeout", "no answer within 2 s"),
        server(drip_headers).url + "/x.png": ("timeout", "no answer within 2 s"),
        server(endless).url + "/x.png": ("too_large", "over the download limit of 1,048,576"),
        server(lying_length).url + "/x.png": ("timeout", "no answer within 2 s"),
        server(short_then_close).url + "/x.png": ("corrupt", "truncated"),
        server(loop).url + "/a": ("bad_redirect", "too many redirects"),
        server(to_file).url + "/x.png": ("bad_redirect", "file: address"),
        server(to_ftp).url + "/x.png": ("bad_redirect", "ftp: address"),
    }
    ok = server(good).url
    start = time.monotonic()
    code, rows = predict_rows(*cases, ok + "/digit.png", ok + "/hop")
    took = time.monotonic() - start
    assert code == 1
    for row, (url, (kind, words)) in zip(rows, cases.items()):
        assert row["file"] == url and row.get("error_kind") == kind and words in row["error"], row
    assert [r.get("prediction") for r in rows[-2:]] == [2, 2], rows[-2:]
    assert took < 4 * 2.0 + 20, took  # four cases wait out the 2 s deadline; none waits longer


def test_a_redirect_from_a_public_address_to_a_private_one_is_refused(monkeypatch):
    """The tests' servers are all on 127.0.0.1, so 'public' is faked for one host name."""
    from lenet_cli.data import urls

    monkeypatch.setattr(urls, "is_public_host", lambda host: host == "public.example")

    with pytest.raises(ImageError, match="from a public address to a private one") as exc:
        urls._check_redirect("u", "http://public.example/x.png", "http://127.0.0.1/admin")
    assert exc.value.kind == "bad_redirect"
    # public -> public and private -> private are followed
    urls._check_redirect("u", "http://public.example/x.png", "https://public.example/y.png")
    urls._check_redirect("u", "http://127.0.0.1:8000/x.png", "http://localhost:9000/y.png")


def test_which_hosts_are_public():
    from lenet_cli.data import urls

    assert not urls.is_public_host("127.0.0.1")
    assert not urls.is_public_host("10.1.2.3") and not urls.is_public_host("169.254.169.254")
    assert not urls.is_public_host("[::1]") and not urls.is_public_host("no-such-host.invalid")
    assert urls.is_public_host("8.8.8.8")
