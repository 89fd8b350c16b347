"""A load test of `lenet serve` on loopback, beside a bare FastAPI upload endpoint in the same run.

    python scripts/serve_load.py                       # each image kind: lenet, then the bare endpoint
    python scripts/serve_load.py --soak 600 --clients 32   # ten minutes at full load: answers, memory

Image kinds, each posted as raw image/png or image/jpeg bodies with its true label:
  canvas: the page's own 280x280 PNG (bright strokes on opaque black, as static/app.js sends it);
  drawing-1mp: a 1155x866 PNG drawing, dark ink on white;
  photo: real phone photos and scans of digits from the drawn-dev set (--photos).
Both servers run as `--workers` uvicorn processes on one port: `lenet serve --workers N`, and
uvicorn on `bare_app` below (reads the upload, answers {"bytes": ...}). Each client is a thread
with one keep-alive connection (http.client), timing each request from send to parsed answer; the
clients run on the same machine as the servers. Prints req/s and p50/p99 per kind and server, and
the ratio lenet/bare. --soak: every client posts every kind in turn for that many seconds; every
answer is checked, and the servers' resident memory (all their processes) is sampled.
"""

import argparse
import http.client
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from lenet_cli.bench.bare_server import create_app

# The checkout's neighbour `shared/` (a worktree sits one level deeper): where the real-image sets live.
REALWORLD = next((p / "shared" / "realworld" / "drawn-dev" for p in Path(__file__).resolve().parents[1:4]
                  if (p / "shared" / "realworld" / "drawn-dev").is_dir()), Path("shared/realworld/drawn-dev"))
PHOTO_SETS = ("ericadgjl-huang_Handwriting_Recognition", "Abhighule24_", "ashishdasu_", "PratikPatil0810_")


# The bare endpoint is `lenet bench --serve`'s (lenet_cli/bench/bare_server.py); uvicorn imports it from here.
bare_app = create_app() if __name__ != "__main__" else None


def canvas_png(label: int, size: tuple[int, int] = (280, 280), dark_on_white: bool = False) -> bytes:
    """A digit drawn as on the page: strokes of the page's pen width, scaled to `size`."""
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(Path(__file__).parent))
    from make_digit_files import STROKES  # the strokes of a 40x40 digit

    scale = min(size) / 40
    img = Image.new("L", size, 255 if dark_on_white else 0)
    draw = ImageDraw.Draw(img)
    dx = (size[0] - 40 * scale) / 2
    for line in STROKES[label]:
        draw.line([(dx + x * scale, y * scale) for x, y in line], fill=0 if dark_on_white else 255,
                  width=int(2.5 * scale), joint="curve")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_sets(photos: Path) -> dict[str, list[tuple[int, bytes, str]]]:
    """kind -> [(label, body, content type)]."""
    sets = {"canvas": [(d, canvas_png(d), "image/png") for d in range(10)],
            "drawing-1mp": [(d, canvas_png(d, (1155, 866), True), "image/png") for d in range(10)]}
    files = sorted(f for f in photos.glob("[0-9]/*") if f.name.startswith(PHOTO_SETS))
    if files:
        sets["photo"] = [(int(f.parent.name), f.read_bytes(),
                          "image/jpeg" if f.suffix.lower() in (".jpg", ".jpeg") else "image/png") for f in files]
    return sets


def start(cmd: list[str], pattern: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        found = re.search(pattern, line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, found.group(1)
    raise SystemExit(f"{cmd[:4]} did not start")


def start_servers(workers: int) -> dict[str, tuple[subprocess.Popen, str]]:
    lenet = start([sys.executable, "-m", "lenet_cli", "serve", "--port", "0", "--workers", str(workers)],
                  r"lenet serve: http://\S+?:(\d+)/ ")
    port = str(int(lenet[1]) + 1)
    bare = start([sys.executable, "-m", "uvicorn", "serve_load:bare_app", "--app-dir", str(Path(__file__).parent),
                  "--port", port, "--workers", str(workers), "--log-level", "info", "--no-access-log"], r"(Application startup complete)")
    time.sleep(1.0 * workers)  # every bare process up, not only the first
    return {"lenet": lenet, "bare": (bare[0], port)}


def rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total / 2**20


def load(port: str, images: list, clients: int, requests: int | None, seconds: float | None,
         check: bool) -> dict:
    """`requests` requests in all (or for `seconds`) from `clients` threads; latencies, statuses, wrong answers."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    wrong = [0]
    lock = threading.Lock()
    counter = iter(range(requests if requests is not None else 10**12))
    end = time.perf_counter() + seconds if seconds else None

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
        for i in counter:
            if end is not None and time.perf_counter() > end:
                break
            label, body, kind = images[(i + k) % len(images)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/predict", body=body, headers={"Content-Type": kind})
                res = conn.getresponse()
                data, status = json.loads(res.read()), str(res.status)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                status, data = type(exc).__name__, {}
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
            took = time.perf_counter() - t0
            with lock:
                latencies.append(took)
                statuses[status] = statuses.get(status, 0) + 1
                wrong[0] += check and (status != "200" or data.get("prediction") != label)
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {"n": len(latencies), "rps": len(latencies) / wall, "p50": pct(0.5), "p99": pct(0.99),
            "statuses": statuses, "wrong": wrong[0]}


def soak(servers: dict, sets: dict, clients: int, seconds: float) -> None:
    """Every kind in turn, for `seconds`, sampling the servers' memory every 10 s."""
    images = [img for imgs in sets.values() for img in imgs]
    proc, port = servers["lenet"]
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not done.wait(10):
            samples.append((time.perf_counter() - t0, rss_mib(proc.pid)))

    threading.Thread(target=sample, daemon=True).start()
    start_rss = rss_mib(proc.pid)
    result = load(port, images, clients, None, seconds, check=True)
    done.set()
    warm = [m for t, m in samples if t >= min(60, seconds / 5)]
    print(f"soak {seconds:g} s, {clients} clients, {len(images)} images ({', '.join(sets)}): {result['n']} requests, "
          f"{result['rps']:.0f} req/s, p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms")
    print(f"  statuses {result['statuses']}, wrong or failed answers {result['wrong']}")
    if warm:
        print(f"  server RSS (all processes): {start_rss:.0f} MiB at start, {warm[0]:.0f} MiB after warm-up, "
              f"{max(warm):.0f} MiB max, {warm[-1]:.0f} MiB at the end ({len(samples)} samples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per image kind and server")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="serving processes, both servers")
    parser.add_argument("--photos", type=Path, default=REALWORLD, help="the drawn-dev folder (its photos)")
    parser.add_argument("--soak", type=float, default=0, help="seconds of soak instead of the comparison")
    args = parser.parse_args()
    sets = image_sets(args.photos)
    servers = start_servers(args.workers)
    try:
        if args.soak:
            soak(servers, sets, args.clients, args.soak)
            return
        for kind, images in sets.items():
            figures = {}
            for name in ("lenet", "bare"):
                load(servers[name][1], images, args.clients, 50, None, check=False)  # warm-up
                figures[name] = r = load(servers[name][1], images, args.clients, args.requests, None,
                                         check=name == "lenet")
                print(f"{kind:12} {name:5}: {r['rps']:6.0f} req/s, p50 {r['p50']:6.1f} ms, p99 {r['p99']:6.1f} ms, "
                      f"statuses {r['statuses']}" + (f", wrong {r['wrong']}" if name == "lenet" else ""))
            print(f"{kind:12} lenet/bare: {figures['lenet']['rps'] / figures['bare']['rps']:.2f}x")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
