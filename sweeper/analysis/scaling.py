"""Refit RobustScaling: robust accuracy against the depth share, one quadratic per budget.

The paper reads the best split of a compute budget between depth and width off the
maximum of a quadratic fitted to CW-40 accuracy against the depth share
sum(D) / (sum(D) + sum(W)). This module refits that from a sweep's rows: per budget,
and pooled over budgets with one intercept per budget (a shared curve shape, since
a bigger budget lifts accuracy everywhere). Uncertainty comes from a bootstrap over
networks, and no maximum is claimed that the data do not show: a vertex outside (or
at the edge of) the sampled shares, or a curve that opens upward, is reported as
"no interior optimum", and so is a downward bend whose bootstrap interval reaches zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweeper.errors import SweeperError

DEFAULT_BUDGETS: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0)  # GMACs
# A vertex closer than this fraction of the sampled share range to either end is
# not an interior optimum: the data there only show "more of this end is better".
EDGE_MARGIN = 0.05
MIN_SHARES = 4  # distinct depth shares per fit: three coefficients and one to spare
# Networks whose MACs stray further than this from their budget bias the fit: a deep
# network that overshoots is compared with a wide one that undershoots. Said, not refused.
MACS_TOLERANCE = 0.03
_DEPTHS = ["depth1", "depth2", "depth3"]
_WIDTHS = ["width1", "width2", "width3"]


def depth_share(rows: pd.DataFrame) -> pd.Series:
    """sum(D) / (sum(D) + sum(W)) of each row's network (WRN-28-10: 12/42 = 0.29)."""
    d = rows[_DEPTHS].sum(axis=1).astype(float)
    w = rows[_WIDTHS].sum(axis=1).astype(float)
    return d / (d + w)


def share_ratio(share: float) -> str:
    """The share as sum(D) : sum(W) on a scale of 10, e.g. 0.7 -> "7.0 : 3.0"."""
    return f"{10 * share:.1f} : {10 * (1 - share):.1f}"


def assign_budgets(rows: pd.DataFrame, budgets: Sequence[float] = DEFAULT_BUDGETS) -> pd.Series:
    """Each row's budget in GMACs: its `macs_target`, else its `macs` binned to the nearest
    of `budgets` on a log scale (a network's MACs miss its target by a ratio, not a sum)."""
    if "macs_target" in rows:
        target = pd.to_numeric(rows["macs_target"], errors="coerce").astype(float)
    else:
        target = pd.Series(np.nan, index=rows.index)
    if target.notna().all():
        return target
    if "macs" not in rows:
        raise SweeperError("rows have neither `macs_target` nor `macs`: cannot tell their budgets")
    grid = np.log(np.asarray(sorted(budgets), dtype=float))
    if not len(grid) or not np.isfinite(grid).all():
        raise SweeperError(f"budgets must be positive GMACs, got {list(budgets)}")
    gmacs = pd.to_numeric(rows["macs"], errors="coerce").to_numpy(float) / 1e9
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = np.abs(np.log(gmacs)[:, None] - grid[None, :]).argmin(axis=1)
    nearest = np.where(gmacs > 0, np.exp(grid)[idx], np.nan)
    return target.fillna(pd.Series(nearest, index=rows.index)).round(6)


