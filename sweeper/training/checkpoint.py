"""Per-epoch checkpoints that a resumed run continues bit-for-bit (on a deterministic device).

Only tensors and plain containers are saved, so loading works with `weights_only=True`
(no unpickling of arbitrary objects). Besides model, optimizer, scheduler and EMA, a
checkpoint holds the state of every random generator the loop draws from (data order and
augmentation, attack starts, torch's global CPU/CUDA generators): restoring them makes
epoch N+1 of a resumed run draw exactly what the uninterrupted run drew.

With eval.checkpoint=best the weights of the best epoch so far lie beside last.pt as
`best-epoch<E>.pt`. A new best is written (atomically) before the last.pt that records it,
and older best files are removed only after, so a kill at any point leaves a last.pt whose
history names a best epoch whose file is there.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from sweeper.errors import first_line, storage_error

CHECKPOINT_NAME = "last.pt"
BEST_PREFIX = "best-epoch"


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """The state of the named generators plus torch's global CPU and CUDA generators."""
    state: dict[str, Any] = {name: g.get_state() for name, g in generators.items()}
    state["torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generators: dict[str, torch.Generator], state: dict[str, Any]) -> None:
    for name, g in generators.items():
        g.set_state(state[name])
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def save_atomic(directory: str | Path, name: str, state: dict[str, Any]) -> Path:
    """torch.save `state` as `directory/name` through a temporary name: never a partial file.
    A full or read-only disk raises StorageError naming the file (no retry would help)."""
    directory = Path(directory)
    final = directory / name
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:  # a handle: torch's own writer loses the errno
            torch.save(state, handle)
        os.replace(tmp, final)
    except (OSError, RuntimeError) as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        fault = storage_error(err, str(final))
        if fault is None:
            raise
        raise fault from None
    return final


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `directory/last.pt` atomically: a reader (or a resume after a kill) sees the
    previous checkpoint or the new one, never a partial file."""
    return save_atomic(directory, CHECKPOINT_NAME, state)


def best_path(directory: str | Path, epoch: int) -> Path:
    return Path(directory) / f"{BEST_PREFIX}{epoch}.pt"


def save_best(directory: str | Path, epoch: int, model_state: dict[str, Any]) -> Path:
    """Write the best epoch's weights beside last.pt, atomically (see the module doc)."""
    state = {"epoch": epoch, "model": model_state}
    return save_atomic(directory, best_path(directory, epoch).name, state)


def load_best(directory: str | Path, epoch: int) -> dict[str, Any]:
    """The weights saved by save_best for `epoch` (on the CPU)."""
    path = best_path(directory, epoch)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing although {CHECKPOINT_NAME} names epoch {epoch} as the best: "
            "the checkpoint directory is damaged"
        )
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def prune_best(directory: str | Path, keep: int | None) -> None:
    """Remove every best-epoch file but the one of epoch `keep` (all of them for None)."""
    kept = best_path(directory, keep).name if keep is not None else None
    for path in Path(directory).glob(f"{BEST_PREFIX}*.pt"):
        if path.name != kept:
            path.unlink(missing_ok=True)


def checkpoint_problem(directory: str | Path) -> str | None:
    """Why a checkpoint file in `directory` (last.pt, a best-epoch file) cannot be loaded,
    e.g. truncated by a killed copy; None when all load or there are none. Memory-mapped,
    so a large checkpoint is not read twice."""
    for path in sorted(Path(directory).glob("*.pt")):
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
            return f"{path.name}: {first_line(err).split('. ')[0][:300]}"  # torch appends advice
    return None


def load_checkpoint(directory: str | Path | None) -> dict[str, Any] | None:
    """The last checkpoint in `directory`, or None when there is none.

    A damaged one is renamed `last.pt.damaged` with a warning and the trial starts from
    scratch: a truncated file must not turn a trial into a permanent failure.
    """
    if directory is None:
        return None
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        aside = path.with_name(f"{CHECKPOINT_NAME}.damaged")
        os.replace(path, aside)
        warnings.warn(f"{path} is damaged ({type(err).__name__}); moved to {aside.name}, "
                      "training starts from scratch", stacklevel=2)  # fmt: skip
        return None
