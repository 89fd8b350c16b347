"""`lenet predict` on bad inputs: each is reported in its own row (error, error_kind) and the other
files are still classified; odd but valid images (bit depths, icons, EXIF) are read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from predict_cli import digit_image, predict, runner

from lenet_cli.cli.app import app

# ------------------------------------------------------------------ bad inputs: per-file errors


def _truncated_png(path: Path) -> None:
    digit_image(3, "pen", seed=1).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_jpeg(path: Path) -> None:
    digit_image(3, "pen", seed=1).convert("RGB").save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _huge(path: Path) -> None:
    from PIL import Image

    Image.new("1", (9000, 9000), 1).save(path)  # 81 Mpx in a few kB: a decompression bomb


def _blank(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (300, 200), (240, 240, 235)).save(path)


BAD_INPUTS = {
    "missing.png": (None, "not_found", "file not found"),
    "empty.png": (lambda p: p.write_bytes(b""), "empty", "empty"),
    "notes.png": (lambda p: p.write_text("hello, I am text"), "not_image", "not an image"),
    "cut.png": (_truncated_png, "corrupt", "damaged or truncated"),
    "cut.jpg": (_truncated_jpeg, "corrupt", "damaged or truncated"),
    "huge.png": (_huge, "too_large", "too large"),
    "blank.png": (_blank, "no_ink", "no ink"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_reported_in_its_row_and_others_still_run(tmp_path, name):
    make, kind, text = BAD_INPUTS[name]
    bad = tmp_path / name
    if make is not None:
        make(bad)
    good = tmp_path / "good.png"
    digit_image(9, "marker", seed=2).save(good)
    code, report = predict(bad, good)
    assert code == 1
    bad_row, good_row = report["results"]
    assert bad_row["error_kind"] == kind and text in bad_row["error"], bad_row
    assert "prediction" not in bad_row
    assert good_row["prediction"] == 9 and "error" not in good_row


def test_unreadable_file(tmp_path, monkeypatch):
    import lenet_cli.data.sources as imagefiles

    path = tmp_path / "locked.png"
    digit_image().save(path)

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imagefiles, "open", deny, raising=False)  # root can read anything; simulate the denial
    code, report = predict(path)
    assert code == 1
    assert report["results"][0]["error_kind"] == "unreadable"
    assert "Permission denied" in report["results"][0]["error"]


def test_names_with_markup_or_glob_characters(tmp_path):
    """File names are shown as they are (never read as Rich markup) and a real file beats a pattern."""
    digit_image(1, "marker", seed=1).save(tmp_path / "z[1].png")
    digit_image(8, "marker", seed=1).save(tmp_path / "z1.png")
    code, report = predict(tmp_path / "z[1].png")
    assert code == 0 and [Path(r["file"]).name for r in report["results"]] == ["z[1].png"]
    result = runner.invoke(app, ["predict", str(tmp_path / "z[1].png"), str(tmp_path / "gone[/x].png"), "[bold]y.png"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "z[1].png" in result.output and "gone[/x].png" in result.output and "[bold]y.png" in result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "z1.png"), "--save-preview", str(tmp_path / "f") + "/q[/b]"])
    assert "Traceback" not in result.output


def test_malformed_exif_is_ignored(tmp_path):
    """A damaged EXIF block (a SHORT tag holding text) must not cost the image, nor the other rows."""
    from PIL import Image

    from lenet_cli.data.sources import load_gray

    img = digit_image(7, "marker", seed=3).convert("L").transpose(Image.Transpose.ROTATE_180)
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 3, "Cam"  # Orientation: rotate 180; Make (text)
    img.save(tmp_path / "ok.jpg", exif=exif, quality=95)
    data = bytearray((tmp_path / "ok.jpg").read_bytes())
    at = data.find(b"\x01\x0f\x00\x02") if data.find(b"MM") >= 0 else data.find(b"\x0f\x01\x02\x00")
    assert at > 0
    if data.find(b"MM") >= 0:
        data[at + 1] = 0x23  # tag 0x010F -> 0x0123, a SHORT tag, still holding ASCII
    else:
        data[at] = 0x23
    (tmp_path / "bad-exif.jpg").write_bytes(bytes(data))
    with pytest.raises(Exception):  # noqa: B017 - what Pillow does with it, so the test means something
        from PIL import ImageOps

        ImageOps.exif_transpose(Image.open(tmp_path / "bad-exif.jpg"))
    assert np.allclose(load_gray(tmp_path / "bad-exif.jpg")[0], load_gray(tmp_path / "ok.jpg")[0], atol=0.02)
    code, report = predict(tmp_path / "bad-exif.jpg", tmp_path / "ok.jpg")
    assert code == 0 and [r["prediction"] for r in report["results"]] == [7, 7]


@pytest.mark.parametrize("kind", ["float01", "float255", "nan", "int8in16"])
def test_unusual_bit_depths(tmp_path, kind):
    from PIL import Image

    ink = np.asarray(digit_image(4, "marker", seed=6).convert("L"), dtype=np.float32) / 255
    light = ink if ink.mean() > 0.5 else 1 - ink  # dark ink on light paper, in [0, 1]
    if kind == "float01":
        img = Image.fromarray(light, "F")
    elif kind == "float255":
        img = Image.fromarray(light * 255, "F")
    elif kind == "nan":
        arr = light.copy()
        arr[0, 0] = np.nan
        img = Image.fromarray(arr, "F")
    else:  # 8-bit values stored in a 16-bit file
        img = Image.fromarray((light * 255).astype(np.uint16))
    img.save(tmp_path / f"{kind}.tif")
    code, report = predict(tmp_path / f"{kind}.tif")
    assert code == 0 and report["results"][0]["prediction"] == 4, report


@pytest.mark.parametrize("colour", [0, 255])
def test_bold_icon_covering_most_of_its_canvas(tmp_path, colour):
    """A tightly cropped bold digit on transparency is read from its opacity, white or black."""
    from PIL import Image, ImageDraw

    shape = Image.new("L", (30, 40), 0)
    draw = ImageDraw.Draw(shape)
    draw.ellipse((0, 0, 29, 39), fill=255)
    draw.ellipse((9, 9, 20, 30), fill=0)  # a bold "0": ~70% of the canvas is opaque
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[..., :3] = colour
    rgba[..., 3] = np.asarray(shape)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "icon.png")
    code, report = predict(tmp_path / "icon.png")
    assert code == 0 and report["results"][0]["prediction"] == 0


def test_opaque_rgba_mnist_crop_passes_through(tmp_path):
    from PIL import Image

    from lenet_cli.data.preprocess import prepare_file

    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255  # a "1", bright on black, already MNIST form
    Image.fromarray(np.stack([digit] * 3 + [np.full_like(digit, 255)], -1), "RGBA").save(tmp_path / "one.png")
    prepared = prepare_file(tmp_path / "one.png")
    assert prepared.passthrough and np.array_equal(prepared.pixels, digit)


def test_hidden_files_in_folders_are_skipped(tmp_path):
    digit_image(2, "marker", seed=2).save(tmp_path / "two.png")
    (tmp_path / "._two.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    code, report = predict(tmp_path)
    assert code == 0 and [Path(r["file"]).name for r in report["results"]] == ["two.png"]


def test_an_unexpected_failure_in_one_file_is_its_row_only(tmp_path, monkeypatch):
    import lenet_cli.data.preprocess as images

    real = images.to_mnist

    def flaky(gray, alpha=None, invert=None):
        if gray.shape[0] == 77:
            raise ZeroDivisionError("division by zero")
        return real(gray, alpha, invert)

    monkeypatch.setattr(images, "to_mnist", flaky)
    from PIL import Image

    Image.new("L", (50, 77), 255).save(tmp_path / "odd.png")
    digit_image(5, "marker", seed=5).save(tmp_path / "five.png")
    code, report = predict(tmp_path / "odd.png", tmp_path / "five.png")
    assert code == 1
    odd, five = report["results"]
    assert odd["error_kind"] == "corrupt" and "ZeroDivisionError" in odd["error"]
    assert five["prediction"] == 5


def test_a_folder_without_images_is_a_failed_row_like_a_missing_file(tmp_path):
    (tmp_path / "empty-dir" / "sub").mkdir(parents=True)
    result = runner.invoke(app, ["predict", str(tmp_path / "empty-dir")])
    assert result.exit_code == 1 and "no images in it" in result.output and "Traceback" not in result.output
    assert "**/*.png" in result.output  # says how to search its subfolders


def test_a_pattern_that_finds_no_images_is_a_usage_error(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    result = runner.invoke(app, ["predict", str(tmp_path / "a" / "*")])  # matches only an empty folder
    assert result.exit_code == 2 and "No images found" in result.output and "Traceback" not in result.output


def test_a_pattern_reads_the_folders_it_matches_once_each(tmp_path):
    (tmp_path / "scans" / "x").mkdir(parents=True)
    digit_image(3).save(tmp_path / "scans" / "x" / "three.png")
    for pattern in ("scans/*", "scans/**"):
        code, report = predict(str(tmp_path / pattern))
        assert code == 0 and [r["prediction"] for r in report["results"]] == [3], pattern


def test_unwritable_preview_folder_fails_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should go")
    digit_image().save(tmp_path / "d.png")
    result = runner.invoke(app, ["predict", str(tmp_path / "d.png"), "--save-preview", str(blocker / "prev")])
    assert result.exit_code == 1 and "Cannot create directory" in result.output
    assert "Traceback" not in result.output
