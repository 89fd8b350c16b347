"""Smoke tests on the real MNIST (folder given by $LENET_TEST_MNIST_DIR; skipped without it)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from lenet_cli.cli.app import app

pytestmark = pytest.mark.slow  # every test here trains or evaluates on the real MNIST

runner = CliRunner()


@pytest.fixture()
def mnist_copy(real_mnist, tmp_path):
    # Copy: nothing may ever be written into the shared folder.
    dest = tmp_path / "mnist"
    dest.mkdir()
    for f in real_mnist.glob("*-ubyte.gz"):
        shutil.copy(f, dest / f.name)
    return dest


def test_bundled_model_reaches_target_on_real_test_set(mnist_copy):
    result = runner.invoke(app, ["eval", "--data-dir", str(mnist_copy), "--device", "cpu", "--json", "--no-plots",
                                 "--no-download"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["count"] == 10_000
    assert payload["accuracy"] >= 0.993


def test_short_training_run_reaches_real_accuracy(mnist_copy, tmp_path):
    result = runner.invoke(app, ["train", "--epochs", "1", "--data-dir", str(mnist_copy), "--device", "cpu",
                                 "--output-dir", str(tmp_path / "run"), "--json", "--no-download"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["test_accuracy"] >= 0.97, payload["test_accuracy"]
