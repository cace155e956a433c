"""`run --order adaptive`: run a big grid's cells in the order most likely to settle it early.

The choice rule (no Ray here; `sweeper.sweep.adaptive_search` wraps it as a Tune Searcher):
- First a space-filling start: while fewer than `initial` cells are finished or running,
  the next cell is the one farthest (in standardised features) from every cell already
  run or running, starting at the grid's centre.
- Then a Gaussian-process surrogate (`sweeper.economics.surrogate`) of the metric, refitted
  as rows arrive, scores every pending cell by the probability that its true value beats
  the surrogate's current predicted best, i.e. that running it changes the conclusion
  "this is the best network". That probability is high near the predicted best (the best
  itself scores 1/2) and where the surrogate is unsure. Running cells count as finished at
  their predicted value (the "kriging believer"), so concurrent trials spread out.
Nothing is ever skipped: the order only changes which cells run first, and the whole grid
runs unless someone stops it. `summary()` says what a stop now would conclude, and how sure
that is (posterior probabilities), for `sweeper status`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from scipy import stats

from sweeper.economics.surrogate import (
    MIN_FIT,
    Surrogate,
    cells_from_leaves,
    conclusion,
    cv_rank_correlation,
)

REOPTIMIZE = 1.1  # re-estimate the kernel once the finished cells grew by 10%


class AdaptiveOrder:
    """Which pending cell of a grid to run next, from the cells finished so far."""

    def __init__(
        self,
        leaves: Sequence[dict[str, Any]],
        *,
        mode: str = "max",
        initial: int | None = None,
        seed: int = 0,
    ) -> None:
        self.cells = cells_from_leaves(leaves)
        self.sign = 1.0 if mode == "max" else -1.0
        self.mode = mode
        self.seed = seed
        dims = self.cells.x.shape[1]
        self.initial = max(MIN_FIT, initial if initial is not None else max(8, 2 * dims + 2))
        self.pending = set(range(len(leaves)))
        self.running: set[int] = set()
        self.observed: dict[int, float] = {}  # cell -> metric (as reported)
        self.surrogate: Surrogate | None = None
        self._fitted_on = 0

    # --- bookkeeping -----------------------------------------------------------------------
    def observe(self, cell: int, value: float) -> None:
        """A cell finished with a value of the metric."""
        self.running.discard(cell)
        self.pending.discard(cell)
        self.observed[cell] = float(value)

    def drop(self, cell: int) -> None:
        """A cell finished without a value (failed): neither a data point nor run again."""
        self.running.discard(cell)
        self.pending.discard(cell)

    # --- the choice ------------------------------------------------------------------------
    def next(self) -> int | None:
        """The next cell to run (marked running), or None when none is left to start."""
        free = sorted(self.pending - self.running)
        if not free:
            return None
        if len(self.observed) < MIN_FIT or len(self.observed) + len(self.running) < self.initial:
            cell = self._farthest(free)
        else:
            cell = free[int(np.argmax(self.scores(free)))]
        self.running.add(cell)
        return cell

    def _farthest(self, free: list[int]) -> int:
        x = self.cells.x
        taken = sorted(set(self.observed) | self.running)
        if not taken:
            return free[int(np.argmin(np.linalg.norm(x[free] - x.mean(axis=0), axis=1)))]
        gaps = np.linalg.norm(x[free][:, None, :] - x[taken][None, :, :], axis=2).min(axis=1)
        return free[int(np.argmax(gaps))]

    def fit(self) -> Surrogate:
        """The surrogate on the finished cells (kernel re-estimated as the data grow)."""
        index = sorted(self.observed)
        y = [self.sign * self.observed[i] for i in index]
        optimize = self.surrogate is None or len(index) >= REOPTIMIZE * self._fitted_on
        if self.surrogate is None:
            self.surrogate = Surrogate(self.cells, self.seed)
        self.surrogate.fit(index, y, optimize=optimize)
        if optimize:
            self._fitted_on = len(index)
        return self.surrogate

    def scores(self, free: Sequence[int]) -> np.ndarray:
        """P(true value of each free cell > the predicted best), running cells believed."""
        model = self.fit()
        if self.running:  # condition on running cells at their predicted values
            mu = model.predict()[0]
            index = sorted(self.observed) + sorted(self.running)
            y = [self.sign * self.observed[i] for i in sorted(self.observed)]
            y += [float(mu[i]) for i in sorted(self.running)]
            model = Surrogate(self.cells, self.seed)
            model.kernel = self.surrogate.kernel if self.surrogate else None
            model.fit(index, y, optimize=False)
        mu, sd = model.predict()
        best = float(mu.max())
        free = np.asarray(free, int)
        return stats.norm.cdf((mu[free] - best) / np.maximum(sd[free], 1e-12))

    # --- what a stop now would conclude ----------------------------------------------------
    def summary(self, *, samples: int = 500, bags: int = 10) -> dict[str, Any]:
        """Cells run, the surrogate's cross-validated rank correlation and its predicted
        conclusion with probabilities (`sweeper.economics.surrogate.conclusion`: pooled over
        a bootstrap ensemble of GPs); only counts before a GP can be fitted."""
        out: dict[str, Any] = {
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cells": len(self.cells.labels),
            "finished": len(self.observed),
            "running": len(self.running),
            "failed": len(self.cells.labels) - len(self.pending) - len(self.observed),
            "surrogate": "GP (scikit-learn, Matern 5/2 ARD + noise)",
            "cv_spearman": None,
        }
        if len(self.observed) < MIN_FIT:
            return out
        index = sorted(self.observed)
        y = [self.observed[i] for i in index]
        out["cv_spearman"] = cv_rank_correlation(self.cells, index, y, seed=self.seed)
        concl = conclusion(
            self.cells, index, y, mode=self.mode, samples=samples, bags=bags, seed=self.seed
        )
        concl["best"]["finished"] = concl["best"]["index"] in self.observed
        out.update(concl)
        out["risk"] = 1.0 - concl["best"]["probability"]
        return out
