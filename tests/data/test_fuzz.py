"""Property: whatever bytes a user passes as an image or a model, `lenet` ends with exit code 0, 1 or 2
and, on failure, one clean line on stderr: never a traceback, never "Unexpected error".

The inputs are random bytes and valid files (images in six formats, the bundled safetensors and
ONNX models) with bytes flipped, inserted, deleted, overwritten or cut off. The runs are
deterministic (derandomized) so that CI is stable; set LENET_FUZZ_EXAMPLES=2000 to search longer
with fresh random inputs.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lenet_cli.cli.app import app
from lenet_cli.model.weights import bundled_onnx_path, bundled_weights_path

runner = CliRunner()
EXAMPLES = int(os.environ.get("LENET_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="LENET_FUZZ_EXAMPLES" not in os.environ,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _digit_image():
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (48, 48), 245)
    ImageDraw.Draw(img).text((12, 2), "5", fill=15, font=ImageFont.load_default(size=40))
    return img


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    img = _digit_image()
    img.convert("RGB" if fmt in ("JPEG", "WEBP") else "L").save(buf, format=fmt)
    return buf.getvalue()


IMAGE_SEEDS = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
SAFETENSORS_SEED = bundled_weights_path().read_bytes()
ONNX_SEED = bundled_onnx_path().read_bytes()


@st.composite
def mutated(draw, seed: bytes, hot: int = 4096) -> bytes:
    """`seed` with a few edits; half of the positions fall in the first `hot` bytes (headers, graph)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        if n == 0:
            break
        pos = draw(st.one_of(st.integers(0, min(hot, n) - 1), st.integers(0, n - 1)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "overwrite", "truncate"]))
        if op == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos : pos + len(chunk)] = chunk
        else:
            del data[pos:]
    return bytes(data)


def random_or_mutated(seed: bytes, hot: int = 4096):
    return st.one_of(st.binary(max_size=2048), mutated(seed, hot))


def _no_nan(text: str):
    raise ValueError(f"JSON output holds {text}")


# Categories Python hides by default; any other warning would reach the user's stderr.
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def invoke(args: list) -> object:
    """Run the CLI in-process; warnings that a real run would print end up in `result.stderr_warnings`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        result = runner.invoke(app, [str(a) for a in args])
    result.stderr_warnings = [f"{w.category.__name__}: {w.message}" for w in caught
                              if not issubclass(w.category, HIDDEN_WARNINGS)]
    return result


def check_clean(result) -> None:
    """The property: exit 0/1/2; on failure exactly one 'Error: ...' line on stderr; no traceback,
    and no library warning printed on top."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert not result.stderr_warnings, result.stderr_warnings
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output, result.output
    assert "Unexpected" not in result.output, result.output
    if result.exit_code != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


def check_json(result) -> dict | None:
    """Valid JSON (no NaN) on stdout whenever the command got as far as printing it."""
    if not result.stdout.strip():
        return None
    return json.loads(result.stdout, parse_constant=_no_nan)


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "digit.png"
    path.write_bytes(IMAGE_SEEDS["PNG"])
    return path


# ------------------------------------------------------------------ images


@FUZZ
@given(fmt=st.sampled_from(sorted(IMAGE_SEEDS)), data=st.data())
@pytest.mark.slow
def test_any_bytes_as_an_image(fmt, data, tmp_path):
    content = data.draw(random_or_mutated(IMAGE_SEEDS[fmt], hot=512), label="content")
    path = tmp_path / f"input{SUFFIX[fmt]}"
    path.write_bytes(content)
    result = invoke(["predict", path, "--json"])
    check_clean(result)
    row = check_json(result)["results"][0]
    if "error" in row:
        # A decoder failure the code did not expect would land in predict's catch-all for one file.
        assert not row["error"].startswith("cannot process this image"), row
    else:
        assert 0 <= row["prediction"] <= 9


# ------------------------------------------------------------------ models


@FUZZ
@given(content=random_or_mutated(SAFETENSORS_SEED))
@pytest.mark.slow
def test_any_bytes_as_safetensors_weights(content, tmp_path, digit_png):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    result = invoke(["predict", digit_png, "--weights", path, "--device", "cpu", "--json"])
    check_clean(result)
    if result.exit_code == 0:
        check_json(result)


@FUZZ
@given(content=random_or_mutated(ONNX_SEED))
def test_any_bytes_as_onnx_weights(content, tmp_path, digit_png):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    result = invoke(["predict", digit_png, "--weights", path, "--json"])
    check_clean(result)
    if result.exit_code == 0:
        check_json(result)


@FUZZ
@given(suffix=st.sampled_from([".safetensors", ".onnx"]), data=st.data())
def test_any_bytes_as_eval_weights(suffix, data, tmp_path, tiny_mnist):
    seed = SAFETENSORS_SEED if suffix == ".safetensors" else ONNX_SEED
    path = tmp_path / f"model{suffix}"
    path.write_bytes(data.draw(random_or_mutated(seed), label="content"))
    result = invoke(["eval", "--weights", path, "--data-dir", tiny_mnist, "--device", "cpu", "--no-plots", "--json"])
    check_clean(result)
    if result.exit_code == 0:
        report = check_json(result)
        assert report["count"] == 200


# ------------------------------------------------------------------ the property can fail


def test_the_property_catches_a_crash(monkeypatch, tmp_path, digit_png):
    """A low-level exception that escapes the core must fail `check_clean`, or the fuzzing proves nothing."""
    import lenet_cli.model.weights as weights

    def crash(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(weights, "read_info", crash)
    path = tmp_path / "model.safetensors"
    path.write_bytes(SAFETENSORS_SEED)
    result = invoke(["predict", digit_png, "--weights", path, "--device", "cpu"])
    with pytest.raises(AssertionError, match="Unexpected"):
        check_clean(result)


# ------------------------------------------------------------------ non-regular files and streams


@FUZZ
@given(kinds=st.lists(st.sampled_from(["image", "fifo", "folder", "missing", "garbage"]), min_size=1, max_size=8),
       stream=st.sampled_from(["--json", "--jsonl", "--output"]))
@pytest.mark.slow
def test_any_mix_of_files_pipes_and_folders_streams_one_row_each_in_order(kinds, stream, tmp_path_factory):
    """Whatever the inputs are, predict never blocks, gives one row per input in order, and the
    streamed formats hold exactly the rows --json holds."""
    folder = tmp_path_factory.mktemp("mix")
    paths = []
    for i, kind in enumerate(kinds):
        path = folder / f"{i:02d}-{kind}.png"
        if kind == "image":
            path.write_bytes(IMAGE_SEEDS["PNG"])
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
        elif kind == "garbage":
            path.write_bytes(b"\x89PNG not really")
        paths.append(path)
    args = ["predict", *paths]
    out = folder / "rows.jsonl"
    if stream == "--output":
        args += ["--output", out, "--json"]
    else:
        args += [stream]
    result = invoke(args)
    check_clean(result)
    # Every input has its row, in order: a folder without images too (named, it is expected to hold some).
    expected = [str(p) for p in paths]
    if stream == "--jsonl":
        rows = [json.loads(line) for line in result.stdout.splitlines()]
    else:
        rows = check_json(result)["results"]
    if stream == "--output":
        assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    assert [row["file"] for row in rows] == expected
    for row, kind in zip(rows, kinds):
        assert ("error" in row) == (kind != "image"), row
        if kind == "fifo":
            assert row["error_kind"] == "not_a_file"
        if kind == "folder":
            assert row["error_kind"] == "not_found" and "no images in it" in row["error"]
    assert result.exit_code == (1 if any(k != "image" for k in kinds) else 0)
