"""`lenet train`: load MNIST, train (or resume), save the run folder, score best.safetensors on the test set.

    from lenet_cli import api
    report = api.train(api.TrainRequest(data_dir=Path("mnist")))
    print(report.test.accuracy)

The request and report are defined beside the session that runs them (training/session.py);
this is their public face.
"""

from __future__ import annotations

from lenet_cli.events import Events
from lenet_cli.training.session import (
    FIELD_FLAGS,
    TrainReport,
    TrainRequest,
    run_session,
)

__all__ = ["FIELD_FLAGS", "TrainReport", "TrainRequest", "train"]


def train(request: TrainRequest, events: Events | None = None) -> TrainReport:
    """Load data, train, save everything, evaluate best.safetensors on the test set.

    A checkpoint is written after every epoch and when Ctrl-C or SIGTERM stops the run
    mid-epoch; `request.resume` continues a stopped run. The test set is used once, for the
    report; never for choosing the epoch. Under torchrun every process calls this.
    """
    return run_session(request, events)
