"""Cross-field checks of an ArchSpec: names in registries, channel divisibility.

Divisibility is checked by building the first two blocks of each stage on the `meta`
device (no memory, no compute), so the check can never disagree with the builder; the
blocks raise ValueErrors that name the offending field.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from sweeper.models.registry import ACTIVATIONS, BLOCKS, NORMS
from sweeper.models.stages import block_options, stage_plan

if TYPE_CHECKING:
    from sweeper.models.spec import ArchSpec

# 7x WRN-70-16 (267 M), the largest CIFAR network of the robustness literature; its fp32
# weights alone take 8 GB, its optimizer state as much again.
MAX_PARAMS = 2_000_000_000


def _names(spec: ArchSpec) -> list[str]:
    problems = []
    if spec.block not in BLOCKS:
        problems.append(f"block: unknown block {spec.block!r}; choose from: {', '.join(BLOCKS)}")
    for field, registry in (("activation", ACTIVATIONS), ("norm", NORMS)):
        unknown = sorted({name for name in getattr(spec, field) if name not in registry})
        if unknown:
            problems.append(
                f"{field}: unknown {registry.kind} {', '.join(map(repr, unknown))}; "
                f"choose from: {', '.join(registry)}"
            )
    for field in ("input_mean", "input_std"):
        values = getattr(spec, field)
        if values is not None and len(values) != spec.in_channels:
            problems.append(
                f"{field}: expected {spec.in_channels} values (one per input channel), "
                f"got {len(values)}"
            )
    if (spec.input_mean is None) != (spec.input_std is None):
        problems.append("input_mean, input_std: give both or neither")
    if spec.input_std is not None and any(s <= 0 for s in spec.input_std):
        problems.append("input_std: every value must be positive")
    return problems


@functools.lru_cache(maxsize=256)
def _channels(spec: ArchSpec) -> tuple[str, ...]:
    """Channel divisibility, and the blocks' parameter count against MAX_PARAMS (the blocks
    after the first two of a stage repeat the second). Remembered per spec (frozen, hashable):
    building the blocks takes tens of ms, and a sweep's driver validates each trial's config
    several times, most of them sharing one architecture."""
    block = BLOCKS.get(spec.block)
    params = 0
    with torch.device("meta"):
        for i, stage in enumerate(stage_plan(spec)):
            for j, (in_ch, planes, stride) in enumerate(stage[:2]):
                try:
                    module = block(in_ch, planes, stride=stride, **block_options(spec, i))
                except ValueError as err:
                    return (f"{err} (stage {i + 1})",)  # the first is enough to act on
                size = sum(p.numel() for p in module.parameters())
                params += size * (1 if j == 0 else len(stage) - 1)
    if params > MAX_PARAMS:
        return (
            f"depths, widths: {params / 1e9:,.1f} billion parameters in the blocks, more than "
            f"the {MAX_PARAMS / 1e9:g} billion any network of a sweep may have",
        )
    return ()


def check_spec(spec: ArchSpec) -> None:
    """Raise one ValueError listing every problem, each naming its field."""
    problems = _names(spec)
    if not problems:
        problems = list(_channels(spec))
    if problems:
        raise ValueError("; ".join(problems))
