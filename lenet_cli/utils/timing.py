"""Timing loops and summaries shared by `lenet bench` and the int8 comparison of `lenet export`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def time_calls(fn: Callable[[], Any], warmup: int, min_seconds: float, sync: Callable[[], None] = lambda: None,
               max_runs: int = 100_000) -> list[float]:
    """Call fn repeatedly; per-call wall times in seconds after `warmup` untimed calls.

    Runs for at least `min_seconds` and at least 5 calls; every call is timed on its own
    so the percentiles show jitter, not just the mean. `sync` waits for the device
    (CUDA launches return before the work is done).
    """
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while (time.perf_counter() - start < min_seconds or len(times) < 5) and len(times) < max_runs:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def spread(values: list[float]) -> dict[str, float]:
    """min, median and max of repeated measurements: how far apart the repeats were, not just one figure."""
    ordered = sorted(values)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {"min": ordered[0], "median": median, "max": ordered[-1]}
