"""Fixtures of the serve tests: the bundled model in onnxruntime, and the app behind FastAPI's test client."""

from __future__ import annotations

import pytest

from lenet_cli.model.weights import bundled_onnx_path
from lenet_cli.serve.app import create_app
from lenet_cli.serve.classify import served_model


@pytest.fixture(scope="module")
def model():
    return served_model(bundled_onnx_path(), bundled=True)


@pytest.fixture(scope="module")
def client(model):
    from fastapi.testclient import TestClient

    with TestClient(create_app(model), raise_server_exceptions=True) as c:
        yield c
