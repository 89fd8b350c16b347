"""`lenet predict` on real scans and beyond files: usps-train accuracy, thick strokes on small images,
the `not a digit` / `low confidence` notes and --min-confidence, http(s) URLs and stdin."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import handwriting
import numpy as np
import pytest
from typer.testing import CliRunner

from lenet_cli.cli.app import app
from lenet_cli.errors import EXIT_UNSURE

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
USPS = Path(os.environ.get("LENET_USPS_DIR", ROOT.parent / "shared" / "realworld" / "usps-train"))


def png_bytes(label: int = 3, style: str = "marker", seed: int = 0) -> bytes:
    buf = io.BytesIO()
    handwriting.render(label, style, np.random.default_rng(seed)).image.save(buf, format="PNG")
    return buf.getvalue()


def predict_json(*args, input: bytes | None = None) -> tuple[int, dict]:
    result = runner.invoke(app, ["predict", *[str(a) for a in args], "--json"], input=input)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


# ------------------------------------------------------------------ real scans, thick strokes


@pytest.mark.skipif(not USPS.is_dir(), reason=f"usps-train not found at {USPS} (set LENET_USPS_DIR)")
@pytest.mark.slow
def test_accuracy_on_real_usps_scans():
    """Real envelope digits (16x16, thick strokes): every 5th of usps-train, at least 98.8% right."""
    from lenet_cli.data.preprocess import prepare_file
    from lenet_cli.inference.backends import OnnxBackend
    from lenet_cli.model.weights import bundled_onnx_path

    files = sorted(USPS.glob("[0-9]/*.png"))[::5]
    labels = np.array([int(f.parent.name) for f in files])
    pixels = np.stack([prepare_file(f).pixels for f in files])
    predicted = OnnxBackend(bundled_onnx_path(), "cpu").logits(pixels).argmax(1)
    assert len(files) > 1000
    assert (predicted == labels).mean() >= 0.988


@pytest.mark.parametrize("side", [16, 24, 40])
def test_thick_strokes_on_small_images_stay_solid(side):
    """A bar of ink a quarter of the image wide must come out solid, not as two edges (a hollow 1 reads as 0)."""
    from lenet_cli.data.preprocess import to_mnist

    gray = np.ones((side, side), np.float32)
    gray[1:-1, side * 3 // 8 : side * 5 // 8] = 0.0  # a thick vertical stroke, dark on white, touching top and bottom
    pixels = to_mnist(gray).pixels
    middle = pixels[14, pixels[14] > 0]
    assert middle.size >= 3
    assert middle.min() > 200, pixels[14]  # no dark core between bright edges


# ------------------------------------------------------------------ confidence notes


@pytest.mark.slow
def test_not_digits_get_a_note_and_real_digits_do_not(tmp_path):
    """Specks, blobs and dashes carry `not a digit` (or `low confidence`); the drawn digits almost never do."""
    junk = handwriting.write(handwriting.not_digits(n_per_kind=6, seed=5), tmp_path / "junk")
    digits = handwriting.write(handwriting.generate(n_per_class=6, seed=5), tmp_path / "digits")
    _, report = predict_json(tmp_path / "junk")
    noted = [r for r in report["results"] if r["notes"]]
    assert len(report["results"]) == len(junk) == 18
    assert len(noted) >= 16, [(r["file"], r["notes"]) for r in report["results"]]
    solid = [r for r in report["results"] if "-speck-" in r["file"] or "-blob-" in r["file"]]
    assert sum(any(n.startswith("not a digit") for n in r["notes"]) for r in solid) >= len(solid) - 1
    _, report = predict_json(tmp_path / "digits")
    assert len(report["results"]) == len(digits) == 60
    assert sum(bool(r["notes"]) for r in report["results"]) <= 1


def _blob(path: Path) -> None:
    """A round smudge of ink on white paper."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (120, 100), 250)
    ImageDraw.Draw(img).ellipse((40, 30, 75, 68), fill=20)
    img.save(path)


