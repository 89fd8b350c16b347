"""What the tests of `lenet predict` share: the command run in-process with --json, and a drawn digit."""

from __future__ import annotations

import json

import handwriting
import numpy as np
from typer.testing import CliRunner

from lenet_cli.cli.app import app

runner = CliRunner()


def predict(*args) -> tuple[int, dict]:
    """`lenet predict ARGS --json`: the exit code and the parsed JSON (never a traceback)."""
    result = runner.invoke(app, ["predict", *[str(a) for a in args], "--json"])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


def digit_image(label: int = 3, style: str = "pen", seed: int = 0):
    """A synthetic handwritten digit (tests/handwriting.py) as a Pillow image."""
    return handwriting.render(label, style, np.random.default_rng(seed)).image
