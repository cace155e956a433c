"""Which trials of two sweeps are the same network trained at two fidelities.

A study rerun at another fidelity (more epochs, a stop epoch, more attack steps, another
training method) changes only `train.*` and `eval.*` values of its trials; the rest of a
trial's identity (seed, macs_target, arch.*, data.*) says which network was trained on
which task, and must agree. So the matching key of a trial is its identity minus the
*fidelity keys*: the train.* / eval.* values that are constant within each side. A
train/eval value that varies within a side (a learning-rate study) is one of the study's
factors, not a fidelity, and stays in the key. Matching on the config JSON rather than
on the row's columns keeps settings without a column (SE reduction, cardinality) apart.

Stored configs are laid over the defaults of every TrialConfig field, so that rows written
before a field existed still match rows written after (validating each stored config
instead would build its network: 30 ms a row).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from sweeper.config import NOT_IDENTITY, TrialConfig
from sweeper.space.paths import flatten

FIDELITY_SECTIONS = ("train.", "eval.")
_MISSING = "\x00missing"


@functools.cache
def _default_leaves() -> dict[str, Any]:
    return flatten(TrialConfig().identity(), lists=True)


def identity_leaves(config: TrialConfig | str | dict[str, Any] | None) -> dict[str, Any]:
    """A trial's identity (no sweep, study or runtime) as flat dotted leaves, over the
    defaults of every field (a row written before a field existed gets its default)."""
    raw: Any = config.identity() if isinstance(config, TrialConfig) else config
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if not isinstance(raw, dict):
        raw = {}
    kept = {k: v for k, v in raw.items() if k not in NOT_IDENTITY}
    return {**_default_leaves(), **flatten(kept, lists=True)}


def _canon(value: Any) -> str:
    """A leaf's value as comparable text (10 and 10.0 are one width)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, default=str)


def _varying(side: Sequence[dict[str, Any]]) -> set[str]:
    keys = {k for leaves in side for k in leaves}
    return {k for k in keys if len({_canon(leaves.get(k, _MISSING)) for leaves in side}) > 1}


def fidelity_keys(*sides: Sequence[dict[str, Any]]) -> list[str]:
    """The train.* / eval.* leaves constant within every side (they may differ between sides)."""
    varying = set().union(*(_varying(s) for s in sides))
    keys = {k for side in sides for leaves in side for k in leaves}
    return sorted(k for k in keys if k.startswith(FIDELITY_SECTIONS) and k not in varying)


def _digest(leaves: dict[str, Any], drop: Iterable[str]) -> str:
    dropped = set(drop)
    blob = "|".join(f"{k}={_canon(v)}" for k, v in sorted(leaves.items()) if k not in dropped)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def match_keys(*sides: Sequence[dict[str, Any]]) -> tuple[list[list[str]], list[list[str]]]:
    """Per side, each trial's (trial key, network key): the identity minus the fidelity keys,
    with and without the seed. Equal trial keys on two sides are one network and seed at two
    fidelities; equal network keys are one network (seeds may differ)."""
    drop = fidelity_keys(*sides)
    trials = [[_digest(leaves, drop) for leaves in side] for side in sides]
    networks = [[_digest(leaves, [*drop, "seed"]) for leaves in side] for side in sides]
    return trials, networks


def matched(keys: Sequence[str], others: Sequence[str]) -> list[tuple[int, int]]:
    """(i, j) for each of `keys` that `others` holds too (at its place j there), in the order
    of `keys`: the trials of one side that are a network and seed of the other."""
    where = {key: j for j, key in enumerate(others)}
    return [(i, where[key]) for i, key in enumerate(keys) if key in where]


def fidelity_changes(low: Sequence[dict[str, Any]], high: Sequence[dict[str, Any]]) -> dict:
    """The fidelity keys whose value differs between the sides: {key: (low, high)}."""
    out = {}
    for key in fidelity_keys(low, high):
        a = next((leaves.get(key, None) for leaves in low), None)
        b = next((leaves.get(key, None) for leaves in high), None)
        if a != b:
            out[key] = (a, b)
    return out


def studies(rows: pd.DataFrame) -> list[str]:
    """The studies a frame's rows belong to: their `study` column, else (rows written before
    the column existed) their `sweep`."""
    study = rows["study"] if "study" in rows else pd.Series(None, index=rows.index, dtype=object)
    named = study.where(study.notna(), rows["sweep"]) if "sweep" in rows else study
    return sorted({str(s) for s in named.dropna()})
