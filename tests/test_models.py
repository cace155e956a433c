"""The shared builder: every block-level combination builds, runs and trains; specs validate."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sweeper.errors import from_validation_error
from sweeper.models import (
    ACTIVATIONS,
    BLOCKS,
    NORMS,
    ArchSpec,
    build,
    count_macs,
    count_params,
    match_width,
    resolve_arch,
)
from sweeper.models.registry import Registry

ORDERS = ("pre", "post")
CONV_TYPES = ("standard", "aggregated", "hierarchical", "both")
SE_MODES = ("none", "standard", "residual")
NORM_NAMES = ("batchnorm", "groupnorm", "layernorm", "instancenorm")

# Tiny networks: planes 8/16/32, two blocks in stage 2 so identity shortcuts run too.
_TINY = {
    "depths": (1, 2, 1),
    "widths": (0.5, 0.5, 0.5),
    "cardinality": 2,
    "scales": 2,
    "se_reduction": 4,
}
# base_width per block so every grouped/split conv has at least one channel per group.
_BASE_WIDTH = {"basic": 64, "bottleneck": 16, "inverted_bottleneck": 64, "robust": 20}


def tiny(block: str = "basic", **fields: object) -> ArchSpec:
    return ArchSpec(**{**_TINY, "block": block, "base_width": _BASE_WIDTH[block], **fields})


def check_trains(spec: ArchSpec) -> nn.Module:
    torch.manual_seed(0)
    model = build(spec)
    x = torch.rand(2, spec.in_channels, 32, 32)
    out = model(x)
    assert out.shape == (2, spec.num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        # every parameter is used: DDP runs without find_unused_parameters
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    return model


@pytest.mark.parametrize(
    "block,order,conv_type,se",
    list(itertools.product(BLOCKS.names(), ORDERS, CONV_TYPES, SE_MODES)),
)
def test_block_axes_build_and_train(block: str, order: str, conv_type: str, se: str) -> None:
    check_trains(tiny(block, activation_order=order, conv_type=conv_type, se=se))


@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_every_activation(activation: str) -> None:
    """Blocks take activations by name alike; the basic block and the robust block suffice."""
    check_trains(tiny("basic", activation=activation))
    check_trains(tiny("robust", activation=activation, activation_order="post"))


@pytest.mark.parametrize("block", BLOCKS.names())
@pytest.mark.parametrize("norm", NORM_NAMES)
def test_every_norm(block: str, norm: str) -> None:
    check_trains(tiny(block, norm=norm, activation_order="post", se="residual"))
    check_trains(tiny(block, norm=norm, conv_type="both"))


@pytest.mark.parametrize("block", BLOCKS.names())
@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_kernel_sizes(block: str, kernel: int) -> None:
    check_trains(tiny(block, kernel_size=kernel, conv_type="both"))


def test_per_stage_values_differ() -> None:
    spec = tiny(
        kernel_size=(3, 5, 7),
        activation=("relu", "silu", "gelu"),
        norm=("batchnorm", "groupnorm", "layernorm"),
    )
    model = check_trains(spec)
    kernels = {m.kernel_size[0] for m in model.stages.stage3.modules() if isinstance(m, nn.Conv2d)}
    assert kernels == {1, 7}
    assert isinstance(model.head[1], nn.GELU)


@pytest.mark.parametrize("block", BLOCKS.names())
@pytest.mark.parametrize("order", ORDERS)
def test_macs_tally_matches_whole_model(block: str, order: str) -> None:
    """The block-by-block tally equals a FlopCounterMode pass over the whole network."""
    spec = tiny(block, activation_order=order, conv_type="both", se="residual")
    with torch.device("meta"):
        model = build(spec)
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, 32, 32))
    assert count_macs(spec) == counter.get_total_flops() // 2
    assert count_params(spec) == count_params(model)


def test_input_normalisation_lives_in_the_model() -> None:
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    torch.manual_seed(0)
    plain = build(tiny()).eval()
    normed = build(tiny(input_mean=mean, input_std=std)).eval()
    normed.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(2, 3, 32, 32)
    expected = plain((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(normed(x), expected)


def test_init_follows_wrn() -> None:
    torch.manual_seed(0)
    model = build(ArchSpec(depths=1, widths=4))
    conv = model.stages.stage3[0].conv2  # 256 -> 256, 3x3
    assert abs(conv.weight.std().item() / math.sqrt(2 / (9 * 256)) - 1) < 0.02
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()
    assert (model.fc.bias == 0).all()


def test_robust_block_defaults_are_the_papers() -> None:
    spec = ArchSpec(block="robust")
    assert (spec.scales, spec.base_width, spec.cardinality) == (8, 10, 4)
    assert (spec.se, spec.se_reduction, spec.expansion, spec.conv_type) == (
        "residual",
        64,
        4,
        "both",
    )
    assert ArchSpec(block="robust", scales=4).scales == 4  # explicit values win
    assert count_params(ArchSpec(block="robust", depths=4, widths=10)) == count_params(
        resolve_arch("wrn-28-10-rrb")
    )


def test_robust_block_shapes() -> None:
    """p = 160: w = floor(160 * 10 / 160) * 4 = 40, 8 splits, 7 grouped convs, 4p out."""
    with torch.device("meta"):
        block = BLOCKS.get("robust")(16, 160, stride=1)
        strided = BLOCKS.get("robust")(640, 320, stride=2)
    assert block.conv1[0].in_channels == 16 and block.conv1[0].out_channels == 320
    convs = [b[0] for b in block.conv2.convs]
    assert len(convs) == 7
    assert all((c.in_channels, c.out_channels, c.groups) == (40, 40, 4) for c in convs)
    assert block.conv3.out_channels == 640
    assert (block.se.fc1.out_features, block.se.fc2.out_features) == (10, 640)
    assert isinstance(strided.conv2.pool, nn.AvgPool2d)


def test_robust_first_conv_reads_raw_input() -> None:
    """In an identity block norm1 -> act1 would feed nothing (the reference builds it anyway,
    models/resnet.py RobustResBlock.bn1): not built, but counted as the reference counts it."""
    torch.manual_seed(0)
    block = BLOCKS.get("robust")(64, 16, stride=1, base_width=40)
    block(torch.rand(2, 64, 8, 8)).sum().backward()
    assert isinstance(block.pre_act, nn.Identity) and block.idle_params == 2 * 64
    assert all(p.grad is not None for p in block.parameters())
    assert count_params(block) == sum(p.numel() for p in block.parameters()) + 2 * 64
    projecting = BLOCKS.get("robust")(32, 16, stride=2, base_width=40)
    assert projecting.idle_params == 0 and len(list(projecting.pre_act.parameters())) == 2


def test_post_activation_ends_with_act_after_add() -> None:
    torch.manual_seed(0)
    block = BLOCKS.get("basic")(8, 8, stride=1, order="post")
    assert (block(torch.randn(2, 8, 8, 8)) >= 0).all()


def test_registry_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="choose from: .*gelu.*relu"):
        ACTIVATIONS.get("nope")
    with pytest.raises(ValueError, match="batchnorm"):
        NORMS.get("nope")
    reg: Registry[type] = Registry("thing")
    reg.register("a", "b")(int)
    assert reg.get("b") is int and reg.names() == ["a", "b"]
    with pytest.raises(ValueError, match="twice"):
        reg.add("a", float)


BAD_SPECS = [
    ({"block": "resnext"}, "block"),
    ({"activation": "swishy"}, "activation"),
    ({"norm": ["batchnorm", "groupnorm"]}, "norm"),
    ({"depths": [4, -1, 4]}, "depths"),
    ({"widths": [10, 10]}, "widths"),
    ({"kernel_size": 4}, "kernel_size"),
    ({"conv_type": "aggregated", "cardinality": 3}, "cardinality"),
    ({"conv_type": "hierarchical", "scales": 3}, "scales"),
    ({"block": "basic", "expansion": 4}, "expansion"),
    ({"block": "robust", "base_width": 1, "widths": 1}, "base_width"),
    ({"input_mean": [0.5]}, "input_mean"),
    ({"se": "squeeze"}, "se"),
    ({"depht": [1, 1, 1]}, "depht"),
]


@pytest.mark.parametrize("fields,field", BAD_SPECS)
def test_bad_spec_names_the_field(fields: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ArchSpec(**fields)
    message = str(from_validation_error(info.value))
    assert "\n" not in message
    assert message.startswith(f"{field}:") or f" {field}:" in message, message


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="preset: unknown preset 'wrn-99'"):
        resolve_arch("wrn-99")


@pytest.mark.parametrize(
    "fields",
    [{"block": "robust"}, {"block": "bottleneck"}, {"conv_type": "aggregated", "cardinality": 4}],
)
def test_match_width_lands_on_target(fields: dict) -> None:
    target = count_macs(resolve_arch("wrn-28-10"))
    spec = match_width(ArchSpec(depths=4, widths=10, **fields), target)
    assert abs(count_macs(spec) / target - 1) < 0.02
    assert len(set(spec.widths)) <= 2  # one factor for all stages (up to channel rounding)
    build_spec = ArchSpec(**spec.model_dump())  # validates as it stands
    assert build_spec == spec
