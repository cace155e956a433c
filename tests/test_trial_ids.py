"""Trial ids of the packaged studies are how finished rows are found again (resume, status,
reports across runs): a refactor that changes them silently reruns every study. The first
cells of each study, first seed, pinned as computed before the identity hash moved to one
helper (2026-12-06)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sweeper.analysis import synthetic
from sweeper.config import NOT_IDENTITY, TrialConfig, identity_hash
from sweeper.space import load
from sweeper.space.expansion import cells, resolve_cell
from sweeper.trial import run_trial

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
PINNED = {
    "activation": ["dabbe96dde537c26", "4c2c750926a0cc1a", "82e2d9fc4e4ca682"],
    "at_methods": ["72db46152d295a30", "1e8afe8a378d5104", "dabbe96dde537c26"],
    "block_in_wrn": ["dabbe96dde537c26", "9b0451ae6fe3eeda", "8260083af767301e"],
    "block_topology": ["7e515961b01c54fa", "801ab62074bda8b5", "c52449c48a3e6c02"],
    # issue 20 redesigned depth (W 8), compound (two budgets), kernel_size (kernel only) and
    # conv_type (no basic-block arms); the old grids keep their ids as compound_wide and
    # kernel_size_matched (the same first cells as the old compound and kernel_size)
    "compound": ["0c603d8a1bf4e015", "eb3d26bddc7bb49b", "87b00cc06dc2f694"],
    "compound_wide": ["0c603d8a1bf4e015", "eb3d26bddc7bb49b", "dcd19a2cf9d8e11a"],
    "conv_type": ["c52449c48a3e6c02", "e39baad086931176", "cd3732599a36189f"],
    "depth": ["8665db05d0dacf8c", "1b7cbf7b8a1e43bb", "b2baa929bddfcf28"],
    "kernel_size": ["dabbe96dde537c26", "77be11b21747293a", "ec7b7a3f8341d009"],
    "kernel_size_matched": ["7e515961b01c54fa", "ff66b040bc8b409c", "7e734b89d7d48c20"],
    "normalization": ["dabbe96dde537c26", "d15c35549b5d1e50", "40de6cab36d3a64d"],
    "robustresnets": ["3f34ed9546d732c8", "cdee303d9600a8cb", "de09666f571a7d62"],
    "scaling_rules": ["9839783f01458b53", "1f3495be32e47b5c", "844f1ee8e2a547df"],
    "se": ["7e515961b01c54fa", "042e56705e87c6a1", "a0bb842e670aaf1c"],
    "smoke": ["1755f22813fed711", "44e5e9bf3f8c7bac", "db64701dd7a28e00"],
    "threat_models": ["639c860e20fcc441", "0d984414c5550cd1", "da8171806f002428"],
    "width": ["b42b003c58171b1a", "d2af9bea90fb4a9f", "0619ce89a6f70510"],
}


def test_every_packaged_study_is_pinned() -> None:
    assert {p.stem for p in SPACES.glob("[!_]*.yaml")} == set(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_packaged_studies_keep_their_trial_ids(name: str) -> None:
    space = load(SPACES / f"{name}.yaml")
    configs = [resolve_cell(space, cell, space.doc.seeds[0]) for cell in cells(space)[:3]]
    assert [c.trial_id for c in configs if c is not None] == PINNED[name]


def test_the_id_is_sha256_of_the_identitys_compact_sorted_json() -> None:
    """The definition, spelled out once here so that the helper cannot drift from it."""
    config = TrialConfig(sweep="a", study="b")
    blob = json.dumps(config.identity(), sort_keys=True, separators=(",", ":"))
    assert config.trial_id == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert config.trial_id == TrialConfig(sweep="other", study="other").trial_id



def test_an_invalid_config_gets_the_id_of_its_identity() -> None:
    """A failed row of a config that did not validate: the same hash over what it holds."""
    raw = {"sweep": "s", "seed": 3, "arch": {"depths": "not a list"}}
    row = run_trial(raw)
    assert row["status"] == "failed" and row["trial_id"] == identity_hash(
        {k: v for k, v in raw.items() if k not in NOT_IDENTITY}
    )


def test_synthetic_rows_carry_the_id_of_their_own_config() -> None:
    row = synthetic.make_row("s", 0, cw=0.5)
    config = json.loads(row["config"])
    assert row["trial_id"] == identity_hash(
        {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    )
