"""The machine probes on fixed inputs: /proc/cpuinfo layouts, package metadata, CUDA as torch reports it."""

from __future__ import annotations

from types import SimpleNamespace

from lenet_cli.machine import probe

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile
processor\t: 2
physical id\t: 0
core id\t\t: 1
"""
ARM = """processor\t: 0
Features\t: fp asimd sve
processor\t: 1
Features\t: fp asimd sve
"""


def test_cpuinfo_counts_cores_threads_and_features():
    assert probe.parse_cpuinfo(XEON) == ("Intel(R) Xeon(R) Platinum 8480+", 2, 3,
                                         {"AVX2": True, "AVX-512": True, "AMX": True})


def test_cpuinfo_without_core_ids_or_x86_flags():
    model, cores, threads, flags = probe.parse_cpuinfo(ARM)
    assert (model, cores, threads) == ("", None, 2)
    assert flags == {"AVX2": False, "AVX-512": False, "AMX": False}


def test_cpu_info_without_proc_falls_back(tmp_path):
    info = probe.cpu_info(tmp_path / "no-cpuinfo")
    assert info.threads >= 1 and info.model and info.flags == {}


def test_versions_come_from_metadata_and_name_the_gpu_build(monkeypatch):
    installed = {"onnxruntime-gpu": "1.20.0", "torch": "2.5.1"}

    def version(name):
        if name not in installed:
            raise probe.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(probe.metadata, "version", version)
    versions = probe.package_versions()
    assert versions["onnxruntime"] == "1.20.0 (onnxruntime-gpu)" and versions["torch"] == "2.5.1"
    assert versions["FastAPI"] is None and versions["lenet"].endswith("(not installed)")


def test_torch_devices_lists_each_gpu(monkeypatch):
    import torch

    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, total_memory=85 * 2**30,
                            multi_processor_count=132)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    d = probe.torch_devices()
    assert d["cuda_available"] and d["cudnn"] == 90100
    assert [g["index"] for g in d["gpus"]] == [0, 1]
    assert d["gpus"][0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "memory_gib": 85.0,
                            "multiprocessors": 132}


def test_driver_version_from_proc(monkeypatch, tmp_path):
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n")
    monkeypatch.setattr(probe, "NVIDIA_VERSION", version)
    monkeypatch.setattr(probe.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError(name)))
    assert probe.cuda_driver() == "550.54.15"


def test_no_driver_is_none(monkeypatch, tmp_path):
    monkeypatch.setattr(probe, "NVIDIA_VERSION", tmp_path / "none")
    monkeypatch.setattr(probe.ctypes, "CDLL", lambda name: (_ for _ in ()).throw(OSError(name)))
    assert probe.cuda_driver() is None
