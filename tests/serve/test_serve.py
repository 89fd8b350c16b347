"""`lenet serve`'s API through the ASGI test client: good images, bad input answered 4xx JSON, health,
model metadata, docs, the page and its files. Real servers and the command: test_serve_process.py;
the browser: test_serve_browser.py; hostile clients: test_hostile.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path

import handwriting
import numpy as np
import pytest
from serve_client import digit_png, png_bytes

from lenet_cli import __version__
from lenet_cli.inference.pipeline import PredictConfig, iter_predictions
from lenet_cli.model.weights import bundled_weights_path
from lenet_cli.serve.classify import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, served_model


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
