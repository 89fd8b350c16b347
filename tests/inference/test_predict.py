"""`lenet predict`: every input kind, accuracy on digits made outside MNIST, the backends.
Bad inputs, each in its own row: test_predict_bad_inputs.py."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import handwriting
import numpy as np
import pytest
from predict_cli import digit_image, predict, runner

from lenet_cli.cli.app import app


def accuracy(rows: list[dict], labels: dict[str, int]) -> float:
    right = sum(r.get("prediction") == labels[Path(r["file"]).name] for r in rows)
    return right / len(rows)


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read()
    return np.frombuffer(raw, np.uint8, offset=16 if raw[3] == 3 else 8)


# ------------------------------------------------------------------ accuracy


@pytest.mark.slow
def test_accuracy_on_drawn_digits(tmp_path):
    """>= 97% on 300 Pillow-drawn digits: thin pens on big canvases, photos, icons, both polarities."""
    labels = handwriting.write(handwriting.generate(n_per_class=30, seed=0), tmp_path / "set")
    code, report = predict(tmp_path / "set")
    assert code == 0
    rows = report["results"]
    assert len(rows) == 300 and report["backend"] == "onnxruntime"
    assert accuracy(rows, labels) >= 0.97
    for style in handwriting.STYLES:  # no style may be the weak spot hidden by the others
        mine = [r for r in rows if f"-{style}-" in r["file"]]
        assert accuracy(mine, labels) >= 0.9, style
    def inverted(style: str) -> list[bool]:
        return [r["inverted"] for r in rows if f"-{style}-" in r["file"]]

    # Dark ink on (often mid-grey) paper is inverted; chalk on a board never is.
    assert all(inverted("pen")) and all(inverted("photo")) and all(inverted("scan"))
    assert not any(inverted("chalk")) and not any(inverted("icon"))


@pytest.mark.real_mnist
@pytest.mark.slow
def test_accuracy_on_real_handwriting_redrawn(real_mnist, tmp_path):
    """Real people's digits (MNIST test set) re-drawn with thin pens, as photos, icons, ...: >= 97%."""
    images = read_idx(real_mnist / "t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28)
    targets = read_idx(real_mnist / "t10k-labels-idx1-ubyte.gz")
    # 400 digits: the rate measured on 600 is 98.7%, so 97% leaves room for ~7 unlucky draws.
    pick = np.random.default_rng(1).choice(len(images), 400, replace=False)
    labels = handwriting.write(handwriting.from_mnist(images[pick], targets[pick], seed=1), tmp_path / "set")
    code, report = predict(tmp_path / "set")
    assert code == 0
    assert accuracy(report["results"], labels) >= 0.97


@pytest.mark.real_mnist
def test_mnist_form_passes_through_unchanged(real_mnist, tmp_path):
    """Images already in MNIST form are not touched: predictions equal the model's on the raw pixels."""
    from PIL import Image

    from lenet_cli.inference.backends import load_backend
    from lenet_cli.model.weights import bundled_onnx_path

    images = read_idx(real_mnist / "t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28)[:100]
    folder = tmp_path / "mnist-png"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    code, report = predict(folder, "--save-preview", tmp_path / "prev")
    assert code == 0
    rows = report["results"]
    assert all(r["passthrough"] for r in rows)
    want = load_backend(bundled_onnx_path(), "cpu").logits(images).argmax(1)
    assert [r["prediction"] for r in rows] == want.tolist()
    for i in (0, 57):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "prev" / f"{i:03d}.png")), images[i])


# ------------------------------------------------------------------ input kinds


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".gif", ".tiff", ".webp"])
def test_every_format(tmp_path, suffix):
    path = tmp_path / f"seven{suffix}"
    digit_image(7, "marker", seed=3).save(path)
    code, report = predict(path)
    assert code == 0 and report["results"][0]["prediction"] == 7


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "I;16", "P", "1"])
def test_every_pixel_mode(tmp_path, mode):
    from PIL import Image

    ink = np.asarray(digit_image(2, "marker", seed=4).convert("L"), dtype=np.float32) / 255  # dark on light
    dark = 1.0 - ink if ink.mean() < 0.5 else ink  # make it dark ink on light paper either way
    if mode in ("RGBA", "LA"):  # an icon: a coloured digit on a transparent background
        alpha = ((1.0 - dark) * 255).astype(np.uint8)
        colour = np.zeros_like(alpha) + 200
        planes = [colour] * (3 if mode == "RGBA" else 1) + [alpha]
        img = Image.fromarray(np.stack(planes, axis=-1), mode)
    elif mode == "I;16":
        img = Image.fromarray((dark * 65535).astype(np.uint16))
    else:
        img = Image.fromarray((dark * 255).astype(np.uint8)).convert(mode)
    path = tmp_path / f"two-{mode.replace(';', '')}.png"
    img.save(path)
    code, report = predict(path)
    assert code == 0 and report["results"][0]["prediction"] == 2, (mode, report)


def test_palette_image_with_transparency(tmp_path):
    from PIL import Image

    rgba = digit_image(5, "icon", seed=7)
    assert rgba.mode in ("RGBA", "LA")
    path = tmp_path / "five.png"
    rgba.convert("RGBA").convert("P", palette=Image.Palette.ADAPTIVE).save(path, transparency=0)
    code, report = predict(path)
    assert code == 0 and report["results"][0]["prediction"] == 5