def prepare(
    rows: pd.DataFrame, metric: str = "cw_acc", budgets: Sequence[float] = DEFAULT_BUDGETS
) -> pd.DataFrame:
    """The fit's input: ok rows with columns share, y, budget, macs_ratio (the network's MACs
    over its budget; NaN without a `macs` column) and network (one id per arch per budget,
    so that seeds of one network are resampled together)."""
    needed = [*_DEPTHS, *_WIDTHS, metric]
    missing = [c for c in needed if c not in rows]
    if missing:
        raise SweeperError(f"results lack the column(s) {missing} needed to fit {metric}")
    if not pd.api.types.is_numeric_dtype(rows[metric]) and rows[metric].notna().any():
        raise SweeperError(f"{metric} is not a numeric column: cannot fit it")
    ok = rows[rows["status"] == "ok"] if "status" in rows else rows
    ok = ok[np.isfinite(pd.to_numeric(ok[metric], errors="coerce").astype(float))]
    arch = ok[[*_DEPTHS, *_WIDTHS]].apply(pd.to_numeric, errors="coerce").astype(float)
    ok = ok[np.isfinite(arch).all(axis=1)]  # a row without its depths/widths has no share
    if ok.empty:
        raise SweeperError(f"no ok rows with a value of {metric} to fit")
    budget = assign_budgets(ok, budgets).to_numpy(float)
    macs = (
        pd.to_numeric(ok["macs"], errors="coerce").to_numpy(float)
        if "macs" in ok
        else np.full(len(ok), np.nan)
    )
    out = pd.DataFrame(
        {
            "share": depth_share(ok).to_numpy(float),
            "y": ok[metric].to_numpy(float),
            "budget": budget,
            "macs_ratio": macs / (budget * 1e9),
        }
    )
    arch_cols = [c for c in ("block", *_DEPTHS, *_WIDTHS) if c in ok]
    keys = ok[arch_cols].astype(str).agg("|".join, axis=1).to_numpy()
    out["network"] = pd.factorize(pd.Series(out["budget"].astype(str) + "|" + keys))[0]
    out = out[out["budget"].notna()].reset_index(drop=True)
    if out.empty:
        raise SweeperError(
            f"no ok row of {metric} has a budget: `macs_target` and `macs` are missing"
        )
    return out


