"""Sizes of a network (params, MACs) and the width/depth choices made from them.

Costs are tallied block by block on the `meta` device: all blocks of a stage after the
first are identical, so a 70-block network costs six block builds, and nothing is ever
allocated. MACs are multiply-accumulates of one image over convs and linears
(FlopCounterMode reports FLOPs = 2 * MACs).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sweeper.models.network import make_head, make_stem
from sweeper.models.registry import BLOCKS
from sweeper.models.spec import ArchSpec
from sweeper.models.stages import block_options, out_features, stage_plan

_STAGE_BASE = (16, 32, 64)  # planes = base * widening factor


def _cost(module: nn.Module, x: torch.Tensor) -> tuple[int, int, torch.Tensor]:
    """(params, MACs, output) of one module on one meta input."""
    with FlopCounterMode(display=False) as counter:
        y = module(x)
    params = sum(p.numel() for p in module.parameters())
    return params, counter.get_total_flops() // 2, y


@functools.lru_cache(maxsize=4096)
def _block_cost(
    block: str, in_ch: int, planes: int, stride: int, size: int, opts: tuple[tuple[str, Any], ...]
) -> tuple[int, int, int]:
    """(params, MACs, output size) of one block at one input size."""
    with torch.device("meta"):
        module = BLOCKS.get(block)(in_ch, planes, stride=stride, **dict(opts))
        params, macs, y = _cost(module, torch.empty(1, in_ch, size, size))
    return params, macs, int(y.shape[-1])


@functools.lru_cache(maxsize=1024)
def _tally(spec: ArchSpec, image_size: int) -> tuple[int, int]:
    """(params, MACs) of the whole network, one image of image_size x image_size."""
    with torch.device("meta"):
        params, macs, y = _cost(
            make_stem(spec), torch.empty(1, spec.in_channels, image_size, image_size)
        )
    size = int(y.shape[-1])
    for i, stage in enumerate(stage_plan(spec)):
        opts = tuple(sorted(block_options(spec, i).items()))
        first = _block_cost(spec.block, *stage[0], size, opts)
        params, macs, size = params + first[0], macs + first[1], first[2]
        if len(stage) > 1:
            rest = _block_cost(spec.block, *stage[1], size, opts)
            params += rest[0] * (len(stage) - 1)
            macs += rest[1] * (len(stage) - 1)
    features = out_features(spec)
    with torch.device("meta"):
        head_params = sum(p.numel() for p in make_head(spec, features).parameters())
    fc = features * spec.num_classes
    return params + head_params + fc + spec.num_classes, macs + fc


def count_params(spec_or_module: ArchSpec | nn.Module) -> int:
    """Number of parameters (buffers such as norm statistics not included)."""
    if isinstance(spec_or_module, nn.Module):
        return sum(p.numel() for p in spec_or_module.parameters())
    return _tally(spec_or_module, 32)[0]


def count_macs(spec: ArchSpec, image_size: int = 32) -> int:
    """Multiply-accumulates of one image_size x image_size image (convs and linears)."""
    return _tally(spec, image_size)[1]


def _replace(spec: ArchSpec, **fields: Any) -> ArchSpec:
    """A re-validated copy (model_copy would skip validation)."""
    return ArchSpec(**{**spec.model_dump(), **fields})


def _channel_multiple(spec: ArchSpec) -> int:
    """Planes must be a multiple of this for the block's grouped / split convs to divide."""
    if spec.block not in ("basic", "inverted_bottleneck"):
        return 1  # bottleneck widths are multiples of cardinality * scales by construction
    card = spec.cardinality if spec.conv_type in ("aggregated", "both") else 1
    scales = spec.scales if spec.conv_type in ("hierarchical", "both") else 1
    return card * scales


def _scaled(spec: ArchSpec, factor: float) -> ArchSpec:
    """Widths times factor, planes snapped to the channel multiple (not re-validated)."""
    m = _channel_multiple(spec)
    widths = []
    for base, w in zip(_STAGE_BASE, spec.widths):
        planes = max(m, round(base * w * factor / m) * m)
        widths.append(round(planes / base, 6))
    return spec.model_copy(update={"widths": tuple(widths)})


def _macs_or_zero(spec: ArchSpec) -> int:
    """MACs, or 0 where the widths are too narrow to build (counts as 'below target')."""
    try:
        return count_macs(spec)
    except ValueError:
        return 0


