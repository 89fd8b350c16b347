"""`lenet bench`: every measurement in a process of its own, repeats as min / median / max, failures as one line.

No timed assertions: the figures are checked for what they are (consistent with each other,
from the processes they say), never for how fast this machine is.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from lenet_cli.bench import processes as bench_processes
from lenet_cli.api.benchmarking import BenchRequest, _accuracy_skip, _mnist_dir
from lenet_cli.bench.processes import run_worker, time_to_accuracy
from lenet_cli.cli.app import app
from lenet_cli.errors import BenchError, DataError
from lenet_cli.utils.timing import spread

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_each_measurement_and_repeat_runs_in_a_fresh_process():
    result = invoke("bench", "--quick", "--repeats", "2", "--batch-sizes", "1,8", "--device", "cpu",
                    "--backends", "torch,onnxruntime", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    rows = payload["inference"] + payload["training"]
    pids = [pid for row in rows for pid in row["pids"]]
    # One row per batch size shares its backend's processes; across backends, pipelines and repeats, none does.
    per_process = {(row.get("backend") or row["pipeline"], i): pid for row in rows for i, pid in enumerate(row["pids"])}
    assert len(set(per_process.values())) == len(per_process)
    assert os.getpid() not in pids and payload["environment"]["bench_pid"] == os.getpid()
    assert all(len(row["pids"]) == 2 and row["repeats"] == 2 for row in rows)
    for r in payload["inference"]:
        assert r["p50_us_min"] <= r["p50_us"] <= r["p50_us_max"]
        assert r["images_per_s_min"] <= r["images_per_s"] <= r["images_per_s_max"]
        assert r["images_per_s_max"] == pytest.approx(r["batch_size"] / (r["p50_us_min"] / 1e6))
    for t in payload["training"]:
        assert t["seconds_per_epoch_min"] <= t["seconds_per_epoch"] <= t["seconds_per_epoch_max"]
        assert t["images_per_s_min"] == pytest.approx(55_000 / t["seconds_per_epoch_max"])
        assert t["precision"] in ("float32", "bf16")
    from lenet_cli.training.recipe import cpu_has_amx

    lenet_row = next(t for t in payload["training"] if t["pipeline"] == "lenet")
    assert lenet_row["precision"] == ("bf16" if cpu_has_amx() else "float32")
    lo, mid, hi = (payload[f"training_speedup_vs_tutorial{s}"] for s in ("_min", "", "_max"))
    assert lo <= mid <= hi
    # The table says what was measured: repeats, and the scaled fraction of an epoch.
    table = invoke("bench", "--quick", "--repeats", "1", "--batch-sizes", "1", "--device", "cpu",
                   "--backends", "onnxruntime")
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())
    assert "5% of an epoch (2,750 images), scaled to 55,000 images" in text
    assert "p50 min" in text and "tutorial DataLoader" in text
    # The 1-epoch run to 99% belongs to --full: a quick run neither makes it nor reports it as skipped.
    assert "time to accuracy" not in table.stderr


@pytest.mark.slow
def test_a_worker_that_fails_is_one_error_line(monkeypatch):
    monkeypatch.setattr(bench_processes, "WORKER_MODULE", "lenet_cli.no_such_worker")
    result = invoke("bench", "--quick", "--device", "cpu", "--backends", "onnxruntime", "--batch-sizes", "1")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Benchmarking")]
    assert len(lines) == 1 and lines[0].startswith("Error: The matmul peak measurement failed:"), result.stderr
    assert "No module named lenet_cli.no_such_worker" in lines[0] and "Traceback" not in result.output


@pytest.mark.slow
def test_worker_errors_crashes_and_timeouts_are_bench_errors():
    with pytest.raises(BenchError, match=r"unknown bench job 'nope' \(pid \d+\)"):
        run_worker({"kind": "nope"})
    with pytest.raises(BenchError, match=r"unknown training pipeline 'keras'"):
        run_worker({"kind": "train-epoch", "pipeline": "keras"})
    with pytest.raises(BenchError, match=r"timed out after 0.01 s"):
        run_worker({"kind": "matmul", "devices": ["cpu"]}, timeout=0.01)
    answer = run_worker({"kind": "matmul", "devices": ["cpu"], "seconds": 0.01})
    assert answer["peak_gflops"]["cpu"] > 0 and answer["pid"] != os.getpid()


@pytest.mark.slow
def test_training_rows_use_the_images_lenet_train_trains_on(real_mnist):
    answer = run_worker({"kind": "train-epoch", "pipeline": "lenet", "device": "cpu", "images": 300,
                         "data_dir": str(real_mnist), "batch_size": 64})
    assert answer["data"] == "mnist" and answer["images"] == 300 and answer["batch_size"] == 64
    assert answer["steps"] == 5 and answer["seconds"] > 0


@pytest.mark.slow
def test_training_rows_on_too_small_a_data_set_fail_as_lenet_train_would(tiny_mnist):
    # 600 training images, and the default --val-size holds out 5000 of them.
    with pytest.raises(BenchError, match="Validation size 5000"):
        run_worker({"kind": "train-epoch", "pipeline": "tutorial", "device": "cpu", "images": 300,
                    "data_dir": str(tiny_mnist)})


@pytest.mark.slow
def test_the_one_epoch_run_reports_lenet_trains_error(tiny_mnist):
    # lenet train itself refuses: the default --val-size 5000 is larger than the tiny set. Its own
    # one-line error comes back, naming the option.
    with pytest.raises(BenchError, match="--val-size"):
        time_to_accuracy("cpu", str(tiny_mnist), timeout=300)


@pytest.mark.slow
def test_the_one_epoch_run_on_real_mnist(real_mnist):
    tta = time_to_accuracy("cpu", str(real_mnist), timeout=900)
    assert tta["command"] == "lenet train --epochs 1" and tta["epochs"] == 1 and tta["target"] == 0.99
    assert 0 < tta["train_seconds"] < tta["wall_seconds"] and tta["pid"] != os.getpid()
    assert tta["reached"] == (tta["test_accuracy"] >= 0.99) and tta["test_accuracy"] > 0.95


def test_where_the_mnist_for_bench_comes_from(tmp_path, tiny_mnist, monkeypatch):
    assert _mnist_dir(BenchRequest()) is None  # the tests' default folder is empty
    assert "pass --data-dir" in _accuracy_skip(BenchRequest(), None)
    assert "--quick" in _accuracy_skip(BenchRequest(quick=True), tiny_mnist)
    assert _accuracy_skip(BenchRequest(), tiny_mnist) is None
    assert _mnist_dir(BenchRequest(data_dir=tiny_mnist)) == tiny_mnist
    monkeypatch.setenv("LENET_DATA_DIR", str(tiny_mnist))
    assert _mnist_dir(BenchRequest()) == tiny_mnist
    with pytest.raises(DataError, match="downloads are off"):
        _mnist_dir(BenchRequest(data_dir=tmp_path / "empty"))


def test_a_data_dir_without_mnist_is_an_error_before_any_measurement(tmp_path):
    result = invoke("bench", "--quick", "--data-dir", tmp_path / "empty", "--device", "cpu")
    assert result.exit_code == 1 and "downloads are off" in result.stderr and "Benchmarking" not in result.stderr


def test_spread():
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert spread([4.0, 1.0]) == {"min": 1.0, "median": 2.5, "max": 4.0}
    assert spread([5.0]) == {"min": 5.0, "median": 5.0, "max": 5.0}
