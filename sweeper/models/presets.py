"""Named ArchSpecs (presets); a preset states only what differs from the defaults.

`block: robust` alone is the paper's RobustResBlock (scales 8, base_width 10,
cardinality 4, residual SE with reduction 64, expansion 4): those values are the block's
own defaults (`RobustResBlock.defaults`), filled into the spec when left unset.
"""

from __future__ import annotations

from typing import Any

from sweeper.models.spec import ArchSpec


def _wrn(depth: int, width: float) -> dict[str, Any]:
    """WRN-depth-width: (depth - 4) / 6 basic blocks per stage."""
    n = (depth - 4) // 6
    return {"depths": (n, n, n), "widths": (width, width, width)}


# The RobustScaling points of the paper (A1..A4 at about 5, 10, 20, 40 GMACs).
_SCALED: dict[str, dict[str, Any]] = {
    "a1": {"depths": (14, 14, 7), "widths": (5, 7, 3)},
    "a2": {"depths": (17, 17, 8), "widths": (7, 9, 4)},
    "a3": {"depths": (22, 22, 11), "widths": (8, 11, 5)},
    "a4": {"depths": (27, 28, 13), "widths": (10, 14, 6)},
}

PRESETS: dict[str, dict[str, Any]] = {
    "wrn-28-10": _wrn(28, 10),
    "wrn-34-10": _wrn(34, 10),
    "wrn-34-12": _wrn(34, 12),
    "wrn-46-14": _wrn(46, 14),
    "wrn-70-16": _wrn(70, 16),
    **{f"wrn-{k}": dict(v) for k, v in _SCALED.items()},
    **{f"robustresnet-{k}": {"block": "robust", **v} for k, v in _SCALED.items()},
    "wrn-28-10-rrb": {"block": "robust", **_wrn(28, 10)},
}


def resolve_arch(value: str | dict[str, Any] | ArchSpec) -> ArchSpec:
    """A preset name, or a dict with an optional `preset` key plus field overrides."""
    if isinstance(value, ArchSpec):
        return value
    if isinstance(value, str):
        value = {"preset": value}
    fields = dict(value)
    name = fields.pop("preset", None)
    if name is not None:
        if name not in PRESETS:
            raise ValueError(
                f"preset: unknown preset {name!r}; choose from: {', '.join(sorted(PRESETS))}"
            )
        fields = {**PRESETS[name], **fields}
    return ArchSpec(**fields)
