"""Training under torchrun: one process per device, DistributedDataParallel over torch.distributed.

torchrun (`python -m torch.distributed.run`) starts the processes and tells each one who it is
through its environment (RANK, WORLD_SIZE, LOCAL_RANK); `detect` reads that. Nothing here
launches processes or moves bytes itself: the process group, the collectives and the gradient
all-reduce are torch.distributed's.

How a run is split (the README's "Distributed training" says why):

* `--batch-size` is the global batch. Every process draws the same shuffled order from the
  same seeded generator and trains on its contiguous slice of each global batch (`shard`).
* DDP sums the gradients of the processes; `ShardWeight` makes each process contribute
  (its images / the global batch's) of its mean gradient, so the update is the mean over the
  global batch even when the slices differ in size (a last batch not divisible by the
  processes).
* Batch norm keeps per-process statistics (SyncBatchNorm runs on CUDA only); DDP copies
  rank 0's running statistics to the others before every forward pass.
* Rank 0 alone validates, reports, writes files and runs the test evaluation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lenet_cli.devices import DeviceSpec, resolve_device
from lenet_cli.errors import DeviceError, DistributedError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

TIMEOUT_ENV = "LENET_DIST_TIMEOUT"
# Seconds a collective may wait for the other processes. Rank 0 validates, tests and writes the run
# folder while the others wait at the next collective: minutes would be needed only on a very slow
# disk. A process that died is noticed at once (its sockets close); this bounds the rest (a hung one).
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistContext:
    """Who this process is in a torchrun launch (rank 0 of 1 when it runs alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine
    backend: str | None = None  # gloo | nccl, once the process group is up

    @property
    def active(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, validates and writes files."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What weights files and checkpoints record about the launch."""
        return {"world_size": self.world_size, "backend": self.backend}


SINGLE = DistContext()


def detect(environ: Mapping[str, str] | None = None) -> DistContext:
    """The launch torchrun described in the environment; SINGLE outside torchrun (or with one process)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        world, rank, local = int(env["WORLD_SIZE"]), int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them).") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UsageError(f"RANK {rank} of WORLD_SIZE {world} is not a valid launch (torchrun sets them).")
    if world == 1:
        return SINGLE  # one process: exactly the single-process run
    return DistContext(rank=rank, world_size=world, local_rank=local, local_world_size=local_world)


def relaunch_prefix(ctx: DistContext) -> list[str] | None:
    """The words before `train` in the command that continues this launch's run (None: plain `lenet`)."""
    if not ctx.active:
        return None
    if ctx.local_world_size == ctx.world_size:  # one machine
        return ["torchrun", "--standalone", "--nproc-per-node", str(ctx.world_size), "-m", "lenet_cli"]
    return ["torchrun", "<the same --nnodes/--rdzv options>", "--nproc-per-node", str(ctx.local_world_size),
            "-m", "lenet_cli"]


def process_label(environ: Mapping[str, str] | None = None) -> str:
    """' (rank 1 of 2)' in a process of a torchrun launch, for its messages; '' otherwise. Never raises."""
    try:
        ctx = detect(environ)
    except UsageError:
        return ""
    return f" (rank {ctx.rank} of {ctx.world_size})" if ctx.active else ""


def timeout_seconds(environ: Mapping[str, str] | None = None) -> float:
    """$LENET_DIST_TIMEOUT, else DEFAULT_TIMEOUT_S."""
    env = os.environ if environ is None else environ
    text = env.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}.")
    return value


def rank_device(ctx: DistContext, spec: DeviceSpec) -> "torch.device":
    """This process's device: cuda:LOCAL_RANK where CUDA is used without an index, else what --device says."""
    import torch

    if spec.kind == "mps":
        raise DeviceError("Distributed training runs on CPUs (gloo) or CUDA GPUs (nccl), not on MPS.",
                          "Use --device cpu under torchrun, or train in one process on MPS.")
    wants_cuda = spec.kind == "cuda" or (spec.is_auto and torch.cuda.is_available())
    if not wants_cuda:
        return torch.device("cpu")
    if spec.index is not None:
        return resolve_device(spec)  # --device cuda:N: every process of this machine on that GPU, as asked
    resolve_device(DeviceSpec("cuda"))  # DeviceError when this machine has no usable CUDA
    count = torch.cuda.device_count()
    if ctx.local_rank >= count:
        raise DeviceError(f"Process {ctx.local_rank} of this machine has no GPU of its own: the machine has "
                          f"{count} GPU(s) (cuda:0..cuda:{count - 1}).",
                          f"Start at most {count} process(es) per machine (--nproc-per-node), or use --device cpu.")
    return torch.device("cuda", ctx.local_rank)


@contextlib.contextmanager
def process_group(ctx: DistContext, device: "torch.device") -> Iterator[DistContext]:
    """The process group for this launch (gloo on the CPU, nccl on CUDA), destroyed on the way out."""
    import datetime

    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        # Else init_process_group's "no NCCL built in" reads as a peer failure ("could not join the others").
        raise DeviceError("torchrun on CUDA GPUs needs NCCL, and this PyTorch build has none.",
                          "Use --device cpu under torchrun (gloo), or install a Linux CUDA build of PyTorch.")
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=timeout_seconds())
    try:
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size, timeout=timeout,
                                device_id=device if device.type == "cuda" else None)
    except (RuntimeError, ValueError) as exc:
        raise peer_failure(exc, ctx, "could not join the other processes") from exc
    try:
        yield replace(ctx, backend=backend)
    finally:
        dist.destroy_process_group()


