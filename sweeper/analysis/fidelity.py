"""Does a cheap schedule rank a study's networks the way the full one does?

`compare(low, high)` takes the rows of one study at two fidelities (schedule length, stop
epoch, attack steps, training method) and answers with numbers a reader can act on:

- Matching (sweeper.economics.match): a trial of LOW and one of HIGH are the same network
  and seed when their identities agree on everything but the fidelity keys, i.e. the
  train.* / eval.* values constant within each side. Seeds are then averaged per network
  (the same seeds on both sides), so every statistic has one point per network.
- Kendall tau-b and Spearman rho of the per-network metric (scipy.stats), each with a
  95% BCa bootstrap interval (scipy.stats.bootstrap, 2000 resamples): networks are
  resampled with replacement, a network's LOW and HIGH values together (paired), since
  the network is the unit that was sampled. BCa rather than the percentile interval
  because a rank correlation near 1 has a skewed, biased sampling distribution; on
  planted correlations of 0.6 and 0.95 its coverage is close to 95% (tests/test_fidelity.py).
- Top-k overlap (k = 5 and 10% of the networks): how many of LOW's k best are HIGH's k best.
- Conclusions: what the study would report, at each fidelity, on the matched networks
  only: the best network; per factor (sweeper.analysis.tables.study_factors) its best
  and worst variant and the sign of each variant's effect against the baseline; for a
  compound study the fitted depth share (sweeper.analysis.scaling.fit_scaling) with its interval,
  "same" when both fidelities find an interior optimum and the intervals overlap.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.tables import (
    fmt_value,
    ok_rows,
    study_factors,
    to_markdown,
    variant_table,
    with_factor_columns,
)
from sweeper.economics.match import (
    fidelity_changes,
    identity_leaves,
    match_keys,
    matched,
    studies,
)
from sweeper.economics.surrogate import cells_from_leaves
from sweeper.errors import SweeperError

MIN_NETWORKS = 3  # fewer matched networks leave no ranking worth a correlation
RESAMPLES = 2000
_SKIP_FACTORS = ("macs_target", "depth_share")  # compound studies: the scaling fit's job


@dataclass
class Conclusion:
    name: str
    low: str
    high: str
    same: bool

    def to_json(self) -> dict[str, Any]:
        return {"conclusion": self.name, "low": self.low, "high": self.high, "same": self.same}


@dataclass
class FidelityCheck:
    """The comparison of one study at two fidelities (see the module docstring)."""

    study: str
    metric: str
    n: int  # matched networks: the unit of every statistic
    trials: int  # matched (network, seed) pairs
    low_only: int  # ok trials of LOW with no match in HIGH
    high_only: int
    changes: dict[str, tuple[Any, Any]]  # fidelity key -> (LOW value, HIGH value)
    kendall_tau: float
    kendall_ci: tuple[float, float]
    spearman_rho: float
    spearman_ci: tuple[float, float]
    topk: list[dict[str, Any]]
    conclusions: list[Conclusion]
    pairs: pd.DataFrame = field(repr=False)  # network label, low, high (one row per network)
    resamples: int = RESAMPLES

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "metric": self.metric,
            "n": self.n,
            "trials": self.trials,
            "low_only": self.low_only,
            "high_only": self.high_only,
            "fidelity": {k: {"low": a, "high": b} for k, (a, b) in self.changes.items()},
            "kendall_tau": _num(self.kendall_tau),
            "kendall_ci": [_num(v) for v in self.kendall_ci],
            "spearman_rho": _num(self.spearman_rho),
            "spearman_ci": [_num(v) for v in self.spearman_ci],
            "bootstrap": {"method": "BCa", "resamples": self.resamples, "unit": "network"},
            "topk": self.topk,
            "conclusions": [c.to_json() for c in self.conclusions],
            "same": sum(c.same for c in self.conclusions),
        }


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def _usable(rows: pd.DataFrame, name: str, metric: str) -> pd.DataFrame:
    if metric not in rows:
        raise SweeperError(f"{name}: no column {metric!r} in the results")
    ok = ok_rows(rows)
    ok = ok[pd.to_numeric(ok[metric], errors="coerce").notna()]
    if ok.empty:
        raise SweeperError(f"{name}: no ok rows with a value of {metric} ({len(rows)} rows)")
    return ok.reset_index(drop=True)


def _study(rows: pd.DataFrame, name: str) -> str:
    sweeps = sorted(rows["sweep"].dropna().astype(str).unique()) if "sweep" in rows else []
    if len(sweeps) > 1:  # e.g. a results root holding the study at both fidelities
        shown = ", ".join(sweeps[:5]) + (", ..." if len(sweeps) > 5 else "")
        raise SweeperError(f"{name} holds several sweeps ({shown}): give one sweep's folder")
    found = studies(rows)
    if len(found) != 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise SweeperError(
            f"{name} holds rows of several studies ({shown}): give one sweep's folder"
        )
    return found[0]


def pair_rows(
    low: pd.DataFrame,
    high: pd.DataFrame,
    metric: str = "cw_acc",
    names: tuple[str, str] = ("LOW", "HIGH"),
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, tuple[Any, Any]], str]:
    """The matched trials of each side (aligned row by row, with `network` and `label`
    columns), the fidelity keys that differ, and the study. Raises SweeperError on bad input."""
    low, high = _usable(low, names[0], metric), _usable(high, names[1], metric)
    study_low, study_high = _study(low, names[0]), _study(high, names[1])
    if study_low != study_high:
        raise SweeperError(
            f"{names[0]} is study {study_low!r} and {names[1]} is study {study_high!r}: "
            "a fidelity check compares one study at two fidelities"
        )
    shared = set(low["trial_id"]) & set(high["trial_id"])
    if shared:
        raise SweeperError(
            f"{names[0]} and {names[1]} share {len(shared)} trial(s) (the same config): "
            "a fidelity check needs the study at two different fidelities"
        )
    leaves = [[identity_leaves(c) for c in side["config"]] for side in (low, high)]
    (trial_low, trial_high), (net_low, net_high) = match_keys(*leaves)
    for name, keys in zip(names, (trial_low, trial_high)):
        repeated = len(keys) - len(set(keys))
        if repeated:
            raise SweeperError(
                f"{name}: {repeated} trial(s) repeat a network and seed of another (rows of "
                "one study at two fidelities in one folder?): give one sweep's folder"
            )
    pairs = matched(trial_low, trial_high)
    if not pairs:
        raise SweeperError(
            f"no trial of {names[0]} ({len(low)} ok) is a network and seed of {names[1]} "
            f"({len(high)} ok): nothing to compare"
        )
    li, hi = (list(ix) for ix in zip(*pairs))
    # what varies among the matched networks of one side (its fidelity keys are constant)
    labels = cells_from_leaves([leaves[0][i] for i in li]).labels
    out = []
    for side, index, nets in ((low, li, net_low), (high, hi, net_high)):
        part = side.iloc[index].reset_index(drop=True)
        part["network"] = [nets[i] for i in index]
        part["label"] = labels
        out.append(part)
    return out[0], out[1], fidelity_changes(leaves[0], leaves[1]), study_low


def rank_correlations(
    low: np.ndarray, high: np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Kendall tau-b and Spearman rho with 95% BCa intervals from a paired bootstrap over
    the points: {"kendall": (tau, lo, hi), "spearman": (rho, lo, hi)}."""
    from scipy import stats

    low, high = np.asarray(low, float), np.asarray(high, float)

    def both(index: np.ndarray) -> np.ndarray:
        x, y = low[index], high[index]
        return np.array([stats.kendalltau(x, y).statistic, stats.spearmanr(x, y).statistic])

    estimate = both(np.arange(len(low)))
    ci = np.full((2, 2), np.nan)
    if len(low) >= MIN_NETWORKS and resamples > 0:
        with warnings.catch_warnings():  # constant resamples: NaN, handled below
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                (np.arange(len(low)),),
                both,
                vectorized=False,
                method="BCa",
                n_resamples=resamples,
                confidence_level=0.95,
                rng=np.random.default_rng(seed),
            )
        ci = np.array([result.confidence_interval.low, result.confidence_interval.high]).T
        for j in range(2):  # all resamples equal (e.g. a perfect ranking): the point itself
            if not np.isfinite(ci[j]).all() and np.isfinite(estimate[j]):
                ci[j] = np.nanpercentile(result.bootstrap_distribution[j], [2.5, 97.5])
    return {
        "kendall": (float(estimate[0]), float(ci[0, 0]), float(ci[0, 1])),
        "spearman": (float(estimate[1]), float(ci[1, 0]), float(ci[1, 1])),
    }


