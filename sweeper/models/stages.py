"""The block layout of a network: every block's (in_channels, planes, stride) and options.

Read from an ArchSpec's fields only, so both the spec's own checks and the builder use it
without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sweeper.models import blocks as _blocks  # noqa: F401  (fills BLOCKS)
from sweeper.models.registry import BLOCKS

if TYPE_CHECKING:
    from sweeper.models.spec import ArchSpec

STAGE_STRIDES = (1, 2, 2)


def block_options(spec: ArchSpec, stage: int) -> dict[str, Any]:
    """The keyword options every block of `stage` (0-based) is built with."""
    return {
        "kernel_size": spec.kernel_size[stage],
        "act": spec.activation[stage],
        "norm": spec.norm[stage],
        "order": spec.activation_order,
        "conv_type": spec.conv_type,
        "cardinality": spec.cardinality,
        "base_width": spec.base_width,
        "scales": spec.scales,
        "se": spec.se,
        "se_reduction": spec.se_reduction,
        "expansion": spec.expansion,
    }


def stage_plan(spec: ArchSpec) -> list[list[tuple[int, int, int]]]:
    """(in_channels, planes, stride) of every block, stage by stage."""
    block = BLOCKS.get(spec.block)
    plan: list[list[tuple[int, int, int]]] = []
    in_ch = spec.stem_channels
    for planes, depth, stride in zip(spec.stage_planes(), spec.depths, STAGE_STRIDES):
        stage = []
        for j in range(depth):
            stage.append((in_ch, planes, stride if j == 0 else 1))
            in_ch = block.out_channels(planes, spec.expansion)
        plan.append(stage)
    return plan


def out_features(spec: ArchSpec) -> int:
    return BLOCKS.get(spec.block).out_channels(spec.stage_planes()[2], spec.expansion)
