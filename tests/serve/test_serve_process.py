"""`lenet serve` on real sockets: the worker pool of one process, and the real command (start, health,
SIGTERM / Ctrl-C, a dropped upload, port in use, the imports it avoids)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import typer
from procs import alive, children
from serve_client import digit_png, start_serve
from typer.testing import CliRunner

from lenet_cli import api
from lenet_cli.cli.app import app as cli_app
from lenet_cli.model.weights import bundled_onnx_path
from lenet_cli.serve.app import create_app
from lenet_cli.serve.classify import ServeConfig, served_model
from lenet_cli.serve.server import bind, run
from lenet_cli.utils.signals import StopSignal

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
