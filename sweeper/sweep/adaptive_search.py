"""The Ray Tune side of `run --order adaptive`: a Searcher that hands Tune a grid's pending
cells one at a time, in the order `sweeper.economics.adaptive.AdaptiveOrder` chooses from the
trials finished so far (this run's and earlier runs' rows), until every cell has run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
from ray.tune.search import Searcher

from sweeper import results
from sweeper.economics.adaptive import AdaptiveOrder
from sweeper.economics.match import identity_leaves
from sweeper.results.summary import write_summary

if TYPE_CHECKING:
    from sweeper.sweep.plan import Plan


class AdaptiveSearcher(Searcher):
    """Suggests {"trial": config JSON} for the next cell; the trainable runs it as a grid
    cell. Writes the surrogate's summary to the sweep folder every ~5% of the grid and at
    the end."""

    def __init__(self, plan: Plan, *, metric: str, mode: str, seed: int = 0) -> None:
        super().__init__(metric=metric, mode=mode)
        self.plan = plan
        self.configs = plan.configs
        self.order = AdaptiveOrder([identity_leaves(c) for c in self.configs], mode=mode, seed=seed)
        cell_of = {c.trial_id: i for i, c in enumerate(self.configs)}
        frame = results.read(plan.sweep_uri)
        values = pd.to_numeric(frame[metric], errors="coerce")
        for tid, status, value in zip(frame["trial_id"], frame["status"], values):
            if tid in cell_of and status == "ok" and pd.notna(value):
                self.order.observe(cell_of[tid], float(value))
        to_run = {c.trial_id for c in plan.to_run}
        for tid, cell in cell_of.items():
            if tid not in to_run and cell not in self.order.observed:
                self.order.drop(cell)  # done without a value, or failed (no --retry-failed)
        self.live: dict[str, int] = {}
        # a summary costs ~15 GP fits in the driver: every 5% of the grid (3 trials at least)
        self.every = max(3, len(self.configs) // 20)
        self.completed = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:  # fmt: skip
        return True  # metric and mode come from the space's `search:` section

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        cell = self.order.next()
        if cell is None:  # nothing left to start: wait for the running ones, then stop
            return None if self.order.running else Searcher.FINISHED
        self.live[trial_id] = cell
        return {"trial": self.configs[cell].model_dump_json()}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:  # fmt: skip
        cell = self.live.pop(trial_id, None)
        if cell is None:
            return
        value = (result or {}).get(self.metric)
        if not error and (result or {}).get("status") == "ok" and value is not None:
            self.order.observe(cell, float(value))
        else:
            self.order.drop(cell)
        self.completed += 1
        if self.completed % self.every == 0 or not (self.order.pending or self.order.running):
            self.write_summary()

    def write_summary(self) -> None:
        """The surrogate's view for `sweeper status` (never fails the sweep over it)."""
        try:
            summary = {"sweep": self.plan.space.name, "metric": self.metric, "mode": self.mode}
            summary.update(self.order.summary())
            write_summary(self.plan.sweep_uri, summary)
        except Exception:  # noqa: BLE001 - a status file must not stop a running sweep
            pass
