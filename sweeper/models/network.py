"""The network skeleton (stem, three stages, head) and the one private builder.

Pre-activation networks (the WRN form, every preset) have a bare stem conv and a
norm -> act head. Post-activation networks (the original ResNet form) put norm -> act
on the stem instead and pool the already-activated features, so each path sees exactly
one norm -> act per conv in both orders.
"""

from __future__ import annotations

import torch
from torch import nn

from sweeper.models import blocks as _blocks  # noqa: F401  (fills BLOCKS)
from sweeper.models.layers import conv, create_act, create_norm, init_weights
from sweeper.models.registry import BLOCKS
from sweeper.models.spec import ArchSpec
from sweeper.models.stages import block_options, out_features, stage_plan


class InputNorm(nn.Module):
    """(x - mean) / std inside the model, so attacks work on [0, 1] pixels."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ResNet(nn.Module):
    """stem -> stages -> head; input float NCHW in [0, 1]."""

    def __init__(
        self,
        *,
        stem: nn.Module,
        stages: nn.Sequential,
        head: nn.Module,
        features: int,
        num_classes: int,
        input_norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.input_norm = input_norm if input_norm is not None else nn.Identity()
        self.stem = stem
        self.stages = stages
        self.head = head
        self.fc = nn.Linear(features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(self.input_norm(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))


def make_stem(spec: ArchSpec) -> nn.Module:
    stem: nn.Module = conv(spec.in_channels, spec.stem_channels, 3)
    if spec.activation_order == "post":
        stem = nn.Sequential(
            stem, create_norm(spec.norm[0], spec.stem_channels), create_act(spec.activation[0])
        )
    return stem


def make_head(spec: ArchSpec, features: int) -> nn.Module:
    if spec.activation_order == "post":
        return nn.Identity()
    return nn.Sequential(create_norm(spec.norm[2], features), create_act(spec.activation[2]))


def _build(spec: ArchSpec) -> ResNet:
    block = BLOCKS.get(spec.block)
    stages = nn.Sequential()
    for i, stage in enumerate(stage_plan(spec)):
        opts = block_options(spec, i)
        stages.add_module(
            f"stage{i + 1}",
            nn.Sequential(*(block(c, p, stride=s, **opts) for c, p, s in stage)),
        )
    features = out_features(spec)
    input_norm = None
    if spec.input_mean is not None and spec.input_std is not None:
        input_norm = InputNorm(spec.input_mean, spec.input_std)
    model = ResNet(
        stem=make_stem(spec),
        stages=stages,
        head=make_head(spec, features),
        features=features,
        num_classes=spec.num_classes,
        input_norm=input_norm,
    )
    init_weights(model)
    return model


def build(spec: ArchSpec) -> nn.Module:
    """The network an ArchSpec describes, freshly initialised (on the current default device)."""
    return _build(spec)