def match_width(spec: ArchSpec, target_macs: int, *, max_steps: int = 8) -> ArchSpec:
    """Scale every widening factor by one factor so the MACs land nearest target_macs.

    MACs grow about quadratically with width, so each step rescales the factor by
    sqrt(target / MACs) (a few steps, each a handful of meta-device block builds); channel
    counts are whole numbers, so the result is the nearest seen, not exact. Planes of
    grouped basic / inverted blocks snap to multiples of cardinality * scales.
    """
    if target_macs <= 0:
        raise ValueError(f"target_macs must be positive, got {target_macs}")
    factor, best, seen = 1.0, None, set()
    for _ in range(max_steps):
        candidate = _scaled(spec, factor)
        if candidate.widths in seen:
            break  # converged (or cycling between two roundings)
        seen.add(candidate.widths)
        macs = _macs_or_zero(candidate)
        if macs and (best is None or abs(macs - target_macs) < abs(best[0] - target_macs)):
            best = (macs, candidate)
        factor *= math.sqrt(target_macs / macs) if macs else 2.0
    if best is None:
        raise ValueError(f"target_macs={target_macs}: no buildable width found")
    return _replace(best[1])


def split_depths(total: int) -> tuple[int, int, int]:
    """sum(D) split 2:2:1: D3 = floor(total / 5), the rest halved (D2 takes the odd one)."""
    d3 = total // 5
    d1 = (total - d3) // 2
    return d1, total - d3 - d1, d3


def split_widths(total: int) -> tuple[int, int, int]:
    """sum(W) split 2:2.5:1: W3 = ceil(total / 5.5), the rest 2:2.5 with W1 rounded down."""
    w3 = math.ceil(total / 5.5)
    w1 = math.floor((total - w3) * 2 / 4.5)
    return w1, total - w3 - w1, w3


def robust_scaling(
    target_gmacs: float,
    depth_share: float = 0.7,
    block: str = "basic",
    *,
    match_budget: bool = False,
    **arch_overrides: Any,
) -> ArchSpec:
    """RobustScaling: depths and widths at a MACs budget with sum(D) / (sum(D) + sum(W)) ~ share.

    For each total depth, the total width whose MACs land nearest the target is taken;
    of those pairs, the one whose depth share is nearest `depth_share` wins. Depths and
    widths are split by `split_depths` / `split_widths`. This gives the published 5G point
    exactly and the 10/20/40G points within 2 blocks and 1 widening unit in total (those
    points are not all at a 0.7 share: 10G is at 0.68).

    Whole widening factors miss the budget by up to about 15% where the widths are small
    (deep, narrow networks). match_budget=True then scales the three factors by one
    fractional factor (`match_width`, channels stay whole) to land on the budget: what a
    comparison across depth shares at one budget needs.
    """
    if not 0 < depth_share < 1:
        raise ValueError(f"depth_share must be in (0, 1), got {depth_share}")
    target = target_gmacs * 1e9
    # Validate once; the search then only swaps depths and widths (no re-validation).
    base = ArchSpec(block=block, **arch_overrides)

    def macs(sum_d: int, sum_w: int) -> int:
        widths = tuple(float(w) for w in split_widths(sum_w))
        return count_macs(base.model_copy(update={"depths": split_depths(sum_d), "widths": widths}))

    hint = [8]  # the last answer: neighbouring depths need neighbouring widths

    def width_for(sum_d: int) -> int:
        """The total width whose MACs land nearest the target at this total depth."""
        # Gallop from the hint to a bracket macs(lo) < target <= macs(hi), then bisect.
        w, step = hint[0], 1
        if macs(sum_d, w) < target:
            lo = w
            while macs(sum_d, lo + step) < target:
                lo, step = lo + step, step * 2
            hi = lo + step
        else:
            hi = w
            while hi - step >= 4 and macs(sum_d, hi - step) >= target:
                hi, step = hi - step, step * 2
            lo = max(4, hi - step)
            if macs(sum_d, lo) >= target:
                hint[0] = lo
                return lo
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if macs(sum_d, mid) < target else (lo, mid)
        hint[0] = min((lo, hi), key=lambda w: abs(math.log(macs(sum_d, w) / target)))
        return hint[0]

    def share(sum_d: int) -> float:
        return sum_d / (sum_d + width_for(sum_d))

    # The share grows with the total depth (more depth leaves less width), so bisect for
    # the first total depth at or past the wanted share, then take the nearer neighbour.
    lo_d, hi_d = 5, 5
    while share(hi_d) < depth_share and macs(hi_d, 4) < target:
        lo_d, hi_d = hi_d, hi_d * 2
    while hi_d - lo_d > 1:
        mid = (lo_d + hi_d) // 2
        lo_d, hi_d = (mid, hi_d) if share(mid) < depth_share else (lo_d, mid)
    sum_d = min((lo_d, hi_d), key=lambda d: abs(share(d) - depth_share))
    sum_w = width_for(sum_d)
    spec = _replace(base, depths=split_depths(sum_d), widths=split_widths(sum_w))
    return match_width(spec, round(target)) if match_budget else spec


def describe(spec: ArchSpec) -> dict[str, Any]:
    """The spec's fields plus its size, for display and JSON."""
    return {**spec.model_dump(mode="json"), "params": count_params(spec), "macs": count_macs(spec)}
