"""The MNIST files, directly (no CLI): the split, missing and damaged files, the layouts found, the
data folder, the fixed validation split."""

from __future__ import annotations

import gzip

import pytest
import torch

from lenet_cli.data import mnist as data
from lenet_cli.errors import DataError


def test_load_synthetic_split(tiny_mnist):
    split = data.load_split(tiny_mnist, "train", allow_download=False)
    assert split.images.dtype == torch.uint8 and split.images.shape == (600, 28, 28)
    assert split.labels.shape == (600,) and int(split.labels.max()) <= 9


def test_missing_data_offline_names_the_files(tmp_path):
    with pytest.raises(DataError) as info:
        data.load_split(tmp_path, "train", allow_download=False)
    text = str(info.value)
    for name, _ in data.MNIST_FILES.values():
        assert name in text
    assert "LENET_DATA_DIR" in text


def test_checksum_failure(tmp_path, tiny_mnist):
    for key, (name, _) in data.MNIST_FILES.items():
        raw = (tiny_mnist / name[:-3]).read_bytes()
        (tmp_path / name).write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match="fails its checksum"):
        data.load_split(tmp_path, "test", allow_download=False)


def test_truncated_idx_is_reported(tmp_path, tiny_mnist):
    for key, (name, _) in data.MNIST_FILES.items():
        raw = (tiny_mnist / name[:-3]).read_bytes()
        (tmp_path / name[:-3]).write_bytes(raw[:-10] if key == "test-images" else raw)
    with pytest.raises(DataError, match="truncated"):
        data.load_split(tmp_path, "test", allow_download=False)


def test_torchvision_layout_is_found(tmp_path, tiny_mnist):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in tiny_mnist.iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    assert len(data.load_split(tmp_path, "test", allow_download=False)) == 200


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LENET_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir(None) == tmp_path
    assert data.resolve_data_dir(tmp_path / "x") == tmp_path / "x"


def test_val_split_is_disjoint_and_fixed(tiny_mnist):
    full = data.load_split(tiny_mnist, "train", allow_download=False)
    a1, v1 = data.train_val_split(full, 100)
    a2, v2 = data.train_val_split(full, 100)
    assert len(a1) == 500 and len(v1) == 100
    assert torch.equal(v1.images, v2.images)
    with pytest.raises(DataError):
        data.train_val_split(full, 600)
