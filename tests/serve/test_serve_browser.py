"""`lenet serve`'s page in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright)
draws digits on the canvas with mouse events and reads `#prediction`; then uploads a file.

The browser is $LENET_TEST_CHROMIUM, else /usr/bin/chromium (`.ci/run` installs it); without one
the tests are skipped with the reason, never passed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import handwriting
import numpy as np
import pytest
from serve_client import start_serve

pytestmark = pytest.mark.slow  # every test here starts a browser

CHROMIUM = os.environ.get("LENET_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(playwright):
    """Headless Chromium from the system's package (Playwright's own browser downloads are not used)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])


@pytest.fixture(scope="module")
def page():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` (as .ci/run does) or set LENET_TEST_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install -e '.[test]')")
    proc, url, _ = start_serve()
    try:
        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw)
            pg = browser.new_page(viewport={"width": 1000, "height": 720})
            # Script errors, CSP violations, anything fetched from another origin, failed responses (by URL).
            pg.problems = []
            pg.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                  and pg.problems.append(m.text))
            pg.on("pageerror", lambda e: pg.problems.append(str(e)))
            pg.on("request", lambda r: r.url.startswith(url) or pg.problems.append(f"request to {r.url}"))
            pg.on("response", lambda r: r.status >= 400 and pg.problems.append(f"{r.status} {r.url}"))
            pg.goto(url + "/")
            yield pg
            browser.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Mouse strokes on the canvas; points in [0, 1] of its width and height."""
    box = page.locator("#pad").bounding_box()
    for points in strokes:
        x, y = points[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()


def wait_for_prediction(page, digit: str) -> None:
    page.wait_for_function("d => document.getElementById('prediction').textContent === d", arg=digit, timeout=20_000)


def test_drawing_on_the_canvas_shows_the_digit_bars_and_preview(page):
    page.click("#clear")
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])  # a 1: one vertical stroke
    wait_for_prediction(page, "1")
    page.click("#clear")
    assert page.locator("#prediction").text_content() == "–"
    draw(page, [[(0.25, 0.2), (0.75, 0.2)], [(0.75, 0.2), (0.45, 0.85)]])  # a 7: a bar, then the diagonal
    wait_for_prediction(page, "7")
    assert page.locator("#bars li").count() == 10
    assert page.locator("#bars li.top").get_attribute("aria-label").startswith("digit 7: ")
    assert page.locator("#preview").get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.getElementById('preview').naturalWidth") == 28
    assert page.problems == [], page.problems


def test_uploading_a_file_shows_its_digit(page, tmp_path):
    sample = handwriting.render(3, "pen", np.random.default_rng(0))
    path = tmp_path / "three.png"
    sample.image.convert("RGB").save(path)
    page.click("#clear")
    page.set_input_files("#file", str(path))
    wait_for_prediction(page, "3")
    assert "inverted" in page.locator("#notes").text_content()  # dark pen on white paper
    page.set_input_files("#file", str(Path(__file__)))  # not an image: the error is shown, the page goes on
    page.wait_for_function("() => document.getElementById('error').textContent.includes('not_image')", timeout=20_000)
    assert page.locator("#prediction").text_content() == "–"
    assert page.problems == [f"400 {page.url.rstrip('/')}/api/predict?preview=1&top_k=10"], page.problems
    page.problems.clear()


def test_the_page_can_be_used_from_the_keyboard(page):
    labels = page.evaluate("""() => ({
        pad: document.getElementById('pad').getAttribute('aria-label'),
        file: document.querySelector('label[for=file]').textContent,
        live: document.getElementById('prediction').getAttribute('aria-live')})""")
    assert labels["pad"] and labels["file"].startswith("Upload") and labels["live"] == "polite"
    page.focus("#pad")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "clear"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file"
