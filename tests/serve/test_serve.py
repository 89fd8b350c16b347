"""`lenet serve`: the API through the ASGI test client, the worker pool on a real server, and the real
`lenet serve` process (start, health, SIGTERM / Ctrl-C, port in use). The browser test is test_serve_browser.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import handwriting
import numpy as np
import pytest
import typer
from procs import alive, children
from typer.testing import CliRunner

from lenet_cli import __version__, api
from lenet_cli.cli.app import app as cli_app
from lenet_cli.inference.pipeline import PredictConfig, iter_predictions
from lenet_cli.model.weights import bundled_onnx_path, bundled_weights_path
from lenet_cli.serve.app import create_app
from lenet_cli.serve.classify import (
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    ServeConfig,
    served_model,
)
from lenet_cli.serve.server import bind, run
from lenet_cli.utils.signals import StopSignal


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def digit_png(label: int = 3, style: str = "pen", seed: int = 0) -> bytes:
    return png_bytes(handwriting.render(label, style, np.random.default_rng(seed)).image.convert("RGB"))


@pytest.fixture(scope="module")
def model():
    return served_model(bundled_onnx_path(), bundled=True)


@pytest.fixture(scope="module")
def client(model):
    from fastapi.testclient import TestClient

    with TestClient(create_app(model), raise_server_exceptions=True) as c:
        yield c


def post_raw(client, data: bytes, content_type: str = "image/png", query: str = ""):
    return client.post(f"/api/predict{query}", content=data, headers={"content-type": content_type})


# ------------------------------------------------------------------ good images


@pytest.mark.parametrize("label", [0, 3, 7])
def test_a_drawn_digit_gets_the_same_row_as_lenet_predict(client, model, tmp_path, label):
    data = digit_png(label)
    (tmp_path / "d.png").write_bytes(data)
    (want,) = iter_predictions([tmp_path / "d.png"], model.backend.logits, PredictConfig(top_k=3))
    del want["file"]
    for response in (client.post("/api/predict", files={"file": ("d.png", data, "image/png")}),
                     post_raw(client, data)):
        assert response.status_code == 200, response.text
        row = response.json()
        assert row.pop("notes") == want.pop("notes", [])
        assert row == want and row["prediction"] == label


def test_preview_is_the_28x28_image_the_model_saw(client):
    from PIL import Image

    row = post_raw(client, digit_png(5), query="?preview=1&top_k=10").json()
    head, _, b64 = row["preview"].partition(",")
    assert head == "data:image/png;base64"
    seen = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert seen.size == (28, 28) and seen.mode == "L"
    assert len(row["top_k"]) == 10 and sorted(t["class"] for t in row["top_k"]) == list(range(10))
    assert abs(sum(t["probability"] for t in row["top_k"]) - 1) < 1e-5
    assert "preview" not in post_raw(client, digit_png(5)).json()


def test_jpeg_with_another_image_type_and_forced_polarity(client):
    img = handwriting.render(4, "pen", np.random.default_rng(2)).image.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    row = post_raw(client, buf.getvalue(), "image/jpeg").json()
    assert row["prediction"] == 4 and row["inverted"] is True
    assert post_raw(client, buf.getvalue(), "image/jpeg", "?invert=true").json() == row


# ------------------------------------------------------------------ bad input: 4xx JSON, and the next request is served


def _truncated(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def _jpeg_cut() -> bytes:
    buf = io.BytesIO()
    handwriting.render(3, "pen", np.random.default_rng(1)).image.convert("RGB").save(buf, format="JPEG", quality=90)
    return _truncated(buf.getvalue(), 1 / 3)


def _image(mode: str, size: tuple[int, int], colour) -> bytes:
    from PIL import Image

    return png_bytes(Image.new(mode, size, colour))


BAD = {
    "not an image": (lambda: b"hello, I am text", "image/png", 400, "not_image", "not an image"),
    "truncated png": (lambda: _truncated(digit_png(3, seed=1), 0.5), "image/png", 400, "corrupt", "truncated"),
    "truncated jpeg": (_jpeg_cut, "image/jpeg", 400, "corrupt", "truncated"),
    "empty": (lambda: b"", "image/png", 400, "empty", "empty"),
    "blank": (lambda: _image("RGB", (300, 200), (240, 240, 235)), "image/png", 422, "no_ink", "no ink"),
    "over the pixel limit": (lambda: _image("L", (4097, 4097), 255), "image/png", 413, "too_large", "4097x4097"),
    "decompression bomb": (lambda: _image("1", (9000, 9000), 1), "image/png", 413, "too_large", "too large"),
    "wrong content type": (lambda: digit_png(), "text/plain", 415, "unsupported_media_type", "multipart/form-data"),
    "no content type": (lambda: digit_png(), "", 415, "unsupported_media_type", "no content type"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_json_error_and_the_server_keeps_serving(client, case):
    make, content_type, status, kind, words = BAD[case]
    response = post_raw(client, make(), content_type)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_kind"] == kind and words in body["error"], body
    assert set(body) == {"error", "error_kind"}
    assert post_raw(client, digit_png(2)).json()["prediction"] == 2


def test_a_bad_file_in_a_form_and_a_form_without_the_file_field(client):
    response = client.post("/api/predict", files={"file": ("x.png", _truncated(digit_png(), 0.5), "image/png")})
    assert response.status_code == 400 and response.json()["error_kind"] == "corrupt", response.text
    response = client.post("/api/predict", files={"image": ("x.png", digit_png(), "image/png")})
    assert response.status_code == 400 and response.json()["error_kind"] == "missing_file"
    response = client.post("/api/predict", files={"file": (None, b"a text field, not a file")})
    assert response.status_code == 400 and response.json()["error_kind"] == "missing_file"


def test_the_byte_limit_holds_for_declared_and_chunked_bodies(client):
    big = b"\x89PNG" + b"\0" * MAX_UPLOAD_BYTES
    response = post_raw(client, big)
    assert response.status_code == 413 and response.json()["error_kind"] == "too_large"
    assert f"{MAX_UPLOAD_BYTES:,} bytes" in response.json()["error"]

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(11):
            yield b"\0" * (1024 * 1024)

    response = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert response.status_code == 413 and response.json()["error_kind"] == "too_large"
    response = client.post("/api/predict", files={"file": ("big.png", big, "image/png")})
    assert response.status_code == 413
    assert post_raw(client, digit_png(8)).json()["prediction"] == 8


def test_limits_are_the_documented_ones():
    page = (Path(__file__).parents[2] / "docs" / "commands" / "serve.md").read_text()  # the README links to it
    assert MAX_UPLOAD_BYTES == 10 * 1024 * 1024 and "10 MiB" in page
    assert MAX_UPLOAD_PIXELS == 4096 * 4096 and "4096x4096" in page


def test_bad_query_values_are_422_json(client):
    for query in ("?top_k=0", "?top_k=11", "?top_k=x", "?preview=maybe"):
        response = post_raw(client, digit_png(), query=query)
        assert response.status_code == 422 and response.json()["error_kind"] == "bad_request", query


# ------------------------------------------------------------------ health, model, docs, page, static, CORS


def test_health_and_model_metadata(client):
    assert client.get("/api/health").json() == {"status": "ok", "model": "lenet5-modern.onnx"}
    info = client.get("/api/model").json()
    meta = json.loads(bundled_weights_path().read_bytes()[8:8 + int.from_bytes(bundled_weights_path().read_bytes()[:8],
                                                                               "little")])["__metadata__"]
    assert info["preset"] == meta["preset"] == "modern"
    assert info["test_accuracy"] == json.loads(meta["metrics"])["test_accuracy"]
    assert info["source_weights_sha256"] == hashlib.sha256(bundled_weights_path().read_bytes()).hexdigest()
    assert info["source"] == "bundled" and info["backend"] == "onnxruntime"
    assert info["server_version"] == __version__


def test_openapi_documents_predict(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/png" in body
    assert {"/api/health", "/api/model"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_the_page_and_its_files_come_from_the_app_only(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="prediction"' in page.text and "<canvas" in page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text), "the page must not load anything from elsewhere"
    for name in re.findall(r"/static/([\w.]+)", page.text):
        assert client.get(f"/static/{name}").status_code == 200
    js = client.get("/static/app.js").text
    assert "http://" not in js and "https://" not in js


@pytest.mark.parametrize("path", ["/static/../serve.py", "/static/..%2fserve.py", "/static/%2e%2e/%2e%2e/pyproject.toml",
                                  "/static/index.html/..", "/static//etc/passwd", "/static/serve.py", "/../README.md"])
def test_no_path_reaches_the_filesystem(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response.json()["error_kind"] == "not_found", (path, response.text)


def test_no_cors_headers(client):
    response = client.options("/api/predict", headers={"Origin": "http://evil.example",
                                                       "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in response.headers
    response = client.post("/api/predict", content=digit_png(), headers={"content-type": "image/png",
                                                                         "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.slow
def test_safetensors_weights_are_exported_in_memory_and_agree_with_the_onnx_file(model):
    exported = served_model(bundled_weights_path())
    assert exported.info()["source"].startswith("safetensors")
    assert exported.info()["source_weights_sha256"] == model.info()["source_weights_sha256"]
    images = np.stack([np.asarray(handwriting.render(d, "marker", np.random.default_rng(d)).image.convert("L")
                                  .resize((28, 28)), dtype=np.uint8) for d in range(10)])
    np.testing.assert_allclose(exported.backend.logits(images), model.backend.logits(images), atol=1e-4)


# ------------------------------------------------------------------ the worker pool on a real server


def test_one_shared_session_and_at_most_workers_images_at_once(model):
    """Concurrent requests on a real uvicorn server: every answer right, never more than `workers` in the model."""
    workers, inside, most = 2, [0], [0]
    lock = threading.Lock()
    original = model.backend.logits

    def counting_logits(images):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.02)  # widen the window in which requests overlap
            return original(images)
        finally:
            with lock:
                inside[0] -= 1

    served = served_model(bundled_onnx_path(), bundled=True)
    served.backend.logits = counting_logits  # the one backend every request uses
    sock = bind("127.0.0.1", 0)
    stop, ready = StopSignal(), threading.Event()
    address: list[str] = []
    server = threading.Thread(target=run, args=(create_app(served, ServeConfig(threads=workers)), sock, stop,
                                                lambda url: (address.append(url), ready.set())), daemon=True)
    server.start()
    assert ready.wait(30)
    images = {d: digit_png(d, "marker", seed=d) for d in range(10)}
    answers: list[tuple[int, int, int]] = []

    def client(k: int) -> None:
        for i in range(5):
            d = (k + i) % 10
            req = urllib.request.Request(f"{address[0]}/api/predict", data=images[d],
                                         headers={"Content-Type": "image/png"})
            with urllib.request.urlopen(req, timeout=60) as res:
                answers.append((d, res.status, json.loads(res.read())["prediction"]))

    clients = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    stop.request()
    server.join(30)
    assert not server.is_alive()
    assert len(answers) == 40 and all(status == 200 for _, status, _ in answers)
    assert all(d == got for d, _, got in answers), answers
    assert 1 <= most[0] <= workers


# ------------------------------------------------------------------ the command


def test_serve_options_reach_the_request(monkeypatch, tmp_path):
    calls = []

    def recorder(request, events=None):
        calls.append(request)
        raise typer.Exit(0)

    monkeypatch.setattr(api, "serve", recorder)
    runner = CliRunner()
    assert runner.invoke(cli_app, ["serve"]).exit_code == 0
    assert calls == [api.ServeRequest()]  # the command's literal defaults are the request's
    result = runner.invoke(cli_app, ["serve", "--host", "0.0.0.0", "-p", "0", "--weights", str(tmp_path / "m.onnx"),
                                     "--workers", "3"])
    assert result.exit_code == 0, result.output
    assert calls[1] == api.ServeRequest(host="0.0.0.0", port=0, weights=tmp_path / "m.onnx", workers=3)
    for bad in (["--port", "70000"], ["--workers", "0"]):
        result = runner.invoke(cli_app, ["serve", *bad])
        assert result.exit_code == 2 and len(calls) == 2, result.output
    result = runner.invoke(cli_app, ["serve", "--help"])
    assert result.exit_code == 0 and "Examples" in result.output


def test_help_and_serve_startup_import_neither_torch_nor_the_web_stack_needlessly():
    code = ("import sys, runpy; sys.argv = ['lenet', '--help']\n"
            "try:\n    runpy.run_module('lenet_cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'starlette', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("[]"), out.stdout + out.stderr
    code = ("import sys\nfrom lenet_cli.serve.app import create_app\nfrom lenet_cli.serve.classify import served_model\nfrom lenet_cli.model.weights import bundled_onnx_path\n"
            "create_app(served_model(bundled_onnx_path(), True))\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def start_serve(*args: str) -> tuple[subprocess.Popen, str, str]:
    """`lenet serve --port 0 ...` in a subprocess; its address, read from the line it prints when ready,
    and what it printed on stderr until then."""
    proc = subprocess.Popen([sys.executable, "-m", "lenet_cli", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        found = re.search(r"lenet serve: (http://\S+?)/ ", line)
        if found:
            return proc, found.group(1), "".join(seen)
    proc.kill()
    raise AssertionError("lenet serve never said where it listens:\n" + "".join(seen))


@pytest.mark.slow
def test_an_upload_dropped_midway_is_no_server_error():
    """A client that closes its connection mid-upload gets no answer and leaves no traceback behind."""
    proc, url, _ = start_serve()
    try:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for content_type in ("image/png", "multipart/form-data; boundary=xyz"):
            with socket.create_connection((host, int(port))) as s:
                s.sendall(f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                          "Content-Length: 100000\r\n\r\n".encode() + b"--xyz" + b"x" * 1000)
                time.sleep(0.3)
        req = urllib.request.Request(f"{url}/api/predict", data=digit_png(6), headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(req, timeout=30) as res:  # still serving
            assert json.loads(res.read())["prediction"] == 6
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    assert "Stopped after 1 image(s) classified." in stderr


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_the_real_command_serves_and_stops_cleanly(how):
    proc, url, _ = start_serve()
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=30) as res:
            assert json.loads(res.read())["status"] == "ok"
        req = urllib.request.Request(f"{url}/api/predict", data=digit_png(6), headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(req, timeout=30) as res:
            assert json.loads(res.read())["prediction"] == 6
        assert url.startswith("http://127.0.0.1:")
        proc.send_signal(how)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Stopped after 1 image(s) classified." in stderr and "Traceback" not in stderr
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as s:  # nothing listens there any more (SO_REUSEADDR: as a restart would bind it)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_all_interfaces_warns_and_a_busy_port_is_one_line_and_exit_1():
    proc, url, before = start_serve("--host", "0.0.0.0")
    try:
        port = url.rsplit(":", 1)[1]
        busy = subprocess.run([sys.executable, "-m", "lenet_cli", "serve", "--port", port], capture_output=True,
                              text=True, timeout=60)
        assert busy.returncode == 1, busy.stderr
        assert "Cannot listen on" in busy.stderr and "--port 0" in busy.stderr and "Traceback" not in busy.stderr
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Warning:" in before and "all network interfaces" in before
    assert proc.returncode == 0 and "Stopped after 0 image(s) classified." in stderr


@pytest.mark.slow
def test_serving_processes_end_with_a_parent_killed_outright():
    """SIGKILL gives `lenet serve` no chance to stop its processes: they notice and stop themselves,
    instead of serving on as orphans that hold the port."""
    proc, url, _ = start_serve("--workers", "2")
    workers = children(proc.pid)
    assert len(workers) >= 2, workers  # the two serving processes (and multiprocessing's helpers)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and alive(workers):
        time.sleep(0.1)
    assert not alive(workers), workers
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with pytest.raises(OSError):  # nobody listens on the port any more
        socket.create_connection((host, int(port)), timeout=2).close()

