"""One trial on several data-parallel workers: the torch.distributed side (no Ray).

A multi-worker trial (runtime.workers > 1) runs the same `run_trial` on every worker, inside a
process group that Ray Train sets up (sweeper.sweep.workers: NCCL on GPUs, gloo on CPUs). What
the workers share, and why:

- The global batch. train.batch_size is the global batch, as in the reference
  (main_dist.py: batch_size // world_size per GPU). Every worker draws the same global batch
  and its augmentation (one data generator, seeded alike everywhere) and trains on its
  contiguous 1/N slice, so the sequence of global batches is the same for every N, and a run
  with N workers is reproducible for that N.
- Gradients. DDP averages the workers' gradients of their slice-mean losses: the gradient of
  the global-batch mean. The builder creates no parameter without a gradient, so DDP runs
  without find_unused_parameters (the reference needs it, and pays a graph traversal per step).
- Batch norm normalises per worker (no SyncBN), and buffers are not broadcast at every forward
  (the reference's broadcast_buffers=False). At the end of every epoch the running statistics
  are averaged over the workers, so all of them hold the same model to check, checkpoint and
  evaluate (the reference evaluates each GPU's own statistics).
- Attack random starts come from a generator per worker, reseeded per (seed, epoch, rank):
  a resumed run draws what the uninterrupted one drew, whatever the checkpoint's worker count.
- Evaluation: each worker scores a contiguous shard of the points; the correct counts are
  summed, so accuracies are exact (the reference's DistributedSampler pads the test set).

Without a process group (or with one member) every helper here is the identity, so the
one-worker path runs exactly as it always did.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn


def rank_and_world() -> tuple[int, int]:
    """(this worker's rank, number of workers); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on the worker that writes checkpoints and the row (rank 0), and when alone."""
    return rank_and_world()[0] == 0


def shard(n: int) -> slice:
    """This worker's contiguous share of n points (sizes differ by at most one)."""
    rank, world = rank_and_world()
    return slice(n * rank // world, n * (rank + 1) // world)


def all_sum(t: Tensor) -> Tensor:
    """Sum `t` over the workers, in place; `t` itself when alone."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(t)
    return t


def local_slices(
    batches: Iterator[tuple[Tensor, Tensor]],
) -> Iterator[tuple[Tensor, Tensor]]:
    """This worker's slice of every global batch (the batch size divides by the workers:
    sweeper.config checks it).

    Each worker gathers, augments and converts the whole global batch before slicing: a few
    memory-bound kernels over B small uint8 images, next to the 2k + 7 forward passes of a
    TRADES-k step on its B / N slice, and the price of a batch sequence that does not depend on N.
    """
    rank, world = rank_and_world()
    for x, y in batches:
        size = x.shape[0] // world
        yield x[rank * size : (rank + 1) * size], y[rank * size : (rank + 1) * size]


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel: gradients averaged over the workers during
    backward, batch-norm buffers left alone at every forward (see the module docstring).

    Call it with any process group, even of one worker (bench/: a one-GPU NCCL run).
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    options: dict[str, object] = {"gradient_as_bucket_view": True}
    if device.type == "cuda":
        options["device_ids"] = [device]
    # torch 2.13 renamed broadcast_buffers (still accepted, with a warning) to
    # forward_sync_buffers; both leave the buffers to each worker after the initial sync.
    if "forward_sync_buffers" in inspect.signature(DDP).parameters:
        options["forward_sync_buffers"] = False
    else:
        options["broadcast_buffers"] = False
    return DDP(module, **options)


def average_norm_statistics(*modules: nn.Module) -> None:
    """Average the running mean and variance of every batch norm over the workers."""
    world = rank_and_world()[1]
    if world == 1:
        return
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
                for stat in (m.running_mean, m.running_var):
                    dist.all_reduce(stat)
                    stat.div_(world)


def check_replicas_agree(module: nn.Module, *, what: str) -> None:
    """Raise when the workers' parameters differ: a gradient that bypassed DDP would let the
    replicas drift apart silently. One checksum per worker, compared once an epoch."""
    if rank_and_world()[1] == 1:
        return
    with torch.no_grad():
        total = torch.stack([p.double().sum() for p in module.parameters()]).sum()
    spread = torch.stack([total, -total])
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    high, low = spread[0].item(), -spread[1].item()
    if high - low > 1e-9 * max(1.0, abs(high)):
        raise RuntimeError(f"{what}: the workers' parameters differ (checksums {low} .. {high})")


def stream_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed of its own for each (trial seed, epoch, rank): SeedSequence spreads them."""
    entropy = [seed & (2**64 - 1), epoch, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
