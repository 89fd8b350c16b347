"""Device choice without a GPU: `--device` parsing, `auto`'s choice and reason, onnxruntime providers,
and the messages for a missing GPU, too many processes per GPU, and nccl without CUDA or NCCL."""

from __future__ import annotations

import pytest
import torch

from lenet_cli import devices
from lenet_cli.errors import DeviceError, UsageError
from lenet_cli.training import distributed
from lenet_cli.training.distributed import DistContext


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees `n` CUDA GPUs (set through the returned function); no MPS."""
    def set_count(n: int, built: str | None = "12.4") -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.version, "cuda", built)
        monkeypatch.setattr(devices, "_mps_available", lambda: False)

    return set_count


@pytest.mark.parametrize("text, kind, index", [("auto", "auto", None), ("CPU", "cpu", None), (" cuda ", "cuda", None),
                                                ("cuda:3", "cuda", 3), ("mps", "mps", None)])
def test_parse_device(text, kind, index):
    spec = devices.parse_device(text)
    assert (spec.kind, spec.index) == (kind, index)
    assert str(spec) == text.strip().lower()


@pytest.mark.parametrize("text", ["cuda:-1", "gpu:0", "cuda0", "cuda:1:2", "mps:0"])
def test_parse_device_refuses(text):
    with pytest.raises(UsageError, match="Use one of: auto"):
        devices.parse_device(text)


def test_auto_picks_the_first_gpu_and_says_why(gpus):
    gpus(2)
    device, reason = devices.auto_choice()
    assert device == torch.device("cuda", 0) and reason == "CUDA is available (2 GPUs): the first one"
    assert devices.resolve_device("auto") == device


def test_auto_picks_mps_then_cpu(gpus, monkeypatch):
    gpus(0, built=None)
    device, reason = devices.auto_choice()
    assert device.type == "cpu"
    assert reason == "no CUDA (this PyTorch build has no CUDA support) and no MPS"
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    device, reason = devices.auto_choice()
    assert device.type == "mps" and reason.endswith("MPS is available")


@pytest.mark.parametrize("built, words", [
    (None, "this PyTorch build has no CUDA support"),
    ("12.4", "PyTorch was built for CUDA 12.4, but no NVIDIA GPU or driver was found"),
])
def test_missing_gpu_says_why(gpus, built, words):
    gpus(0, built)
    with pytest.raises(DeviceError) as info:
        devices.resolve_device("cuda")
    assert f"CUDA was requested but is not available: {words}." in str(info.value)
    assert "--device cpu" in str(info.value)


def test_an_index_past_the_last_gpu(gpus):
    gpus(2)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"CUDA device 2 was requested but this machine has 2 GPU\(s\) "
                                          r"\(cuda:0..cuda:1\)"):
        devices.resolve_device("cuda:2")


@pytest.mark.parametrize("available, spec, expected", [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["AzureExecutionProvider", "CPUExecutionProvider"], "auto", ["CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", ["CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda:1", [("CUDAExecutionProvider", {"device_id": 1})]),
])
def test_onnx_providers(monkeypatch, available, spec, expected):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    assert devices.onnx_providers(spec) == expected


@pytest.mark.parametrize("spec, words", [("cuda", "no CUDA execution provider"), ("mps", "no MPS backend")])
def test_onnx_providers_refuse_what_is_missing(monkeypatch, spec, words):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceError, match=words):
        devices.onnx_providers(spec)


def test_each_torchrun_process_gets_its_own_gpu(gpus):
    gpus(2)
    ranks = [DistContext(rank=r, world_size=2, local_rank=r, local_world_size=2) for r in (0, 1)]
    assert [distributed.rank_device(c, devices.parse_device("cuda")) for c in ranks] == [
        torch.device("cuda", 0), torch.device("cuda", 1)]
    assert distributed.rank_device(ranks[1], devices.parse_device("auto")) == torch.device("cuda", 1)


def test_more_processes_than_gpus(gpus):
    gpus(1)
    ctx = DistContext(rank=1, world_size=2, local_rank=1, local_world_size=2)
    with pytest.raises(DeviceError) as info:
        distributed.rank_device(ctx, devices.parse_device("cuda"))
    assert "Process 1 of this machine has no GPU of its own: the machine has 1 GPU(s)" in str(info.value)
    assert "Start at most 1 process(es) per machine (--nproc-per-node)" in str(info.value)


def test_nccl_without_cuda(gpus):
    gpus(0)
    ctx = DistContext(rank=0, world_size=2, local_rank=0, local_world_size=2)
    with pytest.raises(DeviceError, match="CUDA was requested but is not available"):
        distributed.rank_device(ctx, devices.parse_device("cuda"))
    assert distributed.rank_device(ctx, devices.parse_device("auto")) == torch.device("cpu")  # gloo
    with pytest.raises(DeviceError, match="not on MPS"):
        distributed.rank_device(ctx, devices.parse_device("mps"))


def test_nccl_missing_from_the_torch_build(monkeypatch):
    import torch.distributed as dist

    joined = []
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: joined.append(a))
    ctx = DistContext(rank=0, world_size=2, local_rank=0, local_world_size=2)
    with pytest.raises(DeviceError, match="needs NCCL, and this PyTorch build has none"):
        with distributed.process_group(ctx, torch.device("cuda", 0)):
            pass
    assert joined == []


def test_cuda_runs_nccl_and_the_cpu_gloo(monkeypatch):
    import torch.distributed as dist

    joined = []
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: joined.append(("set_device", d)))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **k: joined.append((backend, k["device_id"])))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: joined.append("destroyed"))
    ctx = DistContext(rank=0, world_size=2, local_rank=0, local_world_size=2)
    for device in (torch.device("cuda", 1), torch.device("cpu")):
        with distributed.process_group(ctx, device) as joined_ctx:
            assert joined_ctx.backend == ("nccl" if device.type == "cuda" else "gloo")
    assert joined == [("set_device", torch.device("cuda", 1)), ("nccl", torch.device("cuda", 1)), "destroyed",
                      ("gloo", None), "destroyed"]
