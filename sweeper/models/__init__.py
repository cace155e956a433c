"""The shared model builder: every network of the study from one validated ArchSpec.

build(spec) -> nn.Module               input: float NCHW images in [0, 1]
count_params(spec | module) -> int
count_macs(spec, image_size=32) -> int multiply-accumulates of one image (convs + linears)
match_width(spec, target_macs) -> ArchSpec
robust_scaling(target_gmacs, depth_share=0.7, block="basic", **overrides) -> ArchSpec
save_model(path, spec, state_dict, **info); load_model(path) -> (nn.Module, info)

Names are imported on first use (PEP 562): `from sweeper.models.spec import ArchSpec`
(config.py) must not import torch, so that a bad search space is refused in a fraction of
a second; the builder's modules import it.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ACTIVATIONS": "registry",
    "BLOCKS": "registry",
    "NORMS": "registry",
    "PRESETS": "presets",
    "ArchSpec": "spec",
    "build": "network",
    "count_macs": "measure",
    "count_params": "measure",
    "describe": "measure",
    "load_model": "saved",
    "match_width": "measure",
    "resolve_arch": "presets",
    "robust_scaling": "measure",
    "save_model": "saved",
    "split_depths": "measure",
    "split_widths": "measure",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'sweeper.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sweeper.models.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
