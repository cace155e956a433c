"""Cross-field checks of an ArchSpec (names in registries, group divisibility)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweeper.models.spec import ArchSpec


def check_spec(spec: ArchSpec) -> None:
    """Raise ValueError naming the field for anything that cannot be built."""
    # Filled in by the model builder: block/activation/norm names, divisibility.