def topk_overlap(low: np.ndarray, high: np.ndarray, k: int) -> int:
    """How many of the k best by `low` are among the k best by `high` (ties: first listed)."""
    best_low = set(np.argsort(-np.asarray(low, float), kind="stable")[:k])
    best_high = set(np.argsort(-np.asarray(high, float), kind="stable")[:k])
    return len(best_low & best_high)


def _topk(per_net: pd.DataFrame) -> list[dict[str, Any]]:
    n = len(per_net)
    out = []
    for name, k in (("top 5", 5), ("top 10%", math.ceil(0.1 * n))):
        k = max(1, min(k, n))
        hits = topk_overlap(per_net["low"].to_numpy(), per_net["high"].to_numpy(), k)
        out.append(
            {
                "name": name,
                "k": k,
                "overlap": hits,
                "fraction": round(hits / k, 4),
                "chance": round(k / n, 4),
            }
        )
    return out


def _factor_view(rows: pd.DataFrame, factor: str, metric: str) -> tuple[str, str, dict[str, int]]:
    """Best and worst variant of one factor (mean over the other factors and seeds) and the
    sign of each other variant's difference from the baseline variant."""
    table = variant_table(rows, [factor])[[metric, f"{metric}_delta", "baseline"]].dropna()
    best, worst = fmt_value(table[metric].idxmax()), fmt_value(table[metric].idxmin())
    signs = {
        fmt_value(k): int(np.sign(d))
        for k, d, base in zip(table.index, table[f"{metric}_delta"], table["baseline"])
        if not base
    }
    return best, worst, signs


