"""Timing sweeper's own training and attack steps on a device: images/s, peak memory, MFU peaks.

Shared by `sweeper calibrate` (sweeper.calibrate) and bench/throughput.py, so both time the same
step the same way: warm-up first, the device synchronised around the timed loop.
"""

from __future__ import annotations

import contextlib
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
) -> Timing:
    """Images/s of what a trial runs: `method` "trades" / "pgd" / ... is sweeper.training's
    10-step training step fed by sweeper.data.train_batches from uint8 data on the device;
    "pgd20-eval" is sweeper.attacks.pgd (20 steps of 0.8/255 in 8/255) plus the final forward,
    in fp32 unless runtime.eval_fp32 is off."""
    from sweeper.attacks import pgd
    from sweeper.data import train_batches
    from sweeper.models import build
    from sweeper.training import (
        autocast,
        build_optimizer,
        build_scheduler,
        make_step,
        prepare_model,
    )

    torch.manual_seed(0)
    module = build(spec)
    model = prepare_model(module, runtime, device)  # channels_last / torch.compile on CUDA
    n = batch_size * (steps + warmup)
    x = random_uint8_images(n, device=device)
    y = torch.randint(0, spec.num_classes, (n,), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    batches = train_batches(x, y, batch_size, augment=method != "pgd20-eval", generator=generator)
    outputs: list[torch.Tensor] = []  # kept on the device: no per-step synchronisation
    if method == "pgd20-eval":
        module.eval()
        bf16 = runtime.bf16 and not runtime.eval_fp32

        def step() -> None:
            xb, yb = next(batches)
            with autocast(device, bf16):
                x_adv = pgd(model, xb, yb, eps=8 / 255, step_size=0.8 / 255, steps=20)
                with torch.no_grad():
                    outputs.append((model(x_adv).argmax(1) == yb).sum())

    else:
        train = TrainConfig(method=method, steps=10, batch_size=batch_size)
        optimizer = build_optimizer(module, train, device)
        step_fn = make_step(
            model,
            optimizer,
            train,
            scheduler=build_scheduler(optimizer, train, n // batch_size),
            generator=generator,
            bf16=runtime.bf16,
            channels_last=runtime.channels_last,
        )

        def step() -> None:
            outputs.append(step_fn(*next(batches))[0])

    timing = time_steps(
        step, batch_size=batch_size, steps=steps, warmup=warmup, device=device, ready=ready
    )
    if not all(math.isfinite(float(v)) for v in outputs):
        raise SweeperError(f"non-finite loss while timing {method} on {device}")
    return timing
