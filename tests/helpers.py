"""Shared test helpers: a tiny CNN and a few seconds of clean training on synthetic data.

Pure torch, independent of sweeper.models, so data / attack / training tests do not depend on
the model zoo. Import from tests as `from helpers import tiny_cnn, trained_tiny` (pytest puts
tests/ on sys.path: rootdir-relative imports, no package needed).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sweeper.config import DataConfig
from sweeper.data import Dataset, load_dataset, train_batches


def tiny_cnn(num_classes: int = 10, channels: int = 3, width: int = 16) -> nn.Module:
    """Three convs with BatchNorm (so train / eval mode matters) and a linear head.

    Input float [0, 1] NCHW of any size >= 4x4; a few thousand parameters.
    """
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


def synthetic_config(**overrides: object) -> DataConfig:
    """A small synthetic DataConfig (16x16 images, 1500 train / 300 test, 100 holdout)."""
    fields: dict[str, object] = dict(
        dataset="synthetic",
        image_size=16,
        synthetic_train=1500,
        synthetic_test=300,
        holdout_size=100,
        augment=False,
    )
    fields.update(overrides)
    return DataConfig(**fields)  # type: ignore[arg-type]


def train_clean(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> nn.Module:
    """Plain cross-entropy training with Adam: quick, no adversary, model left in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator(device=data.train_x.device).manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for xb, yb in train_batches(
            data.train_x, data.train_y, batch_size, augment=False, generator=gen
        ):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model.eval()


@functools.lru_cache(maxsize=1)
def trained_tiny(seed: int = 0) -> tuple[nn.Module, Dataset]:
    """A tiny CNN trained (clean) on `synthetic_config()`; cached per process.

    Treat the returned model as read-only (tests that train or change it should build their own).
    """
    data = load_dataset(synthetic_config(), data_dir=None, device="cpu", seed=seed)
    torch.manual_seed(seed)
    model = train_clean(tiny_cnn(data.num_classes), data, seed=seed)
    for p in model.parameters():
        p.requires_grad_(False)  # attacks need input gradients only
    return model, data


@contextlib.contextmanager
def marked_env() -> Iterator[dict[str, str]]:
    """An environment for subprocesses; on exit, whatever they left running (Ray's processes
    outlive a killed driver) is killed: exactly the processes started with it, by pid."""
    marker = f"{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "SWEEPER_TEST_MARK": marker}
    try:
        yield env
    finally:
        for pid in processes_marked(f"SWEEPER_TEST_MARK={marker}"):
            if pid != os.getpid():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], *, timeout_s: float,
              waiting_for: str) -> None:  # fmt: skip
    """SIGKILL `process` as soon as ready() holds (polled every 50 ms). `timeout_s` only
    guards against a hang: beside two CPU burners, with the suite's second process busy, a
    two-worker trial took over 300 s to reach its second epoch (2026-12-06, its workers at
    Ray's nice 15; conftest now starts them at 0)."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert process.poll() is None, f"the driver ended before {waiting_for}"
        assert time.monotonic() < deadline, f"no {waiting_for} after {timeout_s:.0f}s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def processes_marked(marker: str) -> list[int]:
    """Pids of processes whose environment carries `marker` (the ones a test started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


TINY_SPACE = """
sweep: {name}
base:
  arch: {{block: basic, depths: [1, 1, 1], widths: [0.25, 0.25, 0.25]}}
  data: {{dataset: synthetic, image_size: 8, synthetic_train: {train}, synthetic_test: 32,
         holdout_size: 16}}
  train: {{method: clean, epochs: 1, batch_size: 32}}
  eval: {{pgd_steps: 1, cw_steps: 1, aa_size: 0, batch_size: 32}}
"""


def tiny_space(name: str, body: str = "", *, train: int = 64) -> str:
    """A search space of seconds-long trials (synthetic 8x8 data, one epoch); `body` adds
    axes etc. below the base."""
    return TINY_SPACE.format(name=name, train=train) + body


def dead_pid() -> int:
    """The pid of a process that has ended (a lease or scratch folder's gone owner)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def log_dir(prefix: str) -> str:
    """A folder for what Ray workers of a test module log (a fixed path: they capture it by
    value), removed when the test session ends."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def checkpoint_folders(root: Path, pattern: str = "checkpoint_*") -> list[Path]:
    """Ray's checkpoint folders under `root` matching `pattern`, oldest epoch first.

    A bare glob is a trap: Ray Train keeps `checkpoint_manager_snapshot.json` beside its
    `checkpoint_000002` folders, and it sorts after them. sweeper.sweep.checkpoints decides
    what a checkpoint is (tests must not start Ray to use it: it imports no Ray)."""
    from sweeper.sweep.checkpoints import CHECKPOINT_FOLDER

    found = [p for p in root.glob(pattern) if p.is_dir() and CHECKPOINT_FOLDER.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.rsplit("_", 1)[1]))
