"""ArchSpec: the validated description of one network of the study.

Per-stage axes (kernel size, activation, norm) accept one value for all three
stages or exactly three values; they are stored as 3-tuples.

Fields a user leaves unset take the chosen block's own defaults (`BLOCKS[block].defaults`,
e.g. `block: robust` gives scales 8, base_width 10, cardinality 4, residual SE with
reduction 64, expansion 4), and the stored spec holds those values explicitly. So to
switch the block of an existing spec, start from the fields the user gave, not from a
full `model_dump()` of a spec built for another block.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sweeper.models.registry import BLOCKS  # filled (torch imported) on the first lookup

NUM_STAGES = 3
# Upper bounds, checked before anything is built or counted (a typo such as depth 99999999999
# would otherwise fill the memory while the network's layout is listed). Each is far beyond
# any network of the study (largest: depth 69, width 49, 154 M parameters) and of the
# robustness literature (WRN-70-16: 267 M); checks.MAX_PARAMS bounds their product.
MAX_DEPTH = 1000  # blocks per stage
MAX_WIDTH = 256.0  # widening factor: 64 * 256 = 16384 channels in stage 3
MAX_KERNEL = 31
MAX_CHANNELS = 4096  # stem channels


def _per_stage(value: Any) -> Any:
    """Broadcast a scalar to the three stages; reject any other count."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return tuple(value) * NUM_STAGES
        if len(value) != NUM_STAGES:
            raise ValueError(f"expected 1 or {NUM_STAGES} per-stage values, got {len(value)}")
        return tuple(value)
    return (value,) * NUM_STAGES


class ArchSpec(BaseModel):
    """One network: block, block options, per-stage options, depths and widening factors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    block: str = "basic"  # a name in BLOCKS: basic, bottleneck, inverted_bottleneck, robust
    activation_order: Literal["pre", "post"] = "pre"
    conv_type: Literal["standard", "aggregated", "hierarchical", "both"] = "standard"
    cardinality: int = Field(
        1, ge=1, le=1024
    )  # groups of the kxk convs (conv_type aggregated|both)
    # Mid width of bottleneck blocks: floor(p * base_width / 64) * cardinality * scales
    # (bottleneck) or floor(p * base_width / 160) * cardinality * scales (robust); p = planes.
    base_width: int = Field(64, ge=1, le=4096)
    scales: int = Field(1, ge=1, le=64)  # Res2Net-style splits (conv_type hierarchical|both)
    se: Literal["none", "standard", "residual"] = "none"
    se_reduction: int = Field(16, ge=1, le=4096)
    expansion: int | None = Field(None, ge=1, le=64)  # unset / None: the block's own default
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    activation: tuple[str, str, str] = ("relu", "relu", "relu")
    norm: tuple[str, str, str] = ("batchnorm", "batchnorm", "batchnorm")
    depths: tuple[int, int, int] = (4, 4, 4)  # blocks per stage
    widths: tuple[float, float, float] = (10.0, 10.0, 10.0)  # widening factors W1..W3
    stem_channels: int = Field(16, ge=1, le=MAX_CHANNELS)
    num_classes: int = Field(10, ge=2, le=100_000)
    in_channels: int = Field(3, ge=1, le=64)
    input_mean: tuple[float, ...] | None = None  # in-model normalisation (pixel space outside)
    input_std: tuple[float, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _block_defaults(cls, data: Any) -> Any:
        """Fill the fields a user left unset from the block's own defaults (stored explicitly)."""
        if not isinstance(data, dict):
            return data
        name = data.get("block", "basic")
        if not isinstance(name, str) or name not in BLOCKS:
            return data  # check_spec reports the unknown name
        defaults = BLOCKS.get(name).defaults
        return {**defaults, **{k: v for k, v in data.items() if v is not None or k not in defaults}}

    _broadcast = field_validator(
        "kernel_size", "activation", "norm", "depths", "widths", mode="before"
    )(classmethod(lambda cls, v: _per_stage(v)))

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        for k in v:
            if k < 1 or k % 2 == 0 or k > MAX_KERNEL:
                raise ValueError(f"kernel sizes must be odd, from 1 to {MAX_KERNEL}, got {k}")
        return v

    @field_validator("depths")
    @classmethod
    def _positive_depth(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 1 for d in v):
            raise ValueError(f"every stage needs at least one block, got {list(v)}")
        if any(d > MAX_DEPTH for d in v):
            raise ValueError(f"at most {MAX_DEPTH} blocks per stage, got {list(v)}")
        return v

    @field_validator("widths")
    @classmethod
    def _positive_width(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(w <= 0 for w in v):
            raise ValueError(f"widening factors must be positive, got {list(v)}")
        if any(w > MAX_WIDTH for w in v):
            raise ValueError(f"widening factors must be at most {MAX_WIDTH:g}, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check_against_registries(self) -> ArchSpec:
        from sweeper.models import checks  # builds blocks on the meta device: imports torch

        checks.check_spec(self)
        return self

    def stage_planes(self) -> tuple[int, int, int]:
        """WRN convention: planes = [16*W1, 32*W2, 64*W3], rounded to whole channels."""
        return tuple(max(1, round(base * w)) for base, w in zip((16, 32, 64), self.widths))  # type: ignore[return-value]
