"""Small layers shared by the blocks; activations and norms are registered here by name.

Adding an activation or a norm is one `register` line; blocks only ever ask for layers by
name (`create_act`, `create_norm`), never hard-code `nn.ReLU`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sweeper.models.registry import ACTIVATIONS, NORMS

# Activations: name -> zero-argument module factory. Each is the layer the reference code
# (zhichao-lu/robust-residual-network, models/activation.py, `avaliable_activations`) builds
# for that name: torch's defaults (ELU alpha 1, GELU exact erf, LeakyReLU slope 0.01),
# Softplus with beta 1 and threshold 20, Swish = SiLU = x * sigmoid(x), Mish.
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("silu", "swish")(nn.SiLU)
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("softplus")(lambda: nn.Softplus(beta=1.0, threshold=20.0))
ACTIVATIONS.register("mish")(nn.Mish)
ACTIVATIONS.register("elu")(nn.ELU)
ACTIVATIONS.register("leaky_relu")(lambda: nn.LeakyReLU(0.01))
# Not in the reference: torch's Tanh, as it is.
ACTIVATIONS.register("tanh")(nn.Tanh)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an NCHW tensor, with a per-channel weight
    and bias: the reference's LayerNorm2d (models/normalization.py), channels-last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def group_count(channels: int) -> int:
    """Groups of GroupNorm: channels // 8, as the reference's GroupNorm.

    Where channels // 8 does not divide the channels (the reference would fail to build,
    e.g. 100 channels: 12 groups) or is 0, the largest divisor of the channels below it
    (at least 1) is used: the nearest buildable count with groups of at least 8 channels.
    """
    groups = max(1, channels // 8)
    while channels % groups:
        groups -= 1
    return groups


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(group_count(channels), channels)


# Norms: name -> module factory taking the channel count; the reference's
# models/normalization.py (`avaliable_normalizations`): BatchNorm2d, GroupNorm with
# channels // 8 groups, LayerNorm2d, and InstanceNorm2d with torch's defaults (affine=False,
# no running statistics).
NORMS.register("batchnorm", "bn")(nn.BatchNorm2d)
NORMS.register("groupnorm", "gn")(_group_norm)
NORMS.register("layernorm", "ln")(LayerNorm2d)
NORMS.register("instancenorm", "in")(nn.InstanceNorm2d)


def create_act(name: str) -> nn.Module:
    return ACTIVATIONS.get(name)()


def create_norm(name: str, channels: int) -> nn.Module:
    return NORMS.get(name)(channels)


def conv(
    in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1, groups: int = 1
) -> nn.Conv2d:
    """Bias-free 'same' convolution: every conv of the family is one of these."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        groups=groups,
        bias=False,
    )


class SqueezeExcite(nn.Module):
    """SE(v) = v * sigmoid(fc2(relu(fc1(pool(v))))), both fcs without bias."""

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


class ConvNormAct(nn.Sequential):
    """conv -> norm -> act: the unit of post-activation blocks and of multi-scale branches."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        groups: int = 1,
        norm: str = "batchnorm",
        act: str | None = "relu",
    ) -> None:
        layers: list[nn.Module] = [
            conv(in_channels, out_channels, kernel_size, stride=stride, groups=groups),
            create_norm(norm, out_channels),
        ]
        if act is not None:
            layers.append(create_act(act))
        super().__init__(*layers)


class MultiScaleConv(nn.Module):
    """Res2Net-style hierarchical kxk conv on `channels` -> `channels`.

    The channels split into `scales` chunks; chunk j (j < s-1) is convolved after adding the
    previous chunk's output (not when strided), each conv followed by norm -> act; the last
    chunk passes through (average-pooled when strided), which widens the receptive field
    without adding a full conv. With scales == 1 it is one grouped conv -> norm -> act.
    As Res2Net's Bottle2neck and the reference's RobustResBlock (models/resnet.py), every
    split conv is followed by its own norm -> act; the pass-through chunk is not.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        scales: int = 4,
        groups: int = 1,
        norm: str = "batchnorm",
        act: str = "relu",
    ) -> None:
        super().__init__()
        if channels % scales:
            raise ValueError(f"scales: {scales} does not divide {channels} channels")
        self.scales = scales
        self.stride = stride
        width = channels // scales
        branches = max(1, scales - 1)
        self.convs = nn.ModuleList(
            ConvNormAct(width, width, kernel_size, stride=stride, groups=groups, norm=norm, act=act)
            for _ in range(branches)
        )
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scales == 1:
            return self.convs[0](x)
        chunks = torch.chunk(x, self.scales, dim=1)
        outs: list[torch.Tensor] = []
        for j, branch in enumerate(self.convs):
            inp = chunks[j] if j == 0 or self.stride > 1 else chunks[j] + outs[-1]
            outs.append(branch(inp))
        outs.append(self.pool(chunks[-1]))
        return torch.cat(outs, dim=1)


def init_weights(module: nn.Module) -> None:
    """WRN init: conv ~ N(0, sqrt(2 / (k*k*out))), norm weight 1 / bias 0, linear bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
