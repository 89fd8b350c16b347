"""`run_checks`: everything `lenet checks` reports, gathered into one `ChecksReport`.

Each part is checked on its own: a missing MNIST, a broken onnxruntime or a torch that fails to
import is a line of the report, never the end of it. Nothing is downloaded or written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lenet_cli.data.mnist import MNIST_FILES, check_file, resolve_data_dir
from lenet_cli.errors import DataError, first_line
from lenet_cli.machine.probe import (
    CpuInfo,
    cpu_info,
    cuda_driver,
    onnx_runtime,
    package_versions,
    torch_devices,
)
from lenet_cli.model.weights import bundled_onnx_path, bundled_weights_path, read_metadata


@dataclass(frozen=True)
class MnistFileCheck:
    """One of the four MNIST files: where it was found and how many items it holds, or what is wrong."""

    name: str
    path: str | None
    count: int | None
    problem: str | None  # None: present and valid


@dataclass(frozen=True)
class ChecksReport:
    """What this machine offers lenet. `devices` and `auto` are None when torch was not asked for."""

    versions: dict[str, str | None]
    cpu: CpuInfo
    cuda_driver: str | None
    devices: dict[str, Any] | None
    onnxruntime: dict[str, Any]
    onnx_auto: list[str]  # the providers an .onnx model gets with --device auto
    data_dir: Path
    mnist: list[MnistFileCheck]
    model: dict[str, Any]
    auto: dict[str, str] | None  # {"device": ..., "reason": ...}
    problems: list[str] = field(default_factory=list)  # probes that failed (torch would not import, ...)

    @property
    def mnist_ok(self) -> bool:
        """All four MNIST files are there and valid."""
        return all(f.problem is None for f in self.mnist)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `lenet checks --json`."""
        return {
            "versions": self.versions, "cpu": self.cpu.to_dict(), "cuda_driver": self.cuda_driver,
            "devices": self.devices, "onnxruntime": {**self.onnxruntime, "auto": self.onnx_auto},
            "mnist": {"data_dir": str(self.data_dir), "ok": self.mnist_ok,
                      "files": [vars(f) for f in self.mnist]},
            "bundled_model": self.model, "device_auto": self.auto, "problems": self.problems,
        }


def check_mnist(data_dir: Path) -> list[MnistFileCheck]:
    """Each of the four files under `data_dir`: found, checksummed (gzipped files) and its header read."""
    checks = []
    for key, (name, _) in MNIST_FILES.items():
        try:
            path, count = check_file(data_dir, key)
            checks.append(MnistFileCheck(name, str(path), count, None))
        except DataError as exc:
            checks.append(MnistFileCheck(name, None, None, first_line(exc)))
    return checks


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundled_model() -> dict[str, Any]:
    """The bundled weights and ONNX files: paths, SHA-256, and the test accuracy their metadata records."""
    path, onnx = bundled_weights_path(), bundled_onnx_path()
    info: dict[str, Any] = {"weights": str(path), "onnx": str(onnx)}
    try:
        raw = path.read_bytes()
        info["weights_sha256"] = hashlib.sha256(raw).hexdigest()
        metrics = json.loads(read_metadata(raw).get("metrics", "{}"))
        info["test_accuracy"] = metrics.get("test_accuracy")
        info["onnx_sha256"] = sha256(onnx)
    except (OSError, ValueError) as exc:
        info["problem"] = f"cannot read the bundled model: {first_line(exc)}"
    return info


def _onnx_auto(providers: list[str]) -> list[str]:
    """What lenet asks onnxruntime for under --device auto (devices.onnx_providers, which rules it)."""
    from lenet_cli.devices import onnx_providers

    try:
        return [p if isinstance(p, str) else p[0] for p in onnx_providers("auto")] if providers else []
    except Exception:  # noqa: BLE001 - onnxruntime broken: its import error is reported already
        return []


def run_checks(data_dir: Path | None = None, use_torch: bool = True) -> ChecksReport:
    """Look at this machine; with `use_torch`, also at the devices torch sees and `--device auto`'s choice."""
    problems: list[str] = []
    devices = auto = None
    if use_torch:
        try:
            from lenet_cli.devices import auto_choice

            devices = torch_devices()
            device, reason = auto_choice()
            auto = {"device": str(device), "reason": reason}
        except Exception as exc:  # noqa: BLE001 - a broken torch is what this command must report
            problems.append(f"torch: {type(exc).__name__}: {first_line(exc)}")
    ort = onnx_runtime()
    if "error" in ort:
        problems.append(ort["error"])
    root = resolve_data_dir(data_dir)
    return ChecksReport(versions=package_versions(), cpu=cpu_info(), cuda_driver=cuda_driver(), devices=devices,
                        onnxruntime=ort, onnx_auto=_onnx_auto(ort["providers"]), data_dir=root,
                        mnist=check_mnist(root), model=bundled_model(), auto=auto, problems=problems)
