"""`run --subsample K --from CHEAP`: rerun a few cells of a cheap sweep at another fidelity.

The HIGH side of `sweeper fidelity` for a few percent of the cost: K finished trials of
the cheap sweep, spread evenly over the range of a metric, each rerun as the same network
and seed in the space being run (its train/eval values, e.g. `--set train.epochs=100`).
The choice is a pure function of the cheap rows, K, the metric and a seed, so rerunning
the same command picks the same cells and the runner skips those already done. No Ray.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from sweeper import results
from sweeper.config import TrialConfig
from sweeper.economics.match import identity_leaves, match_keys, matched, studies
from sweeper.errors import SweeperError


def stratified(values: np.ndarray, k: int, seed: int = 0) -> list[int]:
    """Indices of k values spread evenly over their range: one drawn at random from each of
    k equal-width bins of [min, max]; slots of empty bins go to the values farthest from
    those already picked (so gaps fill before crowded bins). Deterministic given `seed`."""
    values = np.asarray(values, float)
    if not 0 < k <= len(values):
        raise ValueError(f"k must be in 1..{len(values)}, got {k}")
    rng = np.random.default_rng(seed)
    lo, hi = float(values.min()), float(values.max())
    width = (hi - lo) / k
    bins = (
        np.minimum(((values - lo) / width).astype(int), k - 1)
        if width > 0
        else np.zeros(len(values), int)
    )
    picked = [int(rng.choice(np.flatnonzero(bins == b))) for b in range(k) if (bins == b).any()]
    while len(picked) < k:
        gap = np.abs(values[:, None] - values[picked][None, :]).min(axis=1)
        gap[picked] = -1.0
        picked.append(int(np.argmax(gap)))  # ties: the first in the source's order
    return sorted(picked)


def subsample_cells(
    configs: list[TrialConfig],
    source: pd.DataFrame,
    k: int,
    *,
    metric: str = "cw_acc",
    seed: int = 0,
    study: str | None = None,
    name: str = "--from",
) -> list[TrialConfig]:
    """The k cells of `configs` whose network and seed match finished rows of `source`,
    chosen by `stratified` over those rows' `metric`."""
    if metric not in source:
        raise SweeperError(f"{name}: no column {metric!r} in the results")
    ok = source[(source["status"] == "ok") & pd.to_numeric(source[metric], errors="coerce").notna()]
    if ok.empty:
        raise SweeperError(f"{name}: no finished trial with a value of {metric}")
    found = studies(ok)
    if study is not None and found != [study]:
        raise SweeperError(f"{name} holds study {', '.join(found)}, not {study!r}")
    ok = ok.reset_index(drop=True)
    cells = [identity_leaves(c) for c in configs]
    rows = [identity_leaves(c) for c in ok["config"]]
    (cell_keys, row_keys), _ = match_keys(cells, rows)
    candidates = matched(row_keys, cell_keys)
    if not candidates:
        raise SweeperError(
            f"{name}: none of its {len(ok)} finished trials is a network and seed of this "
            "space (other architectures or data?)"
        )
    if k > len(candidates):
        raise SweeperError(
            f"--subsample {k}: {name} has only {len(candidates)} finished trials that are "
            "cells of this space"
        )
    values = ok[metric].to_numpy(float)[[i for i, _ in candidates]]
    return [configs[candidates[j][1]] for j in stratified(values, k, seed)]


def subsample_selector(
    source_uri: str, k: int, *, metric: str, seed: int, study: str
) -> Callable[[list[TrialConfig]], list[TrialConfig]]:
    """A plan's `select`: the space's configs -> the k subsampled cells (reads the rows once)."""
    source = results.read(source_uri)
    if source.empty:
        raise SweeperError(f"--from {source_uri}: no result rows there")

    def select(configs: list[TrialConfig]) -> list[TrialConfig]:
        return subsample_cells(
            configs, source, k, metric=metric, seed=seed, study=study, name=f"--from {source_uri}"
        )

    return select
