"""Named ArchSpecs (presets); a preset states only what differs from the defaults."""

from __future__ import annotations

from typing import Any

from sweeper.models.spec import ArchSpec

PRESETS: dict[str, dict[str, Any]] = {
    "wrn-28-10": {"depths": (4, 4, 4), "widths": (10, 10, 10)},
}


def resolve_arch(value: str | dict[str, Any]) -> ArchSpec:
    """A preset name, or a dict with an optional `preset` key plus field overrides."""
    if isinstance(value, str):
        value = {"preset": value}
    fields = dict(value)
    name = fields.pop("preset", None)
    if name is not None:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from: {', '.join(sorted(PRESETS))}")
        fields = {**PRESETS[name], **fields}
    return ArchSpec(**fields)
