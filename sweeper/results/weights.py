"""Trained networks in the results store, next to their rows.

    RESULTS/_state/<sweep>/_weights/<trial_id>/final.pt  the weights at the end of training
    RESULTS/_state/<sweep>/_weights/<trial_id>/best.pt   the best epoch's (eval.checkpoint: best)

Each file is a plain state dict of CPU tensors (`torch.load(path, weights_only=True)`).
A row's `weights` column names the file its metrics were measured on, relative to the
sweep's state folder (sweeper.results.layout), so a sweep's two folders can be copied or
moved together. The files
are stored before the row is written: a row never names a file that is not there.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.results.layout import state_dir
from sweeper.results.rows import location, write_atomic

WEIGHTS_DIR = "_weights"


def store_weights(sweep_uri: str, trial_id: str, evaluated: str | Path) -> str:
    """Copy every weights file in the local folder of `evaluated` to
    <state folder>/_weights/<trial_id>/ and return the path of `evaluated` there, relative
    to the state folder (the value of the row's `weights` column)."""
    source = Path(evaluated)
    fs, base = location(state_dir(sweep_uri))
    for file in sorted(source.parent.glob("*.pt")):
        data = file.read_bytes()
        write_atomic(fs, f"{base}/{WEIGHTS_DIR}/{trial_id}/{file.name}",
                     lambda stream, data=data: stream.write(data))  # fmt: skip
    return f"{WEIGHTS_DIR}/{trial_id}/{source.name}"


def stored_weights(sweep_uri: str, trial_id: str, checkpoint: str) -> str | None:
    """The `weights` value naming a trial's stored file (best.pt for eval.checkpoint best
    when stored, else final.pt); None when the store holds none for it."""
    import pyarrow.fs as pafs

    fs, base = location(state_dir(sweep_uri))
    for name in ("best.pt", "final.pt") if checkpoint == "best" else ("final.pt",):
        relative = f"{WEIGHTS_DIR}/{trial_id}/{name}"
        try:
            if fs.get_file_info(f"{base}/{relative}").type == pafs.FileType.File:
                return relative
        except OSError:
            return None
    return None


def weights_uri(sweep_uri: str, relative: str) -> str:
    """Where a row's `weights` value points, below the sweep's state folder."""
    if relative.startswith("/") or "://" in relative or ".." in relative.split("/"):
        return relative  # written by hand or by `sweeper trial`: taken as it is
    return f"{state_dir(sweep_uri)}/{relative}"


def load_weights(sweep_uri: str, relative: str) -> dict[str, Any]:
    """The state dict a row's `weights` names, read from any pyarrow filesystem."""
    import torch

    uri = weights_uri(sweep_uri, relative)
    fs, path = location(uri)
    try:
        with fs.open_input_file(path) as handle:
            blob = handle.read()
    except OSError as err:
        raise SweeperError(f"{uri}: cannot read the weights ({err})") from None
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file: one line naming it
        raise SweeperError(f"{uri}: not a readable state dict ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise SweeperError(f"{uri}: expected a state dict, got {type(state).__name__}")
    return state
