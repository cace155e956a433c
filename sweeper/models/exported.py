"""A trained network as a `torch.export` program (.pt2): it loads and runs with torch alone,
`torch.export.load(path).module()`, without sweeper or its builder installed."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def save_program(path: str | Path, model: nn.Module, *, in_channels: int,
                 image_size: int) -> Path:  # fmt: skip
    """Trace `model` (eval mode) on a float NCHW batch in [0, 1] of any size and write the
    program to `path` atomically."""
    model = model.eval()
    example = torch.rand(2, in_channels, image_size, image_size)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.export.save(program, tmp)
    os.replace(tmp, path)
    return path
