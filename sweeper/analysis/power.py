"""Statistical power of a study: the smallest difference between two cells it resolves.

A dry run should say which of a study's contrasts it can tell apart before any GPU time is
spent. The model, stated once:

- a trial's score (in percentage points) is its cell's true accuracy p, plus a training-seed
  effect with spread `seed_sd`, plus evaluation noise: accuracy on n test images, a
  binomial proportion with variance p(1 - p) / n;
- a cell's estimate is the mean over its `seeds` trials; two cells are compared with a
  two-sided z-test at `alpha`, their noise taken as independent. Both cells are scored on
  the same test images, whose errors partly agree, so this overstates the noise of a
  difference a little: the figure is conservative.

The detectable difference is then (z[1 - alpha/2] + z[power]) * sqrt(2 * var / seeds),
var = seed_sd^2 + p(1 - p) / n. The seed spread is estimated from an earlier sweep's rows
where one is given (the pooled within-cell variance of cells with two or more seeds,
less the binomial part of those rows' own evaluation size); otherwise DEFAULT_SEED_SD.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from sweeper.config import DataConfig, TrialConfig

METRICS = ("clean_acc", "pgd_acc", "cw_acc", "aa_acc")
ALPHA = 0.05
POWER = 0.8
# Assumed spread of a metric between training seeds of one network, in points, when no
# earlier rows say: adversarially trained CIFAR-10 networks typically differ by 0.2-0.5
# points between seeds; the larger end is taken. `--from` an earlier sweep replaces it.
DEFAULT_SEED_SD = 0.5
# Assumed accuracies (fractions) for the binomial term when no rows say: a TRADES
# WRN-28-10's clean / PGD-20 / CW-40 / AutoAttack level on CIFAR-10. p(1 - p) moves little
# near 0.5, so these matter less than the sizes.
DEFAULT_ACC = {"clean_acc": 0.84, "pgd_acc": 0.55, "cw_acc": 0.53, "aa_acc": 0.51}
TEST_SPLIT = {"cifar10": 10_000, "cifar100": 10_000, "digits": 360}  # digits: 20% of 1797


def test_split_size(data: DataConfig) -> int:
    """Images clean / PGD / CW accuracy are measured on: `data.test_size` or the split."""
    full = data.synthetic_test if data.dataset == "synthetic" else TEST_SPLIT[data.dataset]
    return min(data.test_size or full, full)


def eval_sizes(cfg: TrialConfig) -> dict[str, int]:
    """Images each metric is measured on (0: not measured)."""
    n = test_split_size(cfg.data)
    return {"clean_acc": n, "pgd_acc": n, "cw_acc": n, "aa_acc": min(cfg.eval.aa_size, n)}


def detectable_difference(
    n_images: int, seeds: int, seed_sd: float, acc: float, *, alpha: float = ALPHA,
    power: float = POWER,
) -> float | None:  # fmt: skip
    """Smallest true difference (points) between two cells of `seeds` trials each, every
    trial scored on `n_images` images, found at `power` by a two-sided test at `alpha`."""
    if n_images <= 0 or seeds <= 0:
        return None
    return (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * cell_se(
        n_images, seeds, seed_sd, acc
    ) * math.sqrt(2)  # fmt: skip


def cell_se(n_images: int, seeds: int, seed_sd: float, acc: float) -> float:
    """Standard error (points) of a cell's mean score under the model above."""
    var = seed_sd**2 + 1e4 * acc * (1 - acc) / n_images
    return math.sqrt(var / seeds)


@dataclass
class Spread:
    """Per metric: the seed-to-seed spread (points) and accuracy level (fraction) used."""

    seed_sd: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(METRICS, DEFAULT_SEED_SD)
    )
    acc: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ACC))
    source: dict[str, str] = field(default_factory=lambda: dict.fromkeys(METRICS, "default"))


def spread_from_rows(rows: pd.DataFrame) -> Spread:
    """The seed spread of each metric in an earlier sweep's ok rows (cells with 2+ seeds),
    less the binomial part of those rows' evaluation; the default where rows cannot say."""
    out = Spread()
    if rows is None or rows.empty or "config" not in rows:
        return out
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    configs = [TrialConfig.model_validate_json(c) for c in ok["config"]]
    cells = [json.dumps({k: v for k, v in c.identity().items() if k != "seed"}, sort_keys=True)
             for c in configs]  # fmt: skip
    sizes = [eval_sizes(c) for c in configs]
    for m in METRICS:
        if m not in ok:
            continue
        frame = pd.DataFrame({"cell": cells, "x": 100 * pd.to_numeric(ok[m], errors="coerce"),
                              "n": [s[m] for s in sizes]}).dropna()  # fmt: skip
        frame = frame[frame["n"] > 0]
        if frame.empty:
            continue
        out.acc[m] = float(frame["x"].mean() / 100)
        groups = frame.groupby("cell")
        dof = int((groups.size() - 1).clip(lower=0).sum())
        if dof < 1:
            continue
        pooled = float(groups["x"].var(ddof=1).fillna(0).mul(groups.size() - 1).sum() / dof)
        binom = 1e4 * out.acc[m] * (1 - out.acc[m]) / float(frame["n"].mean())
        out.seed_sd[m] = math.sqrt(max(0.0, pooled - binom))
        out.source[m] = f"rows ({dof} degrees of freedom)"
    return out


def seeds_per_cell(configs: Iterable[TrialConfig]) -> int:
    """The fewest trials any cell of a study has (its seeds; 0 for no trials)."""
    counts: dict[str, int] = {}
    for c in configs:
        key = json.dumps({k: v for k, v in c.identity().items() if k != "seed"}, sort_keys=True)
        counts[key] = counts.get(key, 0) + 1
    return min(counts.values(), default=0)


def study_power(configs: list[TrialConfig], spread: Spread | None = None) -> dict[str, Any]:
    """`detectable_difference` per metric (points, None where a metric is not measured)
    for a study's configs, with what it was computed from."""
    spread = spread or Spread()
    seeds = seeds_per_cell(configs)
    sizes = {m: min((eval_sizes(c)[m] for c in configs), default=0) for m in METRICS}
    found = {m: detectable_difference(sizes[m], seeds, spread.seed_sd[m], spread.acc[m])
             for m in METRICS}  # fmt: skip
    return {
        "detectable_difference": {m: None if v is None else round(v, 2) for m, v in found.items()},
        "power": {
            "power": POWER, "alpha": ALPHA, "test": "two-sided", "seeds_per_cell": seeds,
            "images": sizes, "seed_sd": {m: round(v, 3) for m, v in spread.seed_sd.items()},
            "seed_sd_from": spread.source,
        },
    }  # fmt: skip


def resolved(delta: float, detectable: float | None) -> bool | None:
    """Whether an observed difference reaches the study's detectable difference (such a
    difference is also significant at alpha); None where no figure exists."""
    if detectable is None or not np.isfinite(delta):
        return None
    return bool(abs(delta) >= detectable)
