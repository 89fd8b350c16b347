"""MNIST: locate, download, verify and load the four IDX files as uint8 tensors.

Reading IDX is "check the header, skip it, reshape": no torchvision Dataset, no
per-sample Python. The whole set lives as one uint8 tensor (70,000 x 28 x 28 is
55 MB) that training moves to the device once.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lenet_cli.errors import DataError
from lenet_cli.utils.fileio import not_a_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

DATA_DIR_ENV = "LENET_DATA_DIR"
SPLITS = ("train", "test")

# The official files and the MD5 sums torchvision checks.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train-images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test-images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
IDX_IMAGES_HEADER = 16  # magic, count, rows, cols: four big-endian int32
IDX_LABELS_HEADER = 8  # magic, count
IMAGE_SIZE = 28  # MNIST digits are 28x28
_REFETCH = "Delete it and copy or download MNIST again."


def default_data_dir() -> Path:
    """$LENET_DATA_DIR, else the per-user cache: $XDG_CACHE_HOME/lenet (~/.cache/lenet)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "lenet"


def resolve_data_dir(data_dir: Path | None) -> Path:
    """--data-dir if given, else the default."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _candidates(data_dir: Path, filename: str) -> list[Path]:
    # Accept the files straight in the folder and torchvision's layout (root/MNIST/raw), gzipped or not.
    raw = filename[: -len(".gz")]
    out = []
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        out += [folder / filename, folder / raw]
    return out


def find_file(data_dir: Path, key: str) -> Path | None:
    """The first existing copy of one MNIST file under `data_dir`, or None.

    Something else under that name (a named pipe, a device, a folder) is an error, not "missing":
    it is never opened (a pipe would block) and never replaced by a download.
    """
    filename, _ = MNIST_FILES[key]
    for path in _candidates(data_dir, filename):
        what = not_a_file(path)
        if what is None:
            return path
        if what != "missing":
            raise DataError(f"{path} is {what}, not an MNIST file.", f"Put the real file there. {_REFETCH}")
    return None


def missing_files(data_dir: Path) -> list[str]:
    """Names of the MNIST files not found under `data_dir`."""
    return [MNIST_FILES[k][0] for k in MNIST_FILES if find_file(data_dir, k) is None]


def _missing_error(data_dir: Path, reason: str) -> DataError:
    names = ", ".join(v[0] for v in MNIST_FILES.values())
    return DataError(
        f"MNIST not found in {data_dir} ({reason}).",
        f"Put the four files ({names}) in {data_dir} or {data_dir / 'MNIST' / 'raw'}, "
        f"or point --data-dir / {DATA_DIR_ENV} at a folder that has them.",
    )


def download(data_dir: Path) -> None:
    """Download MNIST with torchvision (which verifies the MD5 sums) into data_dir/MNIST/raw."""
    try:
        from torchvision.datasets import MNIST
    except Exception as exc:  # torchvision broken or absent: say so rather than crash
        raise _missing_error(data_dir, f"torchvision is needed to download it and failed to import: {exc}") from exc
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            MNIST(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError for network problems
        raise _missing_error(data_dir, f"download failed: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc


def ensure_mnist(data_dir: Path, allow_download: bool = True) -> Path:
    """Make sure the four files are present, downloading them if allowed. Returns data_dir."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"{data_dir} is a file, not a folder.",
                        f"Point --data-dir / {DATA_DIR_ENV} at the folder that holds the MNIST files.")
    missing = missing_files(data_dir)
    if not missing:
        return data_dir
    if not allow_download:
        raise _missing_error(data_dir, f"missing {', '.join(missing)}; downloads are off")
    download(data_dir)
    if missing_files(data_dir):
        raise _missing_error(data_dir, "the download did not produce all four files")
    return data_dir


def _read_bytes(path: Path, expected_md5: str | None) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc}.",
                        "Check the file's permissions, or point --data-dir at a copy you may read.") from exc
    if path.suffix == ".gz":
        if expected_md5 is not None:
            actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
            if actual != expected_md5:
                raise DataError(
                    f"{path} fails its checksum (MD5 {actual}, expected {expected_md5}).",
                    "The file is corrupt or not the official MNIST; delete it and copy or download it again.",
                )
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is not a valid gzip file: {exc}.", _REFETCH) from exc
    return raw


