"""The shared model builder: every network of the study from one validated ArchSpec.

build(spec) -> nn.Module               input: float NCHW images in [0, 1]
count_params(spec | module) -> int
count_macs(spec, image_size=32) -> int multiply-accumulates of one image (convs + linears)
match_width(spec, target_macs) -> ArchSpec
robust_scaling(target_gmacs, depth_share=0.7, block="basic", **overrides) -> ArchSpec
save_model(path, spec, state_dict, **info); load_model(path) -> (nn.Module, info)
"""

from sweeper.models import blocks as _blocks  # noqa: F401  (fills BLOCKS)
from sweeper.models import layers as _layers  # noqa: F401  (fills ACTIVATIONS, NORMS)
from sweeper.models.measure import (
    count_macs,
    count_params,
    describe,
    match_width,
    robust_scaling,
    split_depths,
    split_widths,
)
from sweeper.models.network import build
from sweeper.models.presets import PRESETS, resolve_arch
from sweeper.models.registry import ACTIVATIONS, BLOCKS, NORMS
from sweeper.models.saved import load_model, save_model
from sweeper.models.spec import ArchSpec

__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "NORMS",
    "PRESETS",
    "ArchSpec",
    "build",
    "count_macs",
    "count_params",
    "describe",
    "load_model",
    "match_width",
    "resolve_arch",
    "robust_scaling",
    "save_model",
    "split_depths",
    "split_widths",
]
