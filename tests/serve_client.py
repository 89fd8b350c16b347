"""What the tests of `lenet serve` share: digit images as PNG bytes, and the real command started on a free port."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import handwriting
import numpy as np


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def digit_png(label: int = 3, style: str = "pen", seed: int = 0) -> bytes:
    return png_bytes(handwriting.render(label, style, np.random.default_rng(seed)).image.convert("RGB"))


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