def is_peer_failure(exc: BaseException) -> bool:
    """True for torch.distributed's errors: a collective failed (another process died, or timed out)."""
    import torch.distributed as dist

    return isinstance(exc, getattr(dist, "DistError", ())) or (
        isinstance(exc, RuntimeError) and any(w in str(exc) for w in ("Connection closed by peer", "Gloo", "NCCL")))


def peer_failure(exc: BaseException, ctx: DistContext, what: str = "lost the other processes") -> DistributedError:
    """The one-line error of a process whose partners failed or stopped answering."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return DistributedError(
        f"Process {ctx.rank} of {ctx.world_size} {what} ({first}).",
        "Another process of this run failed or was stopped: its message above says why. "
        f"A process that hangs is given up after {TIMEOUT_ENV} ({timeout_seconds():g} s).")


def shard(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, stop) of a global batch of `count` rows that process `rank` trains on.

    Contiguous slices that differ in size by at most one row, the larger ones first: 256 rows
    over 3 processes are 86, 85, 85.
    """
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def check_shardable(train_size: int, batch_size: int, world_size: int) -> None:
    """UsageError unless every global batch (the last one too) gives every process at least one image."""
    last = train_size % batch_size or batch_size
    if min(batch_size, last) < world_size:
        which = (f"the last batch of each epoch has {last} image(s)," if last < batch_size
                 else f"--batch-size {batch_size} is")
        raise UsageError(f"{which} fewer than the {world_size} processes: each process needs at least one.",
                         "Choose a --batch-size that leaves every process at least one image of every batch "
                         "(the training set has "
                         f"{train_size:,} images), or start fewer processes.")


class ShardWeight:
    """The share of the global batch this process trained on in the current step (DDP comm hook state)."""

    def __init__(self, value: float) -> None:
        self.value = value


def weighted_mean_hook(state, bucket):  # no annotations: DDP checks them, and this module's are strings
    """DDP comm hook: sum over processes of (share x mean gradient), i.e. the global batch's mean gradient.

    DDP's default hook divides by the number of processes, which is the same only when the
    slices are equal; the shares of a 256-image batch over 2 processes are 0.5 each (exact in
    binary), so equal slices give what the default gives, bit for bit.
    """
    import torch.distributed as dist

    buffer = bucket.buffer()
    buffer.mul_(state.value)
    return dist.all_reduce(buffer, async_op=True).get_future().then(lambda fut: fut.value()[0])


def wrap_ddp(net: "torch.nn.Module", device: "torch.device", weight: ShardWeight) -> "torch.nn.Module":
    """`net` in DistributedDataParallel with the weighted gradient mean.

    `net` may be kernels.CpuLeNet5, which holds the plain model as its one submodule: DDP then
    hooks the plain model's parameters, the ones the optimizer steps and the files save.
    """
    from torch.nn.parallel import DistributedDataParallel

    # DDP's default: rank 0's buffers (batch-norm running statistics) go to every process before each
    # forward pass, so all processes validate and save the same statistics.
    ddp = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    ddp.register_comm_hook(weight, weighted_mean_hook)
    return ddp


def any_rank(flag: bool, device: "torch.device") -> bool:
    """True on every process when `flag` is True on any (a stop asked for on one stops all, at the same step)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_over_ranks(values: list[float], device: "torch.device") -> list[float]:
    """Each value summed over the processes (float64: the sums are counts and loss totals)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def from_main(value: str | None) -> str:
    """Rank 0's `value` on every process (the run folder's name: rank 0 alone picks it)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def barrier() -> None:
    """Wait for every process (the others wait here while rank 0 writes the run folder)."""
    import torch.distributed as dist

    dist.barrier()