def idx_shape(data: bytes, kind: str, source: str = "<bytes>") -> tuple[int, ...]:
    """The shape IDX bytes hold, images (N, 28, 28) or labels (N,), after checking them; no torch.

    DataError when the header, the image size or the length is not MNIST's.
    """
    header = IDX_IMAGES_HEADER if kind == "images" else IDX_LABELS_HEADER
    if len(data) < header:
        raise DataError(f"{source} is too short to be an IDX {kind} file.", _REFETCH)
    magic, count = struct.unpack(">II", data[:8])
    expected_magic = IDX_IMAGES_MAGIC if kind == "images" else IDX_LABELS_MAGIC
    if magic != expected_magic:
        raise DataError(f"{source} is not an IDX {kind} file (magic {magic:#010x}, expected {expected_magic:#010x}).",
                        _REFETCH)
    shape: tuple[int, ...] = (count,)
    if kind == "images":
        rows, cols = struct.unpack(">II", data[8:16])
        if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"{source} holds {rows}x{cols} images; MNIST images are {IMAGE_SIZE}x{IMAGE_SIZE}.",
                            _REFETCH)
        shape = (count, rows, cols)
    expected_len = header + count * (IMAGE_SIZE * IMAGE_SIZE if kind == "images" else 1)
    if len(data) != expected_len:
        raise DataError(f"{source} has {len(data)} bytes, expected {expected_len} for shape {shape}: truncated?",
                        _REFETCH)
    return shape


def parse_idx(data: bytes, kind: str, source: str = "<bytes>") -> "torch.Tensor":
    """Parse IDX bytes into a uint8 tensor: images (N, 28, 28) or labels (N,)."""
    import torch

    shape = idx_shape(data, kind, source)
    header = IDX_IMAGES_HEADER if kind == "images" else IDX_LABELS_HEADER
    # bytearray makes the buffer writable, so torch does not warn and the tensor owns its memory.
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def check_file(data_dir: Path, key: str) -> tuple[Path, int]:
    """One MNIST file found, read, checksummed (gzipped: MD5) and its header checked, without torch.

    Returns (path, number of images or labels); DataError when it is missing or invalid.
    """
    path = find_file(Path(data_dir), key)
    if path is None:
        raise DataError(f"{MNIST_FILES[key][0]} is not in {data_dir}.")
    kind = key.split("-")[1]
    return path, idx_shape(_read_bytes(path, MNIST_FILES[key][1]), kind, str(path))[0]


@dataclass(frozen=True)
class MnistSplit:
    """One split of MNIST as uint8 tensors: images (N, 28, 28), labels (N,)."""

    images: "torch.Tensor"
    labels: "torch.Tensor"

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_split(data_dir: Path, split: str, allow_download: bool = True, verify: bool = True) -> MnistSplit:
    """Load 'train' (60,000) or 'test' (10,000) as uint8 tensors, verifying checksums."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    data_dir = ensure_mnist(Path(data_dir), allow_download=allow_download)
    tensors = []
    for kind in ("images", "labels"):
        key = f"{split}-{kind}"
        path = find_file(data_dir, key)
        assert path is not None  # ensure_mnist guarantees it
        tensors.append(parse_idx(_read_bytes(path, MNIST_FILES[key][1] if verify else None), kind, str(path)))
    images, labels = tensors
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels.",
                        f"The files in {data_dir} do not belong together; copy or download all four again.")
    if images.shape[0] and int(labels.max()) >= 10:
        raise DataError(f"MNIST {split}: labels must be digits 0-9, found {int(labels.max())}.",
                        f"The labels file in {data_dir} is not MNIST's; copy or download it again.")
    return MnistSplit(images, labels)


def train_val_split(train: MnistSplit, val_size: int, seed: int = 0) -> tuple[MnistSplit, MnistSplit]:
    """Hold out `val_size` training images for model selection; the test set is never used for that.

    The split uses its own fixed seed (not the training seed) so that validation
    numbers of different runs are measured on the same images.
    """
    import torch

    n = len(train)
    if not 0 <= val_size < n:
        raise DataError(f"Validation size {val_size} must be between 0 and {n - 1} (the training set has {n} images).")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    return (
        MnistSplit(train.images[train_idx], train.labels[train_idx]),
        MnistSplit(train.images[val_idx], train.labels[val_idx]),
    )


def write_idx(path: Path, array: "torch.Tensor", compress: bool = True) -> Path:
    """Write a uint8 tensor as an IDX file (used for tests and for synthetic data sets)."""
    t = array.to("cpu").contiguous()
    if t.ndim == 3:
        header = struct.pack(">IIII", IDX_IMAGES_MAGIC, t.shape[0], t.shape[1], t.shape[2])
    elif t.ndim == 1:
        header = struct.pack(">II", IDX_LABELS_MAGIC, t.shape[0])
    else:
        raise ValueError("IDX writer takes (N, H, W) images or (N,) labels")
    data = header + t.numpy().tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path