def test_exif_orientation_is_honoured(tmp_path):
    """A phone photo stored upside down with an EXIF 'rotate 180' tag is read upright."""
    from PIL import Image

    upright = digit_image(6, "marker", seed=11).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_180)  # what the sensor wrote
    exif = Image.Exif()
    exif[0x0112] = 3  # Orientation: rotate 180 to display
    stored.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    stored.save(tmp_path / "no-exif.jpg", quality=95)
    code, report = predict(tmp_path / "photo.jpg", tmp_path / "no-exif.jpg")
    assert report["results"][0]["prediction"] == 6
    assert report["results"][1]["prediction"] == 9  # the same pixels without the tag: an upside-down 6


def test_polarity_is_detected_and_can_be_forced(tmp_path):
    from PIL import ImageOps

    dark = digit_image(4, "pen", seed=2).convert("L")
    dark.save(tmp_path / "dark.png")
    ImageOps.invert(dark).save(tmp_path / "light.png")
    _, report = predict(tmp_path / "dark.png", tmp_path / "light.png")
    d, light = report["results"]
    assert d["inverted"] and not light["inverted"]
    assert d["prediction"] == light["prediction"] == 4
    _, forced = predict(tmp_path / "dark.png", tmp_path / "light.png", "--invert")
    assert forced["results"][0]["inverted"] is True and forced["results"][0]["prediction"] == 4
    # Forcing the wrong polarity finds no bright ink on the white paper, and says which option did it.
    assert forced["results"][1]["error_kind"] == "no_ink" and "--invert" in forced["results"][1]["error"]
    _, forced = predict(tmp_path / "light.png", "--no-invert")
    assert forced["results"][0]["inverted"] is False and forced["results"][0]["prediction"] == 4


def test_directories_globs_and_previews(tmp_path):
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    digit_image(1, "marker", seed=1).save(folder / "a.png")
    digit_image(8, "marker", seed=1).save(folder / "a.jpg")  # same stem: previews must not collide
    digit_image(0, "marker", seed=1).save(folder / "sub" / "c.bmp")
    (folder / "notes.txt").write_text("not an image, and not picked from a folder")
    code, report = predict(folder, str(tmp_path / "mixed" / "sub" / "*.bmp"), "--save-preview", tmp_path / "prev",
                           "--top-k", "4")
    assert code == 0
    rows = report["results"]
    assert [Path(r["file"]).name for r in rows] == ["a.jpg", "a.png", "c.bmp"]
    assert all(len(r["top_k"]) == 4 for r in rows)
    assert all(r["top_k"][0]["probability"] >= r["top_k"][1]["probability"] for r in rows)
    previews = sorted(p.name for p in (tmp_path / "prev").iterdir())
    assert previews == ["a-2.png", "a.png", "c.png"]
    assert [Path(r["preview"]).name for r in rows] == ["a.png", "a-2.png", "c.png"]


def test_table_output(tmp_path):
    digit_image(6, "marker", seed=5).save(tmp_path / "six.png")
    result = runner.invoke(app, ["predict", str(tmp_path / "six.png"), str(tmp_path / "gone.png")])
    assert result.exit_code == 1
    assert "six.png" in result.output and "file not found" in result.output
    assert "1 of 2 file(s) could not be classified" in result.output


# ------------------------------------------------------------------ backends


def test_default_path_does_not_import_torch(tmp_path):
    digit_image(3, "marker").save(tmp_path / "d.png")
    code = (
        "import sys\nfrom lenet_cli.cli.app import main\n"
        f"sys.argv = ['lenet', 'predict', {str(tmp_path / 'd.png')!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NOTORCH"), out.stdout[-500:] + out.stderr
    assert json.loads(out.stdout[: out.stdout.rindex("}") + 1])["results"][0]["prediction"] == 3


@pytest.mark.slow
def test_torch_and_onnx_backends_agree(tmp_path):
    from lenet_cli.model.weights import bundled_weights_path

    labels = handwriting.write(handwriting.generate(n_per_class=2, seed=5), tmp_path / "set")
    _, onnx_report = predict(tmp_path / "set")
    _, torch_report = predict(tmp_path / "set", "--weights", bundled_weights_path(), "--device", "cpu")
    assert onnx_report["backend"] == "onnxruntime" and torch_report["backend"] == "pytorch"
    a = [r["prediction"] for r in onnx_report["results"]]
    b = [r["prediction"] for r in torch_report["results"]]
    assert a == b and len(a) == len(labels)
    pa = np.array([r["confidence"] for r in onnx_report["results"]])
    pb = np.array([r["confidence"] for r in torch_report["results"]])
    assert np.abs(pa - pb).max() < 1e-4


def test_bundled_onnx_is_the_bundled_weights():
    """The shipped ONNX file was exported from the shipped safetensors file (same hash, same outputs)."""
    import hashlib

    import torch

    from lenet_cli.inference.backends import OnnxBackend, TorchBackend
    from lenet_cli.model.weights import bundled_onnx_path, bundled_weights_path

    onnx_backend = OnnxBackend(bundled_onnx_path(), "cpu")
    sha = hashlib.sha256(bundled_weights_path().read_bytes()).hexdigest()
    assert onnx_backend.metadata["source_weights_sha256"] == sha
    x = np.stack([np.asarray(handwriting.render(d, "marker", np.random.default_rng(d)).image.convert("L").resize((28, 28)))
                  for d in range(10)])
    a = onnx_backend.logits(x)
    b = TorchBackend(bundled_weights_path(), torch.device("cpu")).logits(x)
    assert np.allclose(a, b, atol=1e-4)


def test_handwriting_labels_match_names(tmp_path):
    labels = handwriting.write(handwriting.generate(n_per_class=1, seed=9), tmp_path)
    assert sorted(labels.values()) == list(range(10))
    assert all(re.search(rf"label{v}\.", k) for k, v in labels.items())
