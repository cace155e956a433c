"""One trained network as one self-contained file: its architecture and its weights.

    {"format": "sweeper.model/1", "arch": {ArchSpec fields}, "state_dict": {...},
     "trial_id": ..., "config": "<the trial's full config JSON>", "metrics": {...}}

(`load_model` gives the config as a dict: `TrialConfig.model_validate(info["config"])`.)

Only plain containers, strings, numbers and tensors, so `torch.load(path,
weights_only=True)` reads it without unpickling code. Rebuilding needs only the model
builder, not the sweep machinery:

    blob = torch.load("model.pt", weights_only=True)
    model = sweeper.models.build(sweeper.models.ArchSpec(**blob["arch"]))
    model.load_state_dict(blob["state_dict"])     # input: float NCHW in [0, 1]

which is what `load_model` does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweeper.models.network import build
from sweeper.models.spec import ArchSpec

FORMAT = "sweeper.model/1"


def save_model(path: str | Path, spec: ArchSpec, state_dict: dict[str, Any], **info: Any) -> Path:
    """Write `spec` and `state_dict` (plus plain `info`: trial_id, config, metrics) to `path`."""
    path = Path(path)
    blob = {
        "format": FORMAT,
        "arch": spec.model_dump(mode="json"),
        "state_dict": state_dict,
        **info,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a file written by `save_model` (in eval mode, on the CPU) and the
    file's other entries (trial_id, config as a dict, metrics, ...)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sweeper model file (expected format {FORMAT})")
    model = build(ArchSpec(**blob["arch"]))
    model.load_state_dict(blob["state_dict"])
    info = {k: v for k, v in blob.items() if k not in ("format", "arch", "state_dict")}
    if isinstance(info.get("config"), str):  # stored as the row's JSON text: given as a dict
        info["config"] = json.loads(info["config"])
    return model.eval(), info
