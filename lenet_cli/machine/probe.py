"""Facts about this machine, each read the cheapest way: metadata, /proc, libcuda, then torch.

Package versions come from their installed metadata (`importlib.metadata`), so the report
gives torch's version without importing torch (2+ s on a small machine). Every probe
returns plain data and never raises: a probe that fails says so in its value.
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

# The distributions `lenet checks` reports, by the name users know them by. onnxruntime comes as
# onnxruntime or onnxruntime-gpu (same module): the first one installed is reported.
PACKAGES: dict[str, tuple[str, ...]] = {
    "lenet": ("lenet-cli",),
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "numpy": ("numpy",),
    "Pillow": ("pillow",),
    "FastAPI": ("fastapi",),
}
CPU_FLAGS = {"AVX2": "avx2", "AVX-512": "avx512f", "AMX": "amx_tile"}  # as /proc/cpuinfo spells them
CPUINFO = Path("/proc/cpuinfo")
NVIDIA_VERSION = Path("/proc/driver/nvidia/version")


def package_versions() -> dict[str, str | None]:
    """Python's and each package's installed version (None: not installed), without importing them."""
    versions: dict[str, str | None] = {"Python": platform.python_version()}
    for label, names in PACKAGES.items():
        versions[label] = None
        for name in names:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
            versions[label] = version if name == names[-1] else f"{version} ({name})"
            break
    # lenet's own version is the code's (what `lenet --version` says); the installed metadata can be
    # older (an editable install made before a release) or absent (a checkout never installed).
    from lenet_cli import __version__

    installed = versions["lenet"]
    if installed is None:
        versions["lenet"] = f"{__version__} (not installed)"
    elif installed != __version__:
        versions["lenet"] = f"{__version__} (installed metadata says {installed})"
    else:
        versions["lenet"] = __version__
    return versions


@dataclass(frozen=True)
class CpuInfo:
    """The CPU: its model, physical cores, hardware threads, those this process may use, and features."""

    model: str
    cores: int | None
    threads: int
    usable: int
    flags: dict[str, bool] = field(default_factory=dict)  # AVX2, AVX-512, AMX; empty where unknown

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"model": self.model, "cores": self.cores, "threads": self.threads, "usable_threads": self.usable,
                "flags": dict(self.flags)}


def parse_cpuinfo(text: str) -> tuple[str, int | None, int, dict[str, bool]]:
    """(model, physical cores, threads, flags) from the text of /proc/cpuinfo (x86 and Arm layouts).

    Physical cores are the distinct (physical id, core id) pairs; None where the file has no core
    ids (Arm, some VMs). Threads are the `processor` entries.
    """
    model, threads, flags, cores = "", 0, set(), set()
    physical = ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            threads += 1
        elif key in ("model name", "Model", "cpu model") and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    found = {label: flag in flags for label, flag in CPU_FLAGS.items()} if flags else {}
    return model, len(cores) or None, threads, found


def cpu_info(cpuinfo: Path = CPUINFO) -> CpuInfo:
    """This machine's CPU; on systems without /proc/cpuinfo, what `platform` and `os` say."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        model, cores, threads, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    except OSError:
        model, cores, threads, flags = "", None, 0, {}
    return CpuInfo(model=model or platform.processor() or platform.machine() or "unknown", cores=cores,
                   threads=threads or os.cpu_count() or usable, usable=usable, flags=flags)


def cuda_driver() -> str | None:
    """The NVIDIA driver: '550.54.15, CUDA 12.4' (kernel module and the CUDA version it supports).

    Read from /proc and libcuda's cuDriverGetVersion, which need no GPU context; None without a driver.
    """
    parts = []
    try:
        words = NVIDIA_VERSION.read_text(errors="replace").split()
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar ..."
        parts += [w for w in words if w[:1].isdigit() and w.count(".") >= 1][:1]
    except OSError:
        pass
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
            parts.append(f"CUDA {version.value // 1000}.{version.value % 1000 // 10}")
    except (OSError, AttributeError):
        pass
    return ", ".join(parts) or None


def torch_devices() -> dict[str, Any]:
    """What torch sees: each CUDA GPU (name, capability, memory), its CUDA runtime and cuDNN, MPS, threads."""
    import torch

    from lenet_cli.devices import _mps_available

    gpus = []
    available = bool(torch.cuda.is_available())
    for i in range(torch.cuda.device_count() if available else 0):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1),
                     "multiprocessors": props.multi_processor_count})
    cudnn = torch.backends.cudnn.version() if available else None
    return {
        "cuda_available": available,
        "cuda_built": torch.version.cuda,  # the CUDA runtime this torch was built with (None: a CPU build)
        "cudnn": cudnn,
        "gpus": gpus,
        "mps_available": _mps_available(),
        "torch_threads": torch.get_num_threads(),
    }


def onnx_runtime() -> dict[str, Any]:
    """onnxruntime's available execution providers and its device build ('CPU' or 'GPU')."""
    try:
        import onnxruntime as ort
    except Exception as exc:  # noqa: BLE001 - broken or absent: say so, the other checks still run
        return {"error": f"onnxruntime failed to import: {exc}", "providers": []}
    return {"providers": list(ort.get_available_providers()), "build": ort.get_device()}
