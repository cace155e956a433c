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

# Activations: name -> zero-argument module factory.
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("silu", "swish")(nn.SiLU)
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("softplus")(nn.Softplus)
ACTIVATIONS.register("mish")(nn.Mish)
ACTIVATIONS.register("elu")(nn.ELU)
ACTIVATIONS.register("leaky_relu")(lambda: nn.LeakyReLU(0.1))
ACTIVATIONS.register("tanh")(nn.Tanh)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an NCHW tensor (the ConvNeXt form)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _group_norm(channels: int) -> nn.Module:
    # 32 groups (Wu & He) where the channels allow it; gcd keeps every width buildable.
    return nn.GroupNorm(math.gcd(32, channels), channels)


# Norms: name -> module factory taking the channel count.
NORMS.register("batchnorm", "bn")(nn.BatchNorm2d)
NORMS.register("groupnorm", "gn")(_group_norm)
NORMS.register("layernorm", "ln")(LayerNorm2d)
NORMS.register("instancenorm", "in")(lambda channels: nn.InstanceNorm2d(channels, affine=True))


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
    norm=None gives bare branch convs: a drop-in for one kxk conv inside another block.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        scales: int = 4,
        groups: int = 1,
        norm: str | None = "batchnorm",
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
            if norm is not None
            else conv(width, width, kernel_size, stride=stride, groups=groups)
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
