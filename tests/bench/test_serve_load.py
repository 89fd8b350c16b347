"""`lenet bench --serve`: a real `lenet serve` and the bare endpoint, loaded by the same client, in one process.

No timed assertions: the figures are checked for what they are (consistent with each other,
every request answered), never for how fast this machine is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lenet_cli.bench.plan import BenchConfig, plan
from lenet_cli.bench.processes import run_worker
from lenet_cli.bench.serve_load import free_port, start_server


@pytest.mark.slow
def test_serve_job_loads_lenet_serve_and_the_bare_endpoint():
    answer = run_worker({"kind": "serve", "seconds": 0.3, "rounds": 2, "clients": 4}, timeout=120)
    assert [r["kind"] for r in answer["serve"]] == ["canvas 280x280 PNG", "drawing 1050x800 PNG"]
    for row in answer["serve"]:
        lenet, bare = row["lenet"], row["bare"]
        assert lenet["requests"] > 0 and bare["requests"] > 0
        assert lenet["errors"] == 0 and bare["errors"] == 0  # every request answered 200 with JSON
        assert lenet["p50_ms"] <= lenet["p99_ms"] and bare["p50_ms"] <= bare["p99_ms"]
        assert row["ratio"] == pytest.approx(lenet["requests_per_s"] / bare["requests_per_s"])
    assert answer["serve"][1]["bytes"] > answer["serve"][0]["bytes"]  # the drawing is the bigger upload


@pytest.mark.slow
def test_a_server_that_never_answers_is_one_error_with_its_last_words():
    cmd = [sys.executable, "-c", "import sys; sys.exit('no such server here')"]
    with pytest.raises(RuntimeError, match="did not answer on port .*no such server here"):
        start_server(cmd, free_port(), "test server")


def test_serve_is_one_task_after_the_repeats_and_only_when_asked():
    onnx = Path("model.onnx")
    assert not [t for t in plan(BenchConfig(repeats=2), "cpu", Path("w"), onnx) if t.key == "serve"]
    tasks = plan(BenchConfig(repeats=2, serve=True), "cpu", Path("w"), onnx)
    assert tasks[-1].key == "serve" and sum(t.key == "serve" for t in tasks) == 1
    assert tasks[-1].job["onnx"] == "model.onnx" and tasks[-1].job["rounds"] == 2
    assert not [t for t in plan(BenchConfig(serve=True), "cpu", Path("w"), None) if t.key == "serve"]
