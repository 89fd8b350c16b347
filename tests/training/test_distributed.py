"""`lenet train` under torchrun: 2 CPU processes over gloo on 127.0.0.1, and the arithmetic of the split.

Each launch starts torchrun and two processes that import torch, so the launches are few and
tiny (the synthetic MNIST, a few epochs); every one runs under a subprocess timeout, so a hang
fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lenet_cli.training.distributed import SINGLE, check_shardable, detect, process_label, shard, timeout_seconds
from lenet_cli.errors import UsageError

LAUNCH_TIMEOUT = 300  # seconds; a launch that takes longer has hung
TRAIN = ["--no-download", "--epochs", "4", "--batch-size", "32", "--val-size", "100", "--seed", "5"]
HERE = Path(__file__).parents[1]  # tests/: the helper scripts live there


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int = 2) -> list[str]:
    """torchrun on one machine, its rendezvous on a free port of 127.0.0.1."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--monitor-interval", "0.2"]


def env() -> dict[str, str]:
    e = dict(os.environ, LENET_DIST_TIMEOUT="60", OMP_NUM_THREADS="1")
    if sys.platform.startswith("linux"):
        e["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's sockets on the loopback, whatever the host name resolves to
    return e


def launch(args: list[str], nproc: int = 2, script: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = torchrun(nproc) + (script or ["-m", "lenet_cli"]) + args
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def two_runs(tiny_mnist, tmp_path_factory):
    """The same 2-process run twice (same seed), in two folders."""
    out = []
    for name in ("a", "b"):
        folder = tmp_path_factory.mktemp("dist") / name
        r = launch(["train", "--data-dir", str(tiny_mnist), "-o", str(folder), *TRAIN])
        assert r.returncode == 0, r.stdout + r.stderr
        out.append((folder, r))
    return out


@pytest.mark.slow
def test_two_processes_write_one_run_folder(two_runs):
    folder, r = two_runs[0]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["best.safetensors", "last.safetensors", "checkpoint.safetensors", "history.csv", "history.json",
         "curves.png"])
    assert not list(folder.parent.glob("runs"))  # no second folder from another process
    # Rank 0 alone reports: one table, one result.
    assert r.stdout.count("test accuracy") == 1, r.stdout
    assert r.stderr.count("epoch   1/4") == 1, r.stderr
    with safe_open(str(folder / "best.safetensors"), "pt") as f:
        training = json.loads(f.metadata()["training"])
    assert training["world_size"] == 2 and training["backend"] == "gloo"
    assert training["batch_size"] == 32  # the global batch
    history = json.loads((folder / "history.json").read_text())["history"]
    assert len(history) == 4 and history[-1]["val_acc"] > 0.3  # it learned, on 2 processes
    # The epoch's figures count the images of both processes.
    assert history[0]["images_per_s"] > 0


@pytest.mark.slow
def test_same_seed_same_weights(two_runs):
    (a, _), (b, _) = two_runs
    for name in ("best.safetensors", "last.safetensors"):
        assert_same(weights(a / name), weights(b / name))


@pytest.mark.slow
def test_the_clean_epochs_skip_augmentation_under_torchrun_too(two_runs, tiny_mnist, tmp_path):
    """The default run's last 2 of 4 epochs are unaugmented; every epoch augmented gives other weights."""
    folder = tmp_path / "augmented"
    r = launch(["train", "--data-dir", str(tiny_mnist), "-o", str(folder), *TRAIN, "--clean-epochs", "0"])
    assert r.returncode == 0, r.stdout + r.stderr
    (default, _), _ = two_runs
    clean, augmented = weights(default / "last.safetensors"), weights(folder / "last.safetensors")
    assert any(not torch.equal(clean[k], augmented[k]) for k in clean if clean[k].is_floating_point())


@pytest.mark.slow
def test_interrupt_then_resume_continues_to_the_same_weights(two_runs, tiny_mnist, tmp_path):
    """SIGTERM to torchrun after the first epoch: every process stops at one step, one checkpoint, and
    --resume under torchrun (same number of processes) ends with the uninterrupted run's weights."""
    folder = tmp_path / "stopped"
    cmd = torchrun() + ["-m", "lenet_cli", "train", "--data-dir", str(tiny_mnist), "-o", str(folder), *TRAIN]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:  # one plain line per epoch when stderr is not a terminal
            lines.append(line)
            if line.startswith("epoch   1/4"):
                proc.send_signal(signal.SIGTERM)
                break
        out, rest = proc.communicate(timeout=LAUNCH_TIMEOUT)
    finally:
        proc.kill()
    stderr = "".join(lines) + rest
    assert "Stopped" in stderr, stderr
    assert proc.returncode != 0
    assert (folder / "checkpoint.safetensors").exists()
    assert not (folder / ".lenet-train.lock").exists()
    assert "torchrun --standalone --nproc-per-node 2 -m lenet_cli train --resume" in stderr
    r = launch(["train", "--resume", str(folder), "--data-dir", str(tiny_mnist)])
    assert r.returncode == 0, r.stdout + r.stderr
    uninterrupted, _ = two_runs[0]
    assert_same(weights(folder / "last.safetensors"), weights(uninterrupted / "last.safetensors"))


@pytest.mark.slow
def test_a_failing_process_ends_the_launch_with_its_message(tiny_mnist, tmp_path):
    started = time.monotonic()
    r = launch(["train", "--data-dir", str(tiny_mnist), "-o", str(tmp_path / "run"), *TRAIN],
               script=[str(HERE / "dist_failing_rank.py")])
    assert r.returncode != 0
    assert "Error (rank 1 of 2): MNIST not found in" in r.stderr, r.stderr
    assert time.monotonic() - started < LAUNCH_TIMEOUT  # ended on its own (subprocess.run would have raised)
    assert not (tmp_path / "run" / "best.safetensors").exists()


# The arithmetic of the split, without processes.

def test_shards_cover_the_batch_in_order():
    for count in (1, 2, 7, 64, 216, 256):
        for world in range(1, min(count, 9) + 1):
            bounds = [shard(count, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert [shard(256, r, 3) for r in range(3)] == [(0, 86), (86, 171), (171, 256)]


def test_every_process_needs_an_image_of_every_batch():
    check_shardable(55_000, 128, 2)  # the default: 429 batches of 128 and one of 88
    check_shardable(500, 32, 4)  # a last batch of 20
    with pytest.raises(UsageError, match="last batch of each epoch has 1 image"):
        check_shardable(65, 32, 2)
    with pytest.raises(UsageError, match="--batch-size 2 is fewer than the 3 processes"):
        check_shardable(100, 2, 3)


def test_detect_reads_torchrun_environment():
    assert detect({}) is SINGLE
    assert detect({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is SINGLE
    ctx = detect({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.local_world_size, ctx.is_main) == (3, 4, 1, 2, False)
    assert process_label({"WORLD_SIZE": "4", "RANK": "3"}) == " (rank 3 of 4)"
    assert process_label({}) == ""
    with pytest.raises(UsageError):
        detect({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(UsageError):
        detect({"WORLD_SIZE": "two"})
    assert process_label({"WORLD_SIZE": "two"}) == ""
    assert timeout_seconds({}) == 300 and timeout_seconds({"LENET_DIST_TIMEOUT": "5"}) == 5
    with pytest.raises(UsageError):
        timeout_seconds({"LENET_DIST_TIMEOUT": "0"})
