"""The README's screenshot of `lenet serve`'s page: start the server, draw a 4 with the mouse, save the page.

    python scripts/serve_screenshot.py docs/img/serve.png

Needs Playwright for Python (the test extra) and a Chromium (/usr/bin/chromium, or $LENET_TEST_CHROMIUM).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    proc = subprocess.Popen([sys.executable, "-m", "lenet_cli", "serve", "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        url = next(m.group(1) for line in proc.stderr if (m := re.search(r"lenet serve: (http://\S+?)/ ", line)))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=os.environ.get("LENET_TEST_CHROMIUM", "/usr/bin/chromium"),
                                         args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 620})
            page.goto(url + "/")
            box = page.locator("#pad").bounding_box()
            for stroke in ([(0.62, 0.85), (0.62, 0.12), (0.22, 0.6), (0.8, 0.6)],):  # a 4, in one stroke
                page.mouse.move(box["x"] + stroke[0][0] * box["width"], box["y"] + stroke[0][1] * box["height"])
                page.mouse.down()
                for x, y in stroke[1:]:
                    page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=12)
                page.mouse.up()
            page.wait_for_function("() => document.getElementById('prediction').textContent !== '–'", timeout=20_000)
            page.wait_for_timeout(300)  # the bars' final widths
            page.screenshot(path=str(args.output), full_page=True)
            print(f"{args.output}: the page predicts {page.locator('#prediction').text_content()}")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
