"""Folder predict in worker processes: rows in input order, errors in their rows, Ctrl-C leaves whole rows."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lenet_cli.bench import images
from lenet_cli.inference import workers
from lenet_cli.inference.pipeline import PredictConfig, iter_predictions


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """80 files: MNIST-style PNGs and photos, with a damaged file and a text file among them."""
    root = tmp_path_factory.mktemp("mix")
    digits = images.font_digits(20)
    for i in range(80):
        if i == 13:
            (root / f"{i:03d}.png").write_bytes(b"not an image")
        elif i % 4 == 0:
            (root / f"{i:03d}.jpg").write_bytes(images.paper_photo_jpeg(digits[i % 20], side=64, seed=i))
        else:
            (root / f"{i:03d}.png").write_bytes(images.mnist_png(digits[i % 20]))
    return sorted(root.iterdir())


@pytest.mark.slow
def test_pooled_rows_are_the_serial_rows_in_input_order(folder):
    assert len(folder) >= workers.POOL_FROM_FILES
    serial = list(workers.prepared_rows(folder, None, workers=1))
    pooled = list(workers.prepared_rows(folder, None, workers=2))
    assert [r["file"] for r, _ in pooled] == [str(p) for p in folder]
    for (want, want_px), (got, got_px) in zip(serial, pooled):
        assert want == got
        assert (want_px is None and got_px is None) or np.array_equal(want_px, got_px)
    (bad,) = [r for r, px in pooled if px is None]
    assert bad["file"].endswith("013.png") and bad["error_kind"] == "not_image"


def test_a_small_job_starts_no_pool(folder, monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started")

    monkeypatch.setattr(workers, "_pooled", no_pool)
    rows = list(workers.prepared_rows(folder[: workers.POOL_FROM_FILES - 1], None, workers=4))
    assert len(rows) == workers.POOL_FROM_FILES - 1


def test_iter_predictions_with_workers_classifies_every_file_in_order(folder):
    rows = list(iter_predictions(folder, lambda x: np.tile(np.arange(10.0), (len(x), 1)), PredictConfig(workers=2)))
    assert [r["file"] for r in rows] == [str(p) for p in folder]
    assert sum("error" in r for r in rows) == 1 and all(r.get("prediction") == 9 for r in rows if "error" not in r)


@pytest.mark.slow
def test_ctrl_c_on_a_folder_predict_leaves_whole_rows(tmp_path):
    digits = images.font_digits(10)
    for i in range(3000):
        (tmp_path / f"{i:05d}.png").write_bytes(images.paper_photo_jpeg(digits[i % 10], side=120, seed=i)
                                                if i % 2 else images.mnist_png(digits[i % 10]))
    rows = tmp_path / "out" / "rows.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "lenet_cli", "predict", str(tmp_path), "--output", str(rows)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not rows.exists() or rows.stat().st_size < 2000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = rows.read_text().splitlines()
    assert 0 < len(lines) < 3000
    assert [json.loads(line)["file"] for line in lines] == [str(tmp_path / f"{i:05d}.png") for i in range(len(lines))]