def test_min_confidence_exit_code_and_message(tmp_path):
    (tmp_path / "three.png").write_bytes(png_bytes(3))
    _blob(tmp_path / "blob.png")
    result = runner.invoke(app, ["predict", str(tmp_path / "three.png"), "--min-confidence", "0.5"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "three.png"), str(tmp_path / "blob.png"),
                                 "--min-confidence", "0.5"])
    assert result.exit_code == EXIT_UNSURE == 3, result.output
    assert "1 of 2 prediction(s) below --min-confidence 0.5 or not a digit" in result.output
    assert "blob.png: not a digit" in result.output
    # A confident digit under an impossible bar: the same exit code, and the JSON still on stdout.
    result = runner.invoke(app, ["predict", str(tmp_path / "three.png"), "--min-confidence", "1", "--json"])
    assert result.exit_code == 3
    row = json.loads(result.stdout)["results"][0]
    assert row["prediction"] == 3 and row["confidence"] < 1.0
    # Without --min-confidence, notes never change the exit code.
    assert runner.invoke(app, ["predict", str(tmp_path / "blob.png")]).exit_code == 0
    result = runner.invoke(app, ["predict", str(tmp_path / "three.png"), "--min-confidence", "1.5"])
    assert result.exit_code == 2


def test_notes_in_the_table_and_csv(tmp_path):
    _blob(tmp_path / "blob.png")
    result = runner.invoke(app, ["predict", str(tmp_path / "blob.png"), "--output", str(tmp_path / "rows.csv")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "not a digit" in result.output
    import csv

    rows = list(csv.DictReader(open(tmp_path / "rows.csv", encoding="utf-8")))
    assert rows[0]["notes"].startswith("not a digit")
    # A second run does not replace those rows unless asked: refused before any image is read.
    again = ["predict", str(tmp_path / "blob.png"), "--output", str(tmp_path / "rows.csv")]
    before = (tmp_path / "rows.csv").read_bytes()
    result = runner.invoke(app, again)
    assert result.exit_code == 1 and "exists already" in result.output
    assert (tmp_path / "rows.csv").read_bytes() == before
    assert runner.invoke(app, [*again, "--exist-ok"]).exit_code == 0


def test_low_confidence_note(monkeypatch, tmp_path):
    """A top probability under the threshold gets the note (forced here: the model is too sure of a clean 3)."""
    import lenet_cli.inference.pipeline as core

    (tmp_path / "three.png").write_bytes(png_bytes(3))
    _, report = predict_json(tmp_path / "three.png")
    assert "low confidence" not in report["results"][0]["notes"]
    monkeypatch.setattr(core.PredictConfig, "__init__", _with_low_confidence(core.PredictConfig.__init__, 1.01))
    _, report = predict_json(tmp_path / "three.png")
    assert report["results"][0]["notes"] == ["low confidence"]


def _with_low_confidence(init, value):
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        object.__setattr__(self, "low_confidence", value)
    return patched


# ------------------------------------------------------------------ stdin


def test_stdin(tmp_path):
    code, report = predict_json("-", input=png_bytes(7, seed=3))
    assert code == 0, report
    row = report["results"][0]
    assert row["file"] == "-" and row["prediction"] == 7 and "error" not in row


@pytest.mark.parametrize("data,kind", [(b"", "empty"), (b"hello, I am text", "not_image"),
                                       (png_bytes(3)[:200], "corrupt")])
def test_stdin_bad_input(data, kind):
    code, report = predict_json("-", input=data)
    assert code == 1
    assert report["results"][0]["error_kind"] == kind


def test_stdin_too_large(monkeypatch):
    import lenet_cli.data.sources as imagefiles

    monkeypatch.setattr(imagefiles, "MAX_DOWNLOAD_BYTES", 100)
    code, report = predict_json("-", input=png_bytes(3))
    assert code == 1 and report["results"][0]["error_kind"] == "too_large"


def test_stdin_and_url_in_a_real_process_without_torch(http_server):
    """`cat digit.png | lenet predict - URL`: real stdin, a real socket, and torch never imported."""
    code = (
        "import sys\nfrom lenet_cli.cli.app import main\n"
        f"sys.argv = ['lenet', 'predict', '-', {http_server + '/digit.png'!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], input=png_bytes(4, seed=1), capture_output=True, timeout=120)
    stdout = out.stdout.decode()
    assert out.returncode == 0, out.stderr.decode()
    assert stdout.strip().endswith("NOTORCH"), stdout[-500:]
    rows = json.loads(stdout[: stdout.rindex("}") + 1])["results"]
    assert [r["prediction"] for r in rows] == [4, 2]


# ------------------------------------------------------------------ URLs, against a server on 127.0.0.1


class _Handler(BaseHTTPRequestHandler):
    bodies: dict[str, bytes] = {}  # made once by the fixture: the handler must answer fast

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/digit.png":
            self._send(200, "image/png", self.bodies["two"])
        elif self.path == "/octet":
            self._send(200, "application/octet-stream", self.bodies["five"])
        elif self.path == "/page.html":
            self._send(200, "text/html", b"<html><body>not here</body></html>")
        elif self.path == "/error":
            self._send(500, "text/plain", b"boom")
        elif self.path == "/big":
            self._send(200, "image/png", b"\x89PNG" + b"0" * 20000)
        elif self.path == "/big-no-length":  # no Content-Length: the limit must hold while reading
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(b"\x89PNG" + b"0" * 20000)
            self.close_connection = True
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, "image/png", self.bodies["two"])
        else:
            self._send(404, "text/plain", b"no such thing")

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def http_server():
    _Handler.bodies = {"two": png_bytes(2, seed=4), "five": png_bytes(5, seed=2)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # the client hanging up on /slow is the point
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed at once: nothing listens there


def test_url(http_server, tmp_path):
    (tmp_path / "local.png").write_bytes(png_bytes(8, seed=6))
    code, report = predict_json(f"{http_server}/digit.png", f"{http_server}/octet", tmp_path / "local.png",
                                "--save-preview", tmp_path / "prev")
    assert code == 0, report
    rows = report["results"]
    assert [r["prediction"] for r in rows] == [2, 5, 8]
    assert rows[0]["file"] == f"{http_server}/digit.png"
    assert sorted(p.name for p in (tmp_path / "prev").iterdir()) == ["digit.png", "local.png", "octet.png"]


@pytest.mark.slow
def test_url_errors(http_server, monkeypatch):
    import lenet_cli.data.sources as imagefiles

    monkeypatch.setattr(imagefiles, "MAX_DOWNLOAD_BYTES", 8000)
    monkeypatch.setattr(imagefiles, "URL_TIMEOUT_S", 1.0)
    cases = {
        f"{http_server}/missing.png": ("not_found", "HTTP 404"),
        f"{http_server}/error": ("http_error", "HTTP 500"),
        f"{http_server}/page.html": ("not_image", "the server sent text/html"),
        f"{http_server}/big": ("too_large", "over the limit of 8,000"),
        f"{http_server}/big-no-length": ("too_large", "over the download limit of 8,000"),
        f"{http_server}/slow": ("timeout", "no answer within 1 s"),
        f"http://127.0.0.1:{_free_port()}/digit.png": ("unreachable", "cannot connect"),
    }
    code, report = predict_json(*cases, f"{http_server}/digit.png")
    assert code == 1
    rows = report["results"]
    for row, (kind, text) in zip(rows, cases.values()):
        assert row["error_kind"] == kind and text in row["error"], row
        assert "prediction" not in row
    assert rows[-1].get("prediction") == 2, rows[-1]  # a bad URL never stops the others


def test_url_error_summary_line(http_server):
    result = runner.invoke(app, ["predict", f"{http_server}/missing.png"])
    assert result.exit_code == 1
    assert f"{http_server}/missing.png: the server answered HTTP 404" in result.output


def _line(angle: float, length: float = 18.0, width: float = 1.2) -> np.ndarray:
    """A straight stroke through the centre of a 28x28 frame, `angle` degrees from horizontal."""
    yy, xx = np.mgrid[0:28, 0:28] - 13.5
    ux, uy = np.cos(np.radians(angle)), -np.sin(np.radians(angle))
    along, across = xx * ux + yy * uy, -xx * uy + yy * ux
    return np.where((abs(along) <= length / 2) & (abs(across) <= width), 255, 0).astype(np.uint8)


@pytest.mark.parametrize("angle", [0, 15, -20, 25])
def test_a_tilted_dash_is_a_flat_line_even_when_its_box_is_not(angle):
    from lenet_cli.data.preprocess import NOT_A_DIGIT, shape_notes

    assert f"{NOT_A_DIGIT}: a flat line" in shape_notes(_line(angle))


@pytest.mark.parametrize("angle", [60, 75, 90, -80])
def test_a_steep_line_is_how_people_write_a_one_and_gets_no_note(angle):
    from lenet_cli.data.preprocess import shape_notes

    assert shape_notes(_line(angle)) == []
