"""Which trial starts next when one sweep mixes trial sizes: a Tune Searcher that never lets
a multi-worker trial starve.

How Ray places the two kinds (Ray 2.60): a one-worker trial is a Tune trial that reserves its
GPU share (`--gpus-per-trial`, e.g. 0.25) in a placement group Tune requests for it. A
multi-worker trial is a Tune trial that reserves almost nothing itself (it only drives) and
whose Ray Train workers reserve one GPU each in a placement group of their own (PACK: one
node when they fit, several when not; sweeper.sweep.workers). Both kinds of placement group
wait in the same queue of the GCS, which retries a group that did not fit with an
exponential backoff while newer groups go first: a stream of small trials, each fitting in
the share the previous one freed, can keep a 4-GPU group waiting until the stream dries up
(and Tune's actor reuse hands a finished small trial's GPU share straight to the next).

So a sweep that holds multi-worker trials starts its trials through this searcher:
- in the plan's order with the most workers first: big trials take the cluster while it is
  empty, small ones fill what is left;
- no further trial starts while a multi-worker trial waits for its workers (it reports
  `workers_ready` once they all run): its placement group is then the only new request, and
  it takes the GPUs as the running trials free them. No trial waits behind one that came later.
The price: while a big trial waits, GPU shares freed meanwhile stay idle (no backfill), for
at most the time the running trials take to free enough GPUs. The runner also turns off
Tune's actor reuse for such sweeps, so a finished trial's GPU share goes back to the pool.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from sweeper.config import TrialConfig
from sweeper.sweep.workers import WORKERS_READY


class BigFirst(Searcher):
    """Hands out `configs` as Tune configs ({"trial": json}), most workers first, holding the
    next one back while a multi-worker trial it started waits for its workers."""

    def __init__(self, configs: list[TrialConfig], *, metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self._queue = sorted(configs, key=lambda c: -c.runtime.workers)  # stable: plan order
        self._waiting: set[str] = set()  # Tune trial ids of multi-worker trials not yet running

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self._queue:
            return Searcher.FINISHED
        if self._waiting:
            return None  # Tune asks again later
        config = self._queue.pop(0)
        if config.runtime.workers > 1:
            self._waiting.add(trial_id)
        return {"trial": config.model_dump_json()}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if result.get(WORKERS_READY):
            self._waiting.discard(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:  # fmt: skip
        self._waiting.discard(trial_id)
