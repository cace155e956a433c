"""Timing sweeper's own training and attack steps on a device: images/s, peak memory, MFU peaks.

Shared by `sweeper calibrate` (perf.calibrate) and bench/throughput.py, so both time the same
step the same way: warm-up first, the device synchronised around the timed loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sweeper.config import RuntimeConfig, TrainConfig
from sweeper.errors import SweeperError
from sweeper.models.spec import ArchSpec

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; the first
# name fragment found in torch.cuda.get_device_name() wins, so more specific names come first.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM / HBM3
    ("A100", 312.0),
)


# ---------------------------------------------------------------------------------------------
# devices and memory


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """Human name of the device: the GPU's marketing name, or the CPU and its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine() or "cpu"
    return f"CPU {cpu} ({os.cpu_count()} cores)"


def peak_bf16_tflops(name: str) -> float | None:
    """Dense bf16 peak of a known GPU; None for CPUs and unknown devices (then MFU is null)."""
    if name.startswith("CPU"):
        return None
    for fragment, peak in BF16_PEAK_TFLOPS:
        if fragment.lower() in name.lower():
            return peak
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """CUDA: max allocated since the last reset. CPU: the process's max RSS (Linux KiB)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if sys.platform.startswith("linux"):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return None


@dataclass
class Timing:
    """One timed loop: images processed after warm-up, their seconds, and peak memory."""

    images: int
    seconds: float
    peak_mem_bytes: int | None
    start: float = 0.0  # time.perf_counter() at the start (system-wide monotonic on Linux)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def time_steps(
    step: Callable[[], Any],
    *,
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    ready: Callable[[], Any] | None = None,
) -> Timing:
    """Run `warmup` untimed steps, then time `steps` with the device synchronised around them.

    `ready` is called between the two (the packing benchmark waits at a barrier there).
    """
    for _ in range(warmup):
        step()
    sync(device)
    reset_peak_memory(device)
    if ready is not None:
        ready()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    return Timing(batch_size * steps, seconds, peak_memory_bytes(device), start)


@contextlib.contextmanager
def timing_settings(device: torch.device, *, quick: bool) -> Iterator[None]:
    """cuDNN autotuning on, as a trial runs (sweeper.trial.seed_everything); quick CPU runs on one
    thread (CI machines are shared; tiny nets gain nothing from more). Restored on exit."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if quick and device.type == "cpu":
        torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


# ---------------------------------------------------------------------------------------------
# sweeper's own loop: data on the device as uint8, batched augmentation, sweeper.training's step


