"""A block's `defaults` (what an ArchSpec fills in for keys left unset) and its `__init__`
defaults (what building the block directly uses) are two spellings of one choice: they
must agree, or a network built from a spec differs from the same block built by hand."""

from __future__ import annotations

import inspect

import pytest

from sweeper.models import BLOCKS


@pytest.mark.parametrize("name", sorted(BLOCKS.names()))
def test_a_blocks_defaults_are_its_init_defaults(name: str) -> None:
    block = BLOCKS.get(name)
    init = inspect.signature(block.__init__).parameters
    for key, value in block.defaults.items():
        assert key in init, f"{name}.defaults names {key}, which __init__ does not take"
        assert init[key].default == value, f"{name}: defaults[{key!r}] != __init__'s"


def test_the_robust_block_is_checked() -> None:
    assert BLOCKS.get("robust").defaults["se_reduction"] == 64
