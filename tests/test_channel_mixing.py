"""Every network of the conv-type study mixes all of a stage's channels.

A stage that leaves some (input channel, output channel) pair unconnected is several
networks side by side, and a study arm built from it measures that construction, not its
conv type (issue 20: basic blocks with grouped convs were `cardinality` separate
sub-networks per stage). Checked by perturbation: one sample per input channel, that
channel moved, the stage run in eval mode (each sample on its own), and every
output channel must move for every input channel (float32, and float64 again for
any input channel float32 finds a gap for: a small change can round away in float32).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from sweeper.models import build
from sweeper.models.spec import ArchSpec
from sweeper.space import expand, load

STUDY = Path(__file__).resolve().parents[1] / "search_spaces" / "conv_type.yaml"


def unreached(stage: nn.Module, channels: int, size: int = 1) -> torch.Tensor:
    """(input, output) channel pairs of `stage` that a perturbation of the input does not
    reach: a bool matrix [channels, out_channels], all False when every channel mixes.

    At 1x1 pixels a kxk conv is its centre tap, which connects the same channels as the
    whole kernel, so the channel graph is the stage's own at a fraction of the cost. A
    ReLU can hide a connection at one input (a unit off for both samples), never invent
    one, so a pair reached here is connected; a stage of separate groups shows as False
    nowhere it should not."""
    gen = torch.Generator().manual_seed(0)
    # positive, so that the pre-activation blocks' first ReLU passes every channel
    base = torch.rand(1, channels, size, size, generator=gen) + 0.5
    gaps = _gaps(stage, base, torch.arange(channels))
    rows = gaps.any(dim=1).nonzero().flatten()
    if len(rows):  # float32 may round a small change away: look again in float64
        gaps[rows] = _gaps(stage.double(), base.double(), rows)
        stage.float()
    return gaps


def _gaps(stage: nn.Module, base: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    moved = base.repeat(len(rows) + 1, 1, 1, 1)
    moved[torch.arange(1, len(rows) + 1), rows] += 10.0  # one input channel per sample
    with torch.no_grad():
        out = stage(moved)
    return (out[1:] - out[:1]).abs().amax(dim=(2, 3)) == 0


def _stage_inputs(spec: ArchSpec) -> list[int]:
    from sweeper.models.stages import stage_plan

    return [stage[0][0] for stage in stage_plan(spec)]


@functools.cache
def _study_archs() -> dict[str, ArchSpec]:
    archs = {f"{c.arch.block}-{c.arch.conv_type}": c.arch for c in expand(load(STUDY))}
    assert len(archs) == 5  # 4 bottleneck conv types and the WRN basic block
    return archs


NAMES = [f"bottleneck-{t}" for t in ("standard", "aggregated", "hierarchical", "both")]


@pytest.mark.parametrize("name", [*NAMES, "basic-standard"])
def test_every_network_of_the_conv_type_study_mixes_every_channel_of_every_stage(
    name: str,
) -> None:
    """The study's own networks, at their budget-matched widths (W ~9.4 to 13.1)."""
    arch = _study_archs()[name]
    torch.manual_seed(0)  # the weights, so that a run is repeatable
    model = build(arch).eval()
    for i, (stage, channels) in enumerate(zip(model.stages, _stage_inputs(arch))):
        gaps = unreached(stage, channels)
        assert not gaps.any(), (name, f"stage {i + 1}", f"{int(gaps.sum())} pairs unreached")


def test_the_check_finds_a_stage_of_separate_sub_networks() -> None:
    """The construction the study leaves out: basic blocks with grouped convs (4 groups)
    never mix across groups, so 3/4 of the pairs of a width-keeping stage stay unreached;
    hierarchical basic blocks leave the pass-through split's channels unmixed too."""
    for conv_type, fields in (("aggregated", {"cardinality": 4}), ("hierarchical", {"scales": 8})):
        spec = ArchSpec(block="basic", depths=(2, 2, 2), widths=(2, 2, 2), conv_type=conv_type,
                        **fields)  # fmt: skip
        model = build(spec).eval()
        block = model.stages[0][1]  # the second, width-keeping block of stage 1
        gaps = unreached(block, 32)
        assert gaps.any(), conv_type
        if conv_type == "aggregated":
            assert int(gaps.sum()) == 32 * 32 * 3 // 4