def _sign_text(signs: dict[str, int], base: str) -> str:
    marks = {1: "+", -1: "-", 0: "0"}
    return " ".join(f"{k}{marks[s]}" for k, s in signs.items()) + f" (vs {base})"


def _factor_conclusions(low: pd.DataFrame, high: pd.DataFrame, metric: str) -> list[Conclusion]:
    low_f, high_f = with_factor_columns(low), with_factor_columns(high)
    factors = study_factors(low_f)
    factors += [f for f in study_factors(high_f) if f not in factors]
    out = []
    for factor in factors:
        if factor in _SKIP_FACTORS or factor not in low_f or factor not in high_f:
            continue
        (b_lo, w_lo, s_lo), (b_hi, w_hi, s_hi) = (
            _factor_view(side, factor, metric) for side in (low_f, high_f)
        )
        base = variant_table(low_f, [factor])
        base_name = fmt_value(base.index[base["baseline"]][0])
        out += [
            Conclusion(f"best {factor}", b_lo, b_hi, b_lo == b_hi),
            Conclusion(f"worst {factor}", w_lo, w_hi, w_lo == w_hi),
            Conclusion(
                f"effect signs of {factor}",
                _sign_text(s_lo, base_name),
                _sign_text(s_hi, base_name),
                s_lo == s_hi,
            ),
        ]
    return out


def _share_text(fit: Any) -> tuple[str, Any]:
    opt = fit.pooled
    if opt.depth_share is None:
        return "no interior optimum", None
    return f"{opt.depth_share:.3f} [{opt.ci_low:.3f}, {opt.ci_high:.3f}]", (opt.ci_low, opt.ci_high)


def _scaling_conclusion(
    low: pd.DataFrame, high: pd.DataFrame, metric: str, resamples: int, seed: int
) -> list[Conclusion]:
    from sweeper.analysis.scaling import fit_scaling

    texts, intervals = [], []
    for side in (low, high):
        try:
            text, interval = _share_text(
                fit_scaling(side, metric=metric, n_boot=resamples, seed=seed)
            )
        except SweeperError as err:
            text, interval = f"not fitted ({str(err)[:80]})", None
        texts.append(text)
        intervals.append(interval)
    a, b = intervals
    if a is None or b is None:
        same = a is None and b is None
    else:
        same = a[0] <= b[1] and b[0] <= a[1]
    return [Conclusion("depth share (pooled fit, 95% CI)", texts[0], texts[1], bool(same))]


