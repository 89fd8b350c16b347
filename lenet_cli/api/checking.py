"""`lenet checks`: what this machine offers lenet, as one report (machine/ does the looking)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lenet_cli.events import Events
from lenet_cli.machine.report import ChecksReport, run_checks


@dataclass(frozen=True)
class ChecksRequest:
    """`lenet checks`: where MNIST would be read from, and whether to ask torch about devices."""

    data_dir: Path | None = None  # None: $LENET_DATA_DIR or the per-user cache, as every command reads it
    use_torch: bool = True  # False (--no-torch): no devices and no auto choice, but about 4x sooner


def checks(request: ChecksRequest, events: Events | None = None) -> ChecksReport:
    """Look at this machine: versions, devices, providers, MNIST, the bundled model, `--device auto`."""
    events = events or Events()
    with events.stage("Looking at this machine ..."):
        return run_checks(request.data_dir, use_torch=request.use_torch)
