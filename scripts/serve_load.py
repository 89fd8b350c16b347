"""A bounded load test of `lenet serve` on loopback: N requests from C concurrent clients, then the figures.

    python scripts/serve_load.py --requests 2000 --clients 16

Starts `lenet serve --port 0` (the bundled model) unless --url names a running server. Each client is
a thread with one keep-alive connection (the standard library's http.client), posting 40x40 PNGs of
drawn digits (scripts/make_digit_files.py's strokes, dark ink on white) as raw image/png bodies, and
timing each request from send to parsed answer. The clients run on the same machine as the server.
Prints requests/s, p50/p99 latency, every status seen, errors (any non-200 or failed connection) and
how many answers were the drawn digit.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))
from make_digit_files import STROKES  # noqa: E402 - the README's digit files, drawn the same way


def digit_pngs() -> list[tuple[int, bytes]]:
    from PIL import Image, ImageDraw

    out = []
    for i in range(50):
        img = Image.new("L", (40, 40), 255)
        draw = ImageDraw.Draw(img)
        shift = (i // 10) % 5 - 2
        for line in STROKES[i % 10]:
            draw.line([(x + shift, y) for x, y in line], fill=0, width=3 + i % 3)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append((i % 10, buf.getvalue()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--url", help="a running server (default: start `lenet serve --port 0`)")
    args = parser.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc = subprocess.Popen([sys.executable, "-m", "lenet_cli", "serve", "--port", "0"],
                                stderr=subprocess.PIPE, text=True)
        url = next(m.group(1) for line in proc.stderr if (m := re.search(r"lenet serve: (http://\S+?)/ ", line)))
    host = urlsplit(url)
    images = digit_pngs()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    right = [0]
    lock = threading.Lock()
    counter = iter(range(args.requests))

    def client() -> None:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
        for i in counter:  # shared: the clients together make exactly --requests requests
            label, body = images[i % len(images)]
            start = time.perf_counter()
            try:
                conn.request("POST", "/api/predict", body=body, headers={"Content-Type": "image/png"})
                res = conn.getresponse()
                data = json.loads(res.read())
                status = str(res.status)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                status, data = type(exc).__name__, {}
                conn.close()
                conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
            took = time.perf_counter() - start
            with lock:
                latencies.append(took)
                statuses[status] = statuses.get(status, 0) + 1
                right[0] += data.get("prediction") == label
        conn.close()

    try:
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    latencies.sort()
    errors = sum(n for s, n in statuses.items() if s != "200")

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    print(f"{len(latencies)} requests from {args.clients} clients in {wall:.2f} s: {len(latencies) / wall:.0f} requests/s, "
          f"p50 {pct(0.50):.1f} ms, p99 {pct(0.99):.1f} ms, max {1000 * latencies[-1]:.1f} ms")
    print(f"statuses {statuses}, errors {errors}, answers that were the drawn digit {right[0]}/{len(latencies)}")


if __name__ == "__main__":
    main()