def _design(share: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Columns s^2, s and one intercept per group (one group: an ordinary quadratic)."""
    onehot = np.zeros((len(share), n_groups))
    onehot[np.arange(len(share)), groups] = 1.0
    return np.column_stack([share**2, share, onehot])


def _lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    return coef if rank == x.shape[1] else None


def _vertex(a: float, b: float, lo: float, hi: float) -> tuple[float, bool]:
    """The vertex -b/2a and whether it is a maximum inside [lo, hi] away from the edges."""
    if not np.isfinite(a) or a == 0:
        return float("nan"), False
    v = -b / (2 * a)
    margin = EDGE_MARGIN * (hi - lo)
    return float(v), bool(a < 0 and lo + margin <= v <= hi - margin)


@dataclass
class Optimum:
    """The fit at one budget (macs_target in GMACs) or pooled over all (macs_target None)."""

    macs_target: float | None
    n: int  # rows
    networks: int
    share_range: tuple[float, float]
    r2: float | None = None  # within budgets: the curve's share of the variance around budget means
    coef: tuple[float, ...] = ()  # a, b, then one intercept per budget: y = a s^2 + b s + c
    vertex: float | None = None  # -b/2a, also when it is not an interior maximum
    interior: bool = False
    depth_share: float | None = None  # the vertex, only when interior
    ci_low: float | None = None
    ci_high: float | None = None
    boot_interior: float | None = None  # fraction of bootstrap resamples with an interior optimum
    reason: str = ""  # why there is no interior optimum
    # lowest and highest MACs / budget among the networks fitted (None: no `macs` column)
    macs_ratio: tuple[float, float] | None = None
    boot_coef: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)

    @property
    def ratio(self) -> str | None:
        return None if self.depth_share is None else share_ratio(self.depth_share)

    @property
    def label(self) -> str:
        return "pooled" if self.macs_target is None else f"{self.macs_target:g} GMACs"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.macs_target is None else {"macs_target": self.macs_target}
        out.update(
            depth_share=self.depth_share,
            ci_low=self.ci_low,
            ci_high=self.ci_high,
            interior=self.interior,
            ratio=self.ratio,
            r2=self.r2,
            n=self.n,
            networks=self.networks,
            share_min=self.share_range[0],
            share_max=self.share_range[1],
            vertex=self.vertex,
            boot_interior_fraction=self.boot_interior,
            macs_ratio_min=None if self.macs_ratio is None else self.macs_ratio[0],
            macs_ratio_max=None if self.macs_ratio is None else self.macs_ratio[1],
            reason=self.reason or None,
        )
        return out


@dataclass
class ScalingFit:
    """Pooled and per-budget optima, plus the prepared points for plotting."""

    metric: str
    pooled: Optimum
    budgets: list[Optimum]
    points: pd.DataFrame  # share, y, budget, network
    n_boot: int

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "bootstrap": self.n_boot,
            "edge_margin": EDGE_MARGIN,
            "pooled": self.pooled.to_json(),
            "budgets": [b.to_json() for b in self.budgets],
        }

    def curve(self, opt: Optimum, shares: np.ndarray, *, level: float = 0.95) -> pd.DataFrame:
        """The fitted curve and its pointwise bootstrap band over `shares`. For the pooled
        fit, the curve uses the mean intercept (the offsets removed, see `centred_points`)."""
        mid = _predict(np.asarray(opt.coef)[None, :], shares)[0]
        band = _predict(opt.boot_coef, shares) if len(opt.boot_coef) else np.empty((0, 0))
        q = (1 - level) / 2
        low = np.quantile(band, q, axis=0) if len(band) else np.full_like(mid, np.nan)
        high = np.quantile(band, 1 - q, axis=0) if len(band) else np.full_like(mid, np.nan)
        return pd.DataFrame({"share": shares, "fit": mid, "low": low, "high": high})

    def centred_points(self) -> pd.DataFrame:
        """Points with each budget's pooled intercept moved to the mean intercept, so that
        all budgets fall on the one pooled curve."""
        pts = self.points.copy()
        budgets = sorted(pts["budget"].unique())
        inter = np.asarray(self.pooled.coef[2:])
        if len(inter) == len(budgets):
            shift = dict(zip(budgets, inter - inter.mean()))
            pts["y"] = pts["y"] - pts["budget"].map(shift)
        return pts


def _predict(coef: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Rows of coefficients (a, b, c...) -> curves a s^2 + b s + mean(c...)."""
    c = coef[:, 2:].mean(axis=1, keepdims=True)
    return coef[:, :1] * shares[None, :] ** 2 + coef[:, 1:2] * shares[None, :] + c


def _fit(
    pts: pd.DataFrame, macs_target: float | None, n_boot: int, rng: np.random.Generator
) -> Optimum:
    """One quadratic (one intercept per budget present) with its network bootstrap."""
    share = pts["share"].to_numpy(float)
    y = pts["y"].to_numpy(float)
    budgets = sorted(pts["budget"].unique())
    groups = pts["budget"].map({b: i for i, b in enumerate(budgets)}).to_numpy(int)
    lo, hi = float(share.min()), float(share.max())
    opt = Optimum(macs_target, n=len(pts), networks=pts["network"].nunique(), share_range=(lo, hi))
    ratio = pts["macs_ratio"].dropna()
    if len(ratio):
        opt.macs_ratio = (float(ratio.min()), float(ratio.max()))
    distinct = len(np.unique(np.round(share, 6)))
    if distinct < MIN_SHARES:
        opt.reason = (
            f"too few points: {distinct} distinct depth share(s), a quadratic fit needs "
            f"{MIN_SHARES} (RESULTS should be a compound-scaling sweep)"
        )
        return opt
    x = _design(share, groups, len(budgets))
    cells = len({(g, s) for g, s in zip(groups, np.round(share, 6))})
    if cells <= x.shape[1]:
        opt.reason = (
            f"too few points: {cells} distinct (budget, depth share) points for "
            f"{x.shape[1]} coefficients, a fit with no residual left"
        )
        return opt
    coef = _lstsq(x, y)
    if coef is None:
        opt.reason = "the design is degenerate (collinear shares within budgets)"
        return opt
    resid = y - x @ coef
    # within-budget R^2: the share of the variance around each budget's mean that the curve
    # explains (with several budgets, their offsets alone would otherwise give R^2 near 1)
    ss_tot = float(((y - pts.groupby("budget")["y"].transform("mean").to_numpy()) ** 2).sum())
    if not ss_tot > 0:
        opt.reason = "the metric does not vary within budgets: no maximum"
        return opt
    opt.r2 = 1 - float((resid**2).sum()) / ss_tot
    opt.coef = tuple(float(c) for c in coef)
    vertex, interior = _vertex(coef[0], coef[1], lo, hi)
    opt.vertex = vertex if np.isfinite(vertex) else None
    if coef[0] >= 0:
        opt.reason = "the fitted curve opens upward (or is flat): no maximum"
    elif not interior:
        opt.reason = (
            f"the vertex ({vertex:.3f}) is outside or at the edge of the sampled "
            f"shares {lo:.2f}-{hi:.2f}: accuracy only rises towards one end"
        )
    boot = _bootstrap(pts, groups, len(budgets), n_boot, rng)
    opt.interior = _judge_curvature(opt, boot, vertex, interior, n_boot)
    return opt


def _judge_curvature(
    opt: Optimum, boot: np.ndarray, vertex: float, interior: bool, n_boot: int
) -> bool:
    """With the bootstrap's coefficients: is the interior maximum real (the curvature
    significant)? Sets the optimum's depth share and its interval; returns `interior`."""
    lo, hi = opt.share_range
    opt.boot_coef = boot
    if len(boot):
        inside = [v for v, ok in (_vertex(a, b, lo, hi) for a, b in boot[:, :2]) if ok]
        opt.boot_interior = len(inside) / n_boot
        a_high = float(np.percentile(boot[:, 0], 97.5))
        if interior and a_high >= 0:  # noise alone bends a quadratic down half the time
            interior = False
            opt.reason = (
                f"the curvature is not significant (95% bootstrap interval of the s^2 "
                f"coefficient reaches {a_high:+.3g}): no maximum the data show"
            )
        if interior:
            opt.depth_share = vertex
            # every resample's maximum, also outside the sampled shares: dropping those
            # would cut the interval's tails off at the data's edge
            maxima = [-b / (2 * a) for a, b in boot[:, :2] if a < 0]
            opt.ci_low, opt.ci_high = (float(q) for q in np.percentile(maxima, [2.5, 97.5]))
    elif interior:
        opt.depth_share = vertex
    return interior


def _bootstrap(
    pts: pd.DataFrame, groups: np.ndarray, n_groups: int, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Refit on networks resampled with replacement within each budget (a network's seeds
    travel together). Resamples that cannot be fitted are dropped from the band; they
    count as 'no interior optimum' in the fraction."""
    if n_boot <= 0:
        return np.empty((0, 0))
    share = pts["share"].to_numpy(float)
    y = pts["y"].to_numpy(float)
    by_budget = [
        [np.flatnonzero(pts["network"].to_numpy() == net) for net in np.unique(sub)]
        for sub in (pts["network"].to_numpy()[groups == g] for g in range(n_groups))
    ]
    coefs = []
    for _ in range(n_boot):
        idx = np.concatenate(
            [
                np.concatenate([nets[i] for i in rng.integers(0, len(nets), len(nets))])
                for nets in by_budget
            ]
        )
        if len(np.unique(np.round(share[idx], 6))) < 3:
            continue
        coef = _lstsq(_design(share[idx], groups[idx], n_groups), y[idx])
        if coef is not None:
            coefs.append(coef)
    return np.asarray(coefs) if coefs else np.empty((0, 0))


def fit_scaling(
    rows: pd.DataFrame,
    *,
    metric: str = "cw_acc",
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    n_boot: int = 1000,
    seed: int = 0,
) -> ScalingFit:
    """Fit `metric` against the depth share per budget and pooled (one intercept per budget).

    Raises SweeperError when there is nothing to fit or too few distinct shares overall.
    A budget with too few points gets an Optimum whose `reason` says so.
    """
    pts = prepare(rows, metric, budgets)
    rng = np.random.default_rng(seed)
    pooled = _fit(pts, None, n_boot, rng)
    if pooled.reason.startswith(("too few", "the design")):
        raise SweeperError(
            f"cannot fit a quadratic to {metric}: {len(pts)} ok rows, "
            f"{pooled.reason.removeprefix('too few points: ')}"
        )
    per_budget = [
        _fit(pts[pts["budget"] == b].reset_index(drop=True), float(b), n_boot, rng)
        for b in sorted(pts["budget"].unique())
    ]
    return ScalingFit(metric, pooled, per_budget, pts, n_boot)