def compare(
    low: pd.DataFrame,
    high: pd.DataFrame,
    *,
    metric: str = "cw_acc",
    resamples: int = RESAMPLES,
    seed: int = 0,
    names: tuple[str, str] = ("LOW", "HIGH"),
) -> FidelityCheck:
    """Compare one study's rows at two fidelities (see the module docstring)."""
    low_m, high_m, changes, study = pair_rows(low, high, metric, names)
    per_net = (
        pd.DataFrame(
            {
                "network": low_m["network"],
                "label": low_m["label"],
                "low": pd.to_numeric(low_m[metric]).to_numpy(float),
                "high": pd.to_numeric(high_m[metric]).to_numpy(float),
            }
        )
        .groupby(["network", "label"], as_index=False, sort=True)[["low", "high"]]
        .mean()
    )
    if len(per_net) < MIN_NETWORKS:
        raise SweeperError(
            f"only {len(per_net)} network(s) of {names[0]} and {names[1]} match: a rank "
            f"correlation needs {MIN_NETWORKS} or more"
        )
    stats = rank_correlations(
        per_net["low"].to_numpy(), per_net["high"].to_numpy(), resamples=resamples, seed=seed
    )
    best = [per_net.loc[per_net[side].idxmax(), "label"] for side in ("low", "high")]
    conclusions = [Conclusion("best network", best[0], best[1], best[0] == best[1])]
    conclusions += _factor_conclusions(low_m, high_m, metric)
    if "macs_target" in study_factors(with_factor_columns(low_m)):
        conclusions += _scaling_conclusion(low_m, high_m, metric, min(resamples, 1000), seed)
    tau, rho = stats["kendall"], stats["spearman"]
    return FidelityCheck(
        study=study,
        metric=metric,
        n=len(per_net),
        trials=len(low_m),
        low_only=len(_usable(low, names[0], metric)) - len(low_m),
        high_only=len(_usable(high, names[1], metric)) - len(high_m),
        changes=changes,
        kendall_tau=tau[0],
        kendall_ci=(tau[1], tau[2]),
        spearman_rho=rho[0],
        spearman_ci=(rho[1], rho[2]),
        topk=_topk(per_net),
        conclusions=conclusions,
        pairs=per_net,
        resamples=resamples,
    )


def _ci(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if math.isfinite(ci[0]) else f"{value:.3f}"


def summary_lines(check: FidelityCheck, names: tuple[str, str] = ("LOW", "HIGH")) -> list[str]:
    """The comparison as markdown: what differs, the statistics, then the conclusions."""
    changed = (
        ", ".join(f"`{k}` {fmt_value(a)} -> {fmt_value(b)}" for k, (a, b) in check.changes.items())
        or "nothing in train/eval"
    )
    stats = pd.DataFrame(
        [
            {
                "statistic": "networks matched",
                "value": f"{check.n} ({check.trials} trials; "
                f"{check.low_only} only in {names[0]}, {check.high_only} only in {names[1]})",
            },
            {
                "statistic": "Kendall tau (95% BCa CI)",
                "value": _ci(check.kendall_tau, check.kendall_ci),
            },
            {
                "statistic": "Spearman rho (95% BCa CI)",
                "value": _ci(check.spearman_rho, check.spearman_ci),
            },
            *(
                {
                    "statistic": f"{t['name']} overlap (k={t['k']})",
                    "value": f"{t['overlap']} of {t['k']} (chance: {t['chance'] * t['k']:.1f})",
                }
                for t in check.topk
            ),
        ]
    )
    concl = pd.DataFrame(
        [
            {
                "conclusion": c.name,
                names[0]: c.low,
                names[1]: c.high,
                "same": "yes" if c.same else "**no**",
            }
            for c in check.conclusions
        ]
    )
    kept = sum(c.same for c in check.conclusions)
    few = (
        [f"Only {check.n} networks: the bootstrap intervals are rough (BCa needs more points).", ""]
        if check.n < 10
        else []
    )
    return [
        f"Study `{check.study}`, {check.metric}; fidelity: {changed}.",
        "",
        to_markdown(stats, index=False),
        "",
        *few,
        f"{kept} of {len(check.conclusions)} conclusions are the same at both fidelities "
        "(on the matched networks only):",
        "",
        to_markdown(concl, index=False),
    ]


def fidelity_pairs(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(low sweep, high sweep) pairs among a results root's sweeps: sweeps of one study whose
    ok rows share networks, ordered by fidelity (fewer epochs, then less compute per trial)."""
    ok = ok_rows(rows)
    if ok.empty or "sweep" not in ok:
        return []
    by_study: dict[str, list[str]] = {}
    for sweep, part in ok.groupby("sweep", sort=True):
        found = studies(part)
        if len(found) == 1:
            by_study.setdefault(found[0], []).append(str(sweep))
    out = []
    for names in by_study.values():
        cost = {}
        for name in names:
            part = ok[ok["sweep"] == name]
            seconds = part["train_seconds"].fillna(0) + part["eval_seconds"].fillna(0)
            cost[name] = (float(part["epochs"].max()), float(seconds.mean()), name)
        names = sorted(names, key=cost.get)
        out += [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    return out