def random_uint8_images(n: int, *, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Random uint8 CIFAR-shaped images: throughput does not depend on the pixels."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)


def sweeper_timing(
    spec: ArchSpec,
    method: str,
    runtime: RuntimeConfig,
    *,
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    ready: Callable[[], Any] | None = None,
    data_parallel: bool = False,
) -> Timing:
    """Images/s of what a trial runs: `method` "trades" / "pgd" / ... is sweeper.training's
    10-step training step fed by sweeper.data.train_batches from uint8 data on the device;
    "pgd20-eval" is sweeper.attacks.pgd (20 steps of 0.8/255 in 8/255) plus the final forward,
    in fp32 unless runtime.eval_fp32 is off.

    data_parallel (inside a process group, see data_parallel_timing): the training step of a
    multi-worker trial, DDP on this worker's slice of every global batch of `batch_size`; the
    images counted are the global batches'."""
    from sweeper import distributed
    from sweeper.data import train_batches
    from sweeper.models import build
    from sweeper.training import prepare_model

    torch.manual_seed(0)
    module = build(spec)
    model = prepare_model(module, runtime, device)  # channels_last / torch.compile on CUDA
    n = batch_size * (steps + warmup)
    x = random_uint8_images(n, device=device)
    y = torch.randint(0, spec.num_classes, (n,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    batches = train_batches(x, y, batch_size, augment=method != "pgd20-eval", generator=generator)
    if data_parallel:
        if method == "pgd20-eval":
            raise ValueError("evaluation shards points without DDP: time it on one worker")
        batches = distributed.local_slices(batches)
        model = distributed.data_parallel(model, device)
    outputs: list[torch.Tensor] = []  # kept on the device: no per-step synchronisation
    if method == "pgd20-eval":
        step = _eval_step(module, model, batches, outputs, runtime, device)
    else:
        step = _train_step(method, module, model, batches, outputs, runtime, device,
                           batch_size=batch_size, total_steps=n // batch_size,
                           generator=generator)  # fmt: skip
    timing = time_steps(
        step, batch_size=batch_size, steps=steps, warmup=warmup, device=device, ready=ready
    )
    if not all(math.isfinite(float(v)) for v in outputs):
        raise SweeperError(f"non-finite loss while timing {method} on {device}")
    return timing


def _eval_step(module: torch.nn.Module, model: Any, batches: Iterator[Any],
               outputs: list[torch.Tensor], runtime: RuntimeConfig,
               device: torch.device) -> Callable[[], None]:  # fmt: skip
    """One evaluation batch: PGD-20 (0.8/255 steps in 8/255) and the final forward."""
    from sweeper.attacks import pgd
    from sweeper.training import autocast

    module.eval()
    bf16 = runtime.bf16 and not runtime.eval_fp32

    def step() -> None:
        xb, yb = next(batches)
        with autocast(device, bf16):
            x_adv = pgd(model, xb, yb, eps=8 / 255, step_size=0.8 / 255, steps=20)
            with torch.no_grad():
                outputs.append((model(x_adv).argmax(1) == yb).sum())

    return step


def _train_step(method: str, module: torch.nn.Module, model: Any, batches: Iterator[Any],
                outputs: list[torch.Tensor], runtime: RuntimeConfig, device: torch.device, *,
                batch_size: int, total_steps: int,
                generator: torch.Generator) -> Callable[[], None]:  # fmt: skip
    """One training batch: sweeper.training's step of `method` with a 10-step attack."""
    from sweeper.training import build_optimizer, build_scheduler, make_step

    train = TrainConfig(method=method, steps=10, batch_size=batch_size)
    optimizer = build_optimizer(module, train, device)
    step_fn = make_step(
        model,
        optimizer,
        train,
        scheduler=build_scheduler(optimizer, train, total_steps),
        generator=generator,
        bf16=runtime.bf16,
        channels_last=runtime.channels_last,
    )

    def step() -> None:
        outputs.append(step_fn(*next(batches))[0])

    return step


# ---------------------------------------------------------------------------------------------
# several workers: the training step of a multi-worker trial


def data_parallel_timing(
    spec: ArchSpec,
    method: str,
    runtime: RuntimeConfig,
    *,
    workers: int,
    batch_size: int,
    steps: int,
    warmup: int,
    device_type: str,
    timeout_s: float = 1800,
) -> Timing:
    """Images/s of a `workers`-worker trial's training step on this machine: one process per
    worker (one GPU each, NCCL; or gloo on CPU cores), DDP on batch_size / workers of every
    global batch, as a trial on Ray Train workers trains. workers=1 still wraps DDP: on a GPU,
    a real NCCL run that shows the wrapper's own cost. Rank 0's timing of the global batches."""
    import multiprocessing as mp
    import queue
    import socket

    if batch_size % workers:
        raise SweeperError(f"--batch-size {batch_size} does not split over {workers} workers")
    if device_type == "cuda" and workers > torch.cuda.device_count():
        raise SweeperError(
            f"{workers} workers need {workers} GPUs; this machine has {torch.cuda.device_count()}"
        )
    with socket.socket() as sock:  # a free port for the process group's rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    results = ctx.Queue()
    job = {"spec": spec.model_dump(mode="json"), "method": method,
           "runtime": runtime.model_dump(mode="json"), "batch_size": batch_size, "steps": steps,
           "warmup": warmup, "device_type": device_type, "port": port,
           "workers": workers}  # fmt: skip
    procs = [ctx.Process(target=_dp_worker, args=(rank, job, results)) for rank in range(workers)]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:  # poll, so a crashed worker fails the timing instead of hanging it
            try:
                outcome = results.get(timeout=5)
                break
            except queue.Empty:
                failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    raise SweeperError(
                        f"a data-parallel timing worker failed (exit codes {failed})"
                    ) from None
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    if isinstance(outcome, str):
        raise SweeperError(f"data-parallel timing: {outcome}")
    return Timing(**outcome)


def _dp_worker(rank: int, job: dict[str, Any], results: Any) -> None:
    """One worker of data_parallel_timing: join the process group, time, report (rank 0)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(job["port"]))
    if job["device_type"] == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # as a trial runs
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # CPU workers are for checks, not speed: no thread contention
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=job["workers"])
    try:
        timing = sweeper_timing(
            ArchSpec(**job["spec"]), job["method"], RuntimeConfig(**job["runtime"]),
            batch_size=job["batch_size"], steps=job["steps"], warmup=job["warmup"],
            device=device, ready=dist.barrier, data_parallel=True,
        )  # fmt: skip
        if rank == 0:
            results.put(dataclasses.asdict(timing))
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises it
        if rank == 0:
            results.put(f"{type(err).__name__}: {err}")
        raise
    finally:
        dist.destroy_process_group()
