"""The residual blocks of the study, registered in BLOCKS by name.

Every block takes the same keyword options, so the builder never special-cases a block:
`Block(in_channels, planes, stride=..., kernel_size=..., act=..., norm=..., order=...,
conv_type=..., cardinality=..., base_width=..., scales=..., se=..., se_reduction=...,
expansion=...)`. A block with `planes` p outputs `out_channels(p, expansion)` channels.

`conv_type` decides which of `cardinality` (aggregated, both) and `scales` (hierarchical,
both) are in effect; the other is read as 1. A block's own `defaults` fill the ArchSpec
fields a user leaves unset, so `block: robust` alone is the paper's block.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from sweeper.models.layers import (
    ConvNormAct,
    MultiScaleConv,
    SqueezeExcite,
    conv,
    create_act,
    create_norm,
)
from sweeper.models.registry import BLOCKS


def _divides(field: str, value: int, channels: int, where: str) -> None:
    if channels % value:
        raise ValueError(f"{field}: {value} does not divide the {channels} channels of {where}")


def _effective(conv_type: str, cardinality: int, scales: int) -> tuple[int, int]:
    """(cardinality, scales) in effect for a conv type."""
    card = cardinality if conv_type in ("aggregated", "both") else 1
    sc = scales if conv_type in ("hierarchical", "both") else 1
    return card, sc


def _spatial(
    channels_in: int,
    channels_out: int,
    kernel_size: int,
    *,
    stride: int,
    groups: int,
    scales: int,
    norm: str,
    act: str,
    where: str,
) -> nn.Module:
    """One kxk conv of a block: grouped, and hierarchical where the width is preserved.

    A Res2Net split needs equal input and output widths, so a width-changing conv (the
    first conv of a transition basic block) stays a plain, possibly grouped, conv. A
    hierarchical conv ends every split conv with the block's norm -> act, as Res2Net's
    Bottle2neck and the reference's RobustResBlock (models/resnet.py) do; see `_normalises`.
    """
    _divides("cardinality", groups, channels_in, where)
    _divides("cardinality", groups, channels_out, where)
    if scales > 1 and channels_in == channels_out:
        _divides("scales", scales, channels_in, where)
        _divides("cardinality", groups, channels_in // scales, where + " (one scale)")
        return MultiScaleConv(
            channels_in, kernel_size, stride=stride, scales=scales, groups=groups, norm=norm,
            act=act,
        )  # fmt: skip
    return conv(channels_in, channels_out, kernel_size, stride=stride, groups=groups)


def _normalises(module: nn.Module) -> bool:
    """Whether a kxk conv normalises and activates its own output (a hierarchical one).

    The block's norm -> act that would come right after such a conv is then left out: in
    Res2Net and in RobustResBlock the split convs' norm -> act is the only one between the
    kxk conv and the next conv, never a second norm -> act on top.
    """
    return isinstance(module, MultiScaleConv)


def _norm_unless(skip: bool, norm: str, channels: int) -> nn.Module:
    return nn.Identity() if skip else create_norm(norm, channels)


class _ResidualBlock(nn.Module):
    """Shared parts: the shortcut, the SE variants and the final merge."""

    defaults: ClassVar[dict[str, Any]] = {"expansion": 1}

    @staticmethod
    def out_channels(planes: int, expansion: int) -> int:
        return planes * expansion

    def _setup_merge(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        order: str,
        act: str,
        norm: str,
        se: str,
        se_reduction: int,
    ) -> None:
        self.order = order
        self.se_mode = se
        self.has_projection = stride > 1 or in_channels != out_channels
        self.shortcut: nn.Module = nn.Identity()
        if self.has_projection:
            # Post-activation projects the raw input, so it normalises the projection.
            self.shortcut = (
                conv(in_channels, out_channels, 1, stride=stride)
                if order == "pre"
                else ConvNormAct(in_channels, out_channels, 1, stride=stride, norm=norm, act=None)
            )
        self.se = SqueezeExcite(out_channels, reduction=se_reduction) if se != "none" else None
        self.norm_se = create_norm(norm, out_channels) if se == "residual" else None
        self.act_out = create_act(act) if order == "post" else nn.Identity()

    def _merge(self, y: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        if self.se_mode == "standard":
            out = self.se(y) + shortcut  # type: ignore[misc]
        elif self.se_mode == "residual":
            out = y + shortcut + self.se(self.norm_se(y))  # type: ignore[misc]
        else:
            out = y + shortcut
        return self.act_out(out)


@BLOCKS.register("basic")
class BasicBlock(_ResidualBlock):
    """The WRN block: two kxk convs (pre: norm -> act -> conv; post: conv -> norm -> act)."""

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        act: str = "relu",
        norm: str = "batchnorm",
        order: str = "pre",
        conv_type: str = "standard",
        cardinality: int = 1,
        base_width: int = 64,
        scales: int = 1,
        se: str = "none",
        se_reduction: int = 16,
        expansion: int = 1,
    ) -> None:
        super().__init__()
        if expansion != 1:
            raise ValueError(f"expansion: the basic block has none (got {expansion}; use 1)")
        groups, sc = _effective(conv_type, cardinality, scales)
        where = f"a basic block {in_channels}->{planes}"
        layer = {"groups": groups, "scales": sc, "norm": norm, "act": act, "where": where}
        self.conv1 = _spatial(in_channels, planes, kernel_size, stride=stride, **layer)
        self.conv2 = _spatial(planes, planes, kernel_size, stride=1, **layer)
        pre, split1, split2 = order == "pre", _normalises(self.conv1), _normalises(self.conv2)
        # pre: norm1 -> act1 -> conv1 -> norm2 -> act2 -> conv2
        # post: conv1 -> norm1 -> act1 -> conv2 -> norm2 (then + shortcut -> act)
        # A hierarchical conv's own split norm -> act replaces the block's one after it.
        self.norm1 = create_norm(norm, in_channels) if pre else _norm_unless(split1, norm, planes)
        self.act1 = create_act(act) if pre or not split1 else nn.Identity()
        self.norm2 = _norm_unless(split1 if pre else split2, norm, planes)
        self.act2 = create_act(act) if pre and not split1 else nn.Identity()
        self._setup_merge(
            in_channels,
            planes,
            stride=stride,
            order=order,
            act=act,
            norm=norm,
            se=se,
            se_reduction=se_reduction,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "pre":
            a = self.act1(self.norm1(x))
            shortcut = self.shortcut(a) if self.has_projection else x
            y = self.conv2(self.act2(self.norm2(self.conv1(a))))
        else:
            shortcut = self.shortcut(x)
            y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self._merge(y, shortcut)


class _ThreeConvBlock(_ResidualBlock):
    """1x1 -> kxk -> 1x1 around a `mid`-channel middle: the bottleneck and its inverse."""

    def _setup_three(
        self,
        in_channels: int,
        mid: int,
        out: int,
        kernel_size: int,
        *,
        stride: int,
        groups: int,
        scales: int,
        where: str,
        order: str,
        act: str,
        norm: str,
        se: str,
        se_reduction: int,
    ) -> None:
        self.conv1 = conv(in_channels, mid, 1)
        self.conv2 = _spatial(
            mid, mid, kernel_size, stride=stride, groups=groups, scales=scales, norm=norm,
            act=act, where=where,
        )  # fmt: skip
        self.conv3 = conv(mid, out, 1)
        pre, split = order == "pre", _normalises(self.conv2)
        # pre: norm1 -> act1 -> conv1 -> norm2 -> act2 -> conv2 -> norm3 -> act3 -> conv3
        # post: conv1 -> norm1 -> act1 -> conv2 -> norm2 -> act2 -> conv3 -> norm3
        # A hierarchical conv2's own split norm -> act replaces the block's one after it.
        self.norm1 = create_norm(norm, in_channels if pre else mid)
        self.act1 = create_act(act)
        self.norm2 = create_norm(norm, mid) if pre else _norm_unless(split, norm, mid)
        self.act2 = create_act(act) if pre or not split else nn.Identity()
        self.norm3 = _norm_unless(split, norm, mid) if pre else create_norm(norm, out)
        self.act3 = create_act(act) if pre and not split else nn.Identity()
        self._setup_merge(
            in_channels, out, stride=stride, order=order, act=act, norm=norm, se=se,
            se_reduction=se_reduction,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == "pre":
            a = self.act1(self.norm1(x))
            shortcut = self.shortcut(a) if self.has_projection else x
            y = self.conv2(self.act2(self.norm2(self.conv1(a))))
            y = self.conv3(self.act3(self.norm3(y)))
        else:
            shortcut = self.shortcut(x)
            y = self.act2(self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x))))))
            y = self.norm3(self.conv3(y))
        return self._merge(y, shortcut)


@BLOCKS.register("bottleneck")
class Bottleneck(_ThreeConvBlock):
    """1x1 reduce -> kxk -> 1x1 expand; mid width floor(p*base_width/64)*cardinality*scales."""

    defaults: ClassVar[dict[str, Any]] = {"expansion": 4}

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        act: str = "relu",
        norm: str = "batchnorm",
        order: str = "pre",
        conv_type: str = "standard",
        cardinality: int = 1,
        base_width: int = 64,
        scales: int = 1,
        se: str = "none",
        se_reduction: int = 16,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        groups, sc = _effective(conv_type, cardinality, scales)
        mid = (planes * base_width // 64) * groups * sc
        if mid < 1:
            raise ValueError(f"base_width: {base_width} gives a bottleneck of 0 channels")
        self._setup_three(
            in_channels, mid, self.out_channels(planes, expansion), kernel_size, stride=stride,
            groups=groups, scales=sc, where=f"a bottleneck of {mid} channels", order=order,
            act=act, norm=norm, se=se, se_reduction=se_reduction,
        )  # fmt: skip


@BLOCKS.register("inverted_bottleneck")
class InvertedBottleneck(_ThreeConvBlock):
    """1x1 expand (planes*expansion) -> depthwise kxk -> 1x1 project back to planes.

    The kxk conv is depthwise for standard/hierarchical; aggregated/both replace depthwise
    with `cardinality` groups, so the axis changes the block rather than doing nothing.

    Definition choice, ours: the paper names this topology but does not define it, and the
    reference code (models/resnet.py) has no inverted bottleneck. The layers are
    MobileNetV2's (Sandler et al., 2018: 1x1 expand by `expansion`, depthwise kxk, 1x1
    project); the norm -> act placement is the one every block here shares (`order`), not
    MobileNetV2's. Pre-activation puts norm -> act before each of the three convs, so the
    narrow block input passes an activation before the expand conv, where MobileNetV2 keeps
    the narrow tensors linear ("linear bottleneck": no act after the project conv, none
    before the expand conv); post-activation puts norm -> act after the expand and the
    depthwise conv and a norm alone after the project conv, which is MobileNetV2's
    placement, except for the activation after the residual add. Chosen so that the
    block-topology study varies the topology and not the activation placement with it.
    """

    defaults: ClassVar[dict[str, Any]] = {"expansion": 4}

    @staticmethod
    def out_channels(planes: int, expansion: int) -> int:
        return planes

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        act: str = "relu",
        norm: str = "batchnorm",
        order: str = "pre",
        conv_type: str = "standard",
        cardinality: int = 1,
        base_width: int = 64,
        scales: int = 1,
        se: str = "none",
        se_reduction: int = 16,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        card, sc = _effective(conv_type, cardinality, scales)
        hidden = planes * expansion
        _divides("scales", sc, hidden, f"an inverted bottleneck of {hidden} channels")
        groups = card if conv_type in ("aggregated", "both") else hidden // sc
        self._setup_three(
            in_channels, hidden, planes, kernel_size, stride=stride, groups=groups, scales=sc,
            where=f"an inverted bottleneck of {hidden} channels", order=order, act=act,
            norm=norm, se=se, se_reduction=se_reduction,
        )  # fmt: skip


@BLOCKS.register("robust")
class RobustResBlock(_ResidualBlock):
    """The paper's block: 1x1 on the raw input, grouped Res2Net kxk, 1x1 to 4p, residual SE.

    Split width w = floor(p * base_width / 160) * cardinality, s splits of w channels.
    """

    defaults: ClassVar[dict[str, Any]] = {
        "conv_type": "both",
        "cardinality": 4,
        "base_width": 10,
        "scales": 8,
        "se": "residual",
        "se_reduction": 64,
        "expansion": 4,
    }

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        act: str = "relu",
        norm: str = "batchnorm",
        order: str = "pre",
        conv_type: str = "both",
        cardinality: int = 4,
        base_width: int = 10,
        scales: int = 8,
        se: str = "residual",
        se_reduction: int = 64,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        card, sc = _effective(conv_type, cardinality, scales)
        width = (planes * base_width // 160) * card
        if width < 1:
            raise ValueError(
                f"base_width: {base_width} gives splits of 0 channels at {planes} planes"
            )
        out = self.out_channels(planes, expansion)
        self._setup_merge(
            in_channels,
            out,
            stride=stride,
            order=order,
            act=act,
            norm=norm,
            se=se,
            se_reduction=se_reduction,
        )
        pre = order == "pre"
        # conv1 reads the raw x, so norm1 -> act1 only feeds the projection shortcut. The
        # reference (models/resnet.py, RobustResBlock: bn1 in every block) also builds norm1
        # where the shortcut is the identity, where it gets no gradient. It is not built here:
        # an idle parameter would make DDP need find_unused_parameters, a graph traversal
        # every step. Its parameters are counted (idle_params, see models.count_params), so
        # parameter counts stay the published ones.
        self.pre_act: nn.Module = nn.Identity()
        self.idle_params = 0
        if pre and self.has_projection:
            self.pre_act = nn.Sequential(create_norm(norm, in_channels), create_act(act))
        elif pre:
            self.idle_params = sum(p.numel() for p in create_norm(norm, in_channels).parameters())
        self.conv1 = ConvNormAct(in_channels, width * sc, 1, norm=norm, act=act)
        self.conv2 = MultiScaleConv(
            width * sc, kernel_size, stride=stride, scales=sc, groups=card, norm=norm, act=act
        )
        self.conv3 = conv(width * sc, out, 1)
        self.norm3 = nn.Identity() if pre else create_norm(norm, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(self.pre_act(x)) if self.has_projection else x
        z = self.norm3(self.conv3(self.conv2(self.conv1(x))))
        return self._merge(z, shortcut)
