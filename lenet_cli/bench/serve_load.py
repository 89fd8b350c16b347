"""`lenet bench --serve`: requests/s of `lenet serve` beside a bare FastAPI upload endpoint, same client, same run.

The "serve" job of worker.py. It starts both servers as subprocesses on free loopback ports
(`python -m lenet_cli serve --port P --weights MODEL` and bare_server.py), waits for their
`GET /api/health`, then for each image kind (the serve page's 280x280 canvas PNG, a 1050x800
drawing) drives them in turn, lenet then bare, `rounds` times, `seconds` each: `clients` threads,
each with one keep-alive connection (the standard library's http.client), posting the image as a
raw image/png body and timing each request from send to parsed answer. Both servers are up the
whole time (an idle one costs nothing), so each pair of runs meets the same machine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from lenet_cli.bench import images
from lenet_cli.bench.processes import _worker_env
from lenet_cli.bench.predict_path import job_digits

START_TIMEOUT = 60.0  # seconds for a server to answer its health check (lenet serve loads onnxruntime)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/api/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def start_server(cmd: list[str], port: int, name: str) -> subprocess.Popen:
    """Start a server and wait for its health check; RuntimeError with its last stderr line if it never answers."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=_worker_env())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if _healthy(port):
            return proc
        time.sleep(0.1)
    stop_server(proc)
    last = [line for line in (proc.stderr.read() if proc.stderr else "").splitlines() if line.strip()]
    raise RuntimeError(f"{name} did not answer on port {port}" + (f": {last[-1][:200]}" if last else ""))


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def drive(port: int, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` threads post `body` to /api/predict for `seconds`: requests, errors and every latency (s)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    headers = {"Content-Type": "image/png"}
    start = time.perf_counter()
    deadline = start + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, bad = [], 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/predict", body=body, headers=headers)
                res = conn.getresponse()
                json.loads(res.read())
                ok = res.status == 200
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            if ok:
                mine.append(time.perf_counter() - t0)
            else:
                bad += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - start, "latencies": latencies, "errors": errors[0]}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """req/s (answered 200) over all rounds, p50/p99 ms of their pooled latencies, errors."""
    lat = np.array([x for r in runs for x in r["latencies"]], np.float64)
    seconds = sum(r["seconds"] for r in runs)
    p50, p99 = (float(np.percentile(lat, q)) * 1e3 if lat.size else float("nan") for q in (50, 99))
    return {"requests": int(lat.size), "requests_per_s": lat.size / seconds, "p50_ms": p50, "p99_ms": p99,
            "errors": sum(r["errors"] for r in runs)}


def serve_inputs(job: dict[str, Any]) -> dict[str, bytes]:
    """The posted images: the serve page's canvas and a ~1 MP drawing, from one digit."""
    digit = job_digits(job, 1)[0]
    return {"canvas 280x280 PNG": images.canvas_png(digit), "drawing 1050x800 PNG": images.drawing_png(digit)}


def measure_serve(job: dict[str, Any]) -> dict[str, Any]:
    """Per image kind: `lenet serve`'s and the bare endpoint's req/s, p50/p99 ms, and the ratio."""
    clients, seconds, rounds = job.get("clients", 16), job.get("seconds", 1.5), job.get("rounds", 2)
    ports = {"lenet": free_port(), "bare": free_port()}
    lenet_cmd = [sys.executable, "-m", "lenet_cli", "serve", "--port", str(ports["lenet"])]
    if job.get("onnx"):
        lenet_cmd += ["--weights", job["onnx"]]
    cmds = {"lenet": lenet_cmd, "bare": [sys.executable, "-m", "lenet_cli.bench.bare_server", str(ports["bare"])]}
    procs: dict[str, subprocess.Popen] = {}
    rows = []
    try:
        for name in ("lenet", "bare"):
            procs[name] = start_server(cmds[name], ports[name], "lenet serve" if name == "lenet" else "the bare endpoint")
        for kind, body in serve_inputs(job).items():
            runs: dict[str, list[dict[str, Any]]] = {"lenet": [], "bare": []}
            for name in ("lenet", "bare"):  # warm-up: first requests pay for lazy imports and caches
                drive(ports[name], body, clients, min(0.3, seconds))
            for _ in range(rounds):
                for name in ("lenet", "bare"):
                    runs[name].append(drive(ports[name], body, clients, seconds))
            lenet, bare = _summary(runs["lenet"]), _summary(runs["bare"])
            rows.append({"kind": kind, "bytes": len(body), "lenet": lenet, "bare": bare,
                         "ratio": lenet["requests_per_s"] / bare["requests_per_s"] if bare["requests_per_s"] else None})
    finally:
        for proc in procs.values():
            with contextlib.suppress(OSError):
                stop_server(proc)
    return {"serve": rows, "clients": clients, "seconds": seconds, "rounds": rounds}
