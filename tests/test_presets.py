"""The preset table of the spec, reproduced; RobustScaling's published points."""

from __future__ import annotations

import pytest
import torch

from sweeper.models import (
    PRESETS,
    ArchSpec,
    build,
    count_macs,
    count_params,
    resolve_arch,
    robust_scaling,
    split_depths,
    split_widths,
)

# preset: (block, D, W, params as reported, GMACs as reported) - model-family.md
TABLE = {
    "wrn-28-10": ("basic", (4, 4, 4), (10, 10, 10), "36.5M", 5.24),
    "wrn-34-10": ("basic", (5, 5, 5), (10, 10, 10), "46.2M", 6.66),
    "wrn-70-16": ("basic", (11, 11, 11), (16, 16, 16), "267M", 38.8),
    "wrn-a1": ("basic", (14, 14, 7), (5, 7, 3), "18.7M", 5.08),
    "wrn-a4": ("basic", (27, 28, 13), (10, 14, 6), "147M", 40.4),
    "robustresnet-a1": ("robust", (14, 14, 7), (5, 7, 3), "19.2M", 5.08),
    "robustresnet-a2": ("robust", (17, 17, 8), (7, 9, 4), "39.0M", 10.7),
    "robustresnet-a3": ("robust", (22, 22, 11), (8, 11, 5), "75.9M", 19.8),
    "robustresnet-a4": ("robust", (27, 28, 13), (10, 14, 6), "147M", 39.3),
    "wrn-28-10-rrb": ("robust", (4, 4, 4), (10, 10, 10), "39.6M", 6.0),
}


def _reported(params: int, reported: str) -> str:
    """params in millions with as many decimals as the reported figure."""
    decimals = len(reported[:-1].partition(".")[2])
    return f"{params / 1e6:.{decimals}f}M"


@pytest.mark.parametrize("name", sorted(TABLE))
def test_preset_table(name: str) -> None:
    block, depths, widths, params, gmacs = TABLE[name]
    spec = resolve_arch(name)
    assert (spec.block, spec.depths, spec.widths) == (block, depths, widths)
    assert _reported(count_params(spec), params) == params
    assert abs(count_macs(spec) / (gmacs * 1e9) - 1) < 0.02


def test_scaled_wrns_share_the_robust_points() -> None:
    for k in ("a1", "a2", "a3", "a4"):
        wrn, rrb = resolve_arch(f"wrn-{k}"), resolve_arch(f"robustresnet-{k}")
        assert wrn.block == "basic" and (wrn.depths, wrn.widths) == (rrb.depths, rrb.widths)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_and_counts(name: str) -> None:
    spec = resolve_arch(name)
    assert count_params(spec) > 1e7 and count_macs(spec) > 1e9
    # The same block options at toy depth/width really run forward and backward.
    small = resolve_arch({"preset": name, "depths": 1, "widths": 1})
    model = build(small)
    model(torch.rand(2, 3, 32, 32)).logsumexp(1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_one_real_preset_build_matches_the_count() -> None:
    """wrn-a1 built for real on CPU: the meta-device count is the real count."""
    model = build(resolve_arch("wrn-a1"))
    assert sum(p.numel() for p in model.parameters()) == count_params(resolve_arch("wrn-a1"))
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_preset_overrides_merge() -> None:
    spec = resolve_arch({"preset": "robustresnet-a1", "activation": "silu", "scales": 4})
    assert spec.activation == ("silu",) * 3 and spec.scales == 4 and spec.cardinality == 4


# RobustScaling's published points (basic blocks): GMACs -> (D, W)
PUBLISHED = {
    5: ((14, 14, 7), (5, 7, 3)),
    10: ((17, 17, 8), (7, 9, 4)),
    15: ((20, 20, 10), (7, 10, 4)),
    20: ((22, 22, 11), (8, 11, 5)),
    30: ((25, 25, 12), (9, 13, 5)),
    40: ((27, 28, 13), (10, 14, 6)),
}


@pytest.mark.parametrize("gmacs", sorted(PUBLISHED))
def test_splits_reproduce_published_points(gmacs: int) -> None:
    depths, widths = PUBLISHED[gmacs]
    assert split_depths(sum(depths)) == depths
    assert split_widths(sum(widths)) == widths


@pytest.mark.parametrize("gmacs", [5, 10, 20, 40])
def test_robust_scaling_lands_near_published(gmacs: int) -> None:
    spec = robust_scaling(gmacs)
    depths, widths = PUBLISHED[gmacs]
    assert abs(count_macs(spec) / (gmacs * 1e9) - 1) < 0.10
    assert abs(sum(spec.depths) - sum(depths)) <= 2
    assert abs(sum(spec.widths) - sum(widths)) <= 1
    share = sum(spec.depths) / (sum(spec.depths) + sum(spec.widths))
    assert abs(share - 0.7) < 0.01
    if gmacs == 5:  # the paper's anchor point, at exactly 7:3
        assert (spec.depths, spec.widths) == (depths, widths)


def test_robust_scaling_options() -> None:
    deep = robust_scaling(5, depth_share=0.8)
    assert sum(deep.depths) > 35
    rrb = robust_scaling(5, block="robust", activation="silu")
    assert rrb.block == "robust" and rrb.activation == ("silu",) * 3
    assert abs(count_macs(rrb) / 5e9 - 1) < 0.10
    with pytest.raises(ValueError, match="depth_share"):
        robust_scaling(5, depth_share=1.2)
    assert isinstance(rrb, ArchSpec)


def test_splits_keep_the_sums() -> None:
    for total in range(5, 200):
        depths, widths = split_depths(total), split_widths(total)
        assert sum(depths) == total and sum(widths) == total
        assert min(depths) >= 1 and min(widths) >= 1
        if total >= 7:  # W3 = ceil(total / 5.5) outgrows W1 at total 6 (1/3/2)
            assert depths[2] <= depths[0] <= depths[1] and widths[2] <= widths[0] <= widths[1]
