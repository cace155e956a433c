"""Per-epoch checkpoints that a resumed run continues bit-for-bit (on a deterministic device).

Only tensors and plain containers are saved, so loading works with `weights_only=True`
(no unpickling of arbitrary objects). Besides model, optimizer, scheduler and EMA, a
checkpoint holds the state of every random generator the loop draws from (data order and
augmentation, attack starts, torch's global CPU/CUDA generators): restoring them makes
epoch N+1 of a resumed run draw exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "last.pt"


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


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `directory/last.pt` atomically: a reader (or a resume after a kill) sees the
    previous checkpoint or the new one, never a partial file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / CHECKPOINT_NAME
    tmp = directory / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, final)
    return final


def checkpoint_problem(directory: str | Path) -> str | None:
    """Why `directory/last.pt` cannot be loaded (e.g. truncated by a killed copy), or None
    when it loads or is absent. Memory-mapped, so a large checkpoint is not read twice."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return first.split(". ")[0][:300]  # torch appends paragraphs of advice
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
