"""Processes seen through Linux's /proc, for the tests that check no worker outlives its parent."""

from __future__ import annotations

from pathlib import Path


def parent_of(pid: int) -> int | None:
    """The parent pid of process `pid`, or None when it is gone."""
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if parent_of(int(p.name)) == pid]


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` that still run."""
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]
