"""The report's figures, each a function of result rows returning a matplotlib Figure.

Figures are built with `matplotlib.figure.Figure` rather than pyplot: no display and
no global state is needed (PNG output goes through Agg), and in a notebook the
returned Figure still shows inline.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from sweeper.analysis.tables import (
    DEPTHS,
    WIDTHS,
    fmt_value,
    label,
    ok_rows,
    study_factors,
    variant_table,
    with_factor_columns,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from sweeper.analysis.fidelity import FidelityCheck
    from sweeper.analysis.scaling import ScalingFit

_NICE = (0.25, 0.5, 1, 2, 3, 5, 10, 15, 20, 30, 40, 60, 100, 200, 500)  # log-axis ticks
# Step counts (PGD-20, CW-40 in the paper) come from each sweep's eval config, not from here.
NAMES = {"clean_acc": "clean", "pgd_acc": "PGD", "cw_acc": "CW", "aa_acc": "AutoAttack"}


def save(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG (Agg) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _grid(n: int, width: float = 4.2, height: float = 3.4) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def factor_effects(rows: pd.DataFrame, metric: str = "cw_acc") -> Figure:
    """How far each study's factor moves robust accuracy: one box per sweep over its
    variants' mean differences from the study's baseline, in points, every variant drawn."""
    data, names = [], []
    for sweep, part in rows.groupby("sweep", sort=True):
        table = variant_table(part)
        if table.empty or table[f"{metric}_delta"].isna().all():
            continue
        if "macs_target" in table.index.names:
            continue  # compound scaling: deltas across budgets measure the budget, not a factor
        data.append(table[f"{metric}_delta"].dropna().to_numpy() * 100)
        names.append(f"{sweep}\n({', '.join(table.index.names)})")
    fig = Figure(figsize=(max(5.0, 1.5 * len(data) + 1.5), 4.2), layout="constrained")
    ax = fig.subplots()
    if not data:
        ax.text(0.5, 0.5, f"no {metric} values", ha="center", va="center")
        return fig
    ax.axhline(0, color="0.6", lw=0.8)
    ax.boxplot(data, showfliers=False, widths=0.55)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(
            i + rng.uniform(-0.18, 0.18, len(values)), values, s=9, alpha=0.6, color="C0", zorder=3
        )
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    ax.set_ylabel(f"{NAMES.get(metric, metric)} minus baseline (points)")
    ax.set_title(
        "How far each study's factor moves robust accuracy (one dot per variant)", fontsize=10
    )
    return fig


def acc_vs_macs(rows: pd.DataFrame, metric: str = "cw_acc") -> Figure:
    """Accuracy against MACs, one panel per sweep, coloured by the sweep's first factor."""
    sweeps = [
        (s, p) for s, p in ok_rows(rows).groupby("sweep", sort=True) if p[metric].notna().any()
    ]
    fig, axes = _grid(max(1, len(sweeps)))
    for ax, (sweep, part) in zip(axes, sweeps):
        factors = study_factors(part)
        # GMACs for CIFAR networks, MMACs for the tiny ones of smoke tests
        scale, unit = (1e9, "GMACs") if part["macs"].max() >= 1e8 else (1e6, "MMACs")
        part = part.assign(gmacs=part["macs"] / scale, acc=part[metric] * 100)
        if factors[:1] == ["macs_target"]:
            factors = factors[1:]  # compound scaling: colour by depth share, budgets show on x
        part = with_factor_columns(part)
        _scatter_by_factors(fig, ax, part, factors)
        sweep = _macs_axis(ax, part, sweep, unit)
        ax.set_title(sweep)
        ax.set_xlabel(unit)
        if ax.get_xscale() == "linear":
            ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_ylabel(f"{NAMES.get(metric, metric)} accuracy (%)")
        ax.grid(alpha=0.3)
    return fig


def _scatter_by_factors(fig: Figure, ax: Axes, part: pd.DataFrame, factors: list[str]) -> None:
    """One dot per trial: colour by the first factor (a colour bar when it has many numeric
    values), marker shape by a second one with few values."""
    key = factors[0] if factors else None
    if key is None:
        ax.scatter(part["gmacs"], part["acc"], s=12)
    elif pd.api.types.is_numeric_dtype(part[key]) and part[key].nunique() > 6:
        sc = ax.scatter(part["gmacs"], part["acc"], c=part[key], s=12, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=key)
    else:
        # a second factor with few values gets marker shapes (block-level studies only:
        # depth/width grids would need a legend entry for every cell)
        second = (
            factors[1]
            if (
                len(factors) > 1
                and part[factors[1]].nunique() <= 6
                and not pd.api.types.is_numeric_dtype(part[key])
            )
            else None
        )
        shapes = (
            {v: "os^Dv*"[j] for j, v in enumerate(sorted(part[second].unique()))}
            if second
            else {}
        )
        colours = {v: f"C{i % 10}" for i, v in enumerate(sorted(part[key].unique()))}
        groups = part.groupby([key, second] if second else [key], sort=True)
        for values, sub in groups:
            label = " / ".join(fmt_value(v) for v in values)
            ax.scatter(
                sub["gmacs"],
                sub["acc"],
                s=16,
                color=colours[values[0]],
                marker=shapes.get(values[-1], "o") if second else "o",
                label=label,
            )
        title = f"{key} / {second}" if second else key
        ax.legend(title=title, fontsize=7, title_fontsize=7, loc="best")


def _macs_axis(ax: Axes, part: pd.DataFrame, sweep: str, unit: str) -> str:
    """A log axis over a wide MACs range, a widened one around a matched budget; returns
    the panel's title (the budget named when every trial has it)."""
    lo, hi = part["gmacs"].min(), part["gmacs"].max()
    if hi > 3 * lo:
        ax.set_xscale("log")
        ticks = [v for v in _NICE if lo * 0.9 <= v <= hi * 1.1]
        if len(ticks) >= 2:
            ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif hi < 1.05 * lo:  # a matched-budget study: widen the axis around the budget
        mid = (hi + lo) / 2
        ax.set_xlim(mid * 0.9, mid * 1.1)
        sweep = f"{sweep} (all at {mid:.3g} {unit})"
    return sweep


def shape_heatmaps(rows: pd.DataFrame, kind: str = "depth", metric: str = "cw_acc") -> Figure:
    """Mean accuracy over each pair of stages' depths (or widths), averaged over the third."""
    cols = DEPTHS if kind == "depth" else WIDTHS
    sym = "D" if kind == "depth" else "W"
    ok = ok_rows(rows)
    varying = [i for i, c in enumerate(cols) if ok[c].nunique() > 1]
    pairs = list(itertools.combinations(varying, 2)) or [(0, 1)]
    fig = Figure(figsize=(4.4 * len(pairs) + 0.8, 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(pairs)))
    grids = [
        ok.pivot_table(index=cols[i], columns=cols[j], values=metric, aggfunc="mean") * 100
        for i, j in pairs
    ]
    lo = min(float(np.nanmin(g.to_numpy())) for g in grids)
    hi = max(float(np.nanmax(g.to_numpy())) for g in grids)
    for ax, (i, j), grid in zip(axes, pairs, grids):
        im = ax.imshow(
            grid.to_numpy(), origin="lower", cmap="viridis", vmin=lo, vmax=hi, aspect="auto"
        )
        ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
        ax.set_xlabel(f"{sym}{j + 1}")
        ax.set_ylabel(f"{sym}{i + 1}")
        other = 3 - i - j
        if other in varying:
            ax.set_title(f"mean over {sym}{other + 1}", fontsize=9)
        if grid.size <= 100:
            mid = (lo + hi) / 2
            for (r, c), v in np.ndenumerate(grid.to_numpy()):
                if np.isfinite(v):
                    ax.text(
                        c,
                        r,
                        f"{v:.1f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if v < mid else "black",
                    )
    fig.colorbar(im, ax=list(axes), label=f"{NAMES.get(metric, metric)} accuracy (%)")
    fig.suptitle(f"{kind.capitalize()} study: where to put the {kind}")
    return fig


def scaling_figure(fit: ScalingFit) -> Figure:
    """The RobustScaling figure: per budget, the points, the fitted quadratic, its 95%
    bootstrap band and the best share with its CI; a last panel pools the budgets."""
    opts = [*fit.budgets, fit.pooled]
    fig, axes = _grid(len(opts), width=3.8, height=3.2)
    pts_all = fit.points
    lo, hi = pts_all["share"].min(), pts_all["share"].max()
    for i, (ax, opt) in enumerate(zip(axes, opts)):
        pooled = opt.macs_target is None
        pts = fit.centred_points() if pooled else pts_all[pts_all["budget"] == opt.macs_target]
        colour = "0.2" if pooled else f"C{i % 10}"
        if pooled:
            for j, (budget, sub) in enumerate(pts.groupby("budget")):
                ax.scatter(
                    sub["share"],
                    sub["y"] * 100,
                    s=10,
                    color=f"C{j % 10}",
                    alpha=0.7,
                    label=f"{budget:g} GMACs",
                )
            ax.legend(fontsize=6, ncols=2, loc="best")
        else:
            ax.scatter(pts["share"], pts["y"] * 100, s=12, color=colour, alpha=0.8)
        if opt.coef:
            grid = np.linspace(opt.share_range[0], opt.share_range[1], 120)
            curve = fit.curve(opt, grid)
            ax.plot(curve["share"], curve["fit"] * 100, color=colour, lw=1.6)
            ax.fill_between(
                curve["share"],
                curve["low"] * 100,
                curve["high"] * 100,
                color=colour,
                alpha=0.18,
                lw=0,
            )
        if opt.interior and opt.depth_share is not None:
            ax.axvline(opt.depth_share, color="k", ls="--", lw=0.9)
            if opt.ci_low is not None:
                ax.axvspan(opt.ci_low, opt.ci_high, color="k", alpha=0.07, lw=0)
            text = f"best {opt.depth_share:.2f} ({opt.ratio})"
        else:
            text = "no interior optimum"
        r2 = f", R²={opt.r2:.2f}" if opt.r2 is not None else ""
        ax.set_title(
            f"{'pooled (offsets removed)' if pooled else opt.label}: {text}{r2}", fontsize=8
        )
        ax.set_xlim(lo - 0.02, hi + 0.02)
        ax.set_xlabel("depth share sum(D) / (sum(D) + sum(W))")
        ax.set_ylabel(f"{NAMES.get(fit.metric, fit.metric)} accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"Quadratic fits with 95% bootstrap bands ({fit.n_boot} resamples of "
        "networks); dashed: best share, grey: its 95% CI",
        fontsize=9,
    )
    return fig


def variant_intervals(rows: pd.DataFrame, metric: str = "cw_acc", top: int = 40) -> Figure:
    """Each variant's mean with its 95% interval, best on top; the baseline in red with a
    dotted line through it. Dots, not bars: the axis does not start at zero."""
    table = variant_table(rows).sort_values(metric).tail(top)
    fig = Figure(figsize=(6.5, 0.3 * len(table) + 1.3), layout="constrained")
    ax = fig.subplots()
    mean = table[metric].to_numpy() * 100
    ci = table[f"{metric}_ci"].fillna(0).to_numpy() * 100
    base = table["baseline"].to_numpy(bool)
    y = np.arange(len(table))
    ax.errorbar(mean[~base], y[~base], xerr=ci[~base], fmt="o", color="C0", capsize=3, ms=5)
    ax.errorbar(
        mean[base], y[base], xerr=ci[base], fmt="o", color="C3", capsize=3, ms=6, label="baseline"
    )
    if base.any():
        ax.axvline(mean[base][0], color="C3", ls=":", lw=1)
        ax.legend(fontsize=7, loc="best")
    ax.set_yticks(y, [label(k, table) for k in table.index], fontsize=7)
    several = (table["n"] > 1).any()
    ax.set_xlabel(
        f"{NAMES.get(metric, metric)} accuracy (%), "
        + ("mean ± 95% CI over seeds" if several else "one seed each: no interval")
    )
    ax.grid(axis="x", alpha=0.3)
    sweep = rows["sweep"].iloc[0] if "sweep" in rows and len(rows) else ""
    ax.set_title(f"{sweep}: variants", fontsize=10)
    return fig


def fidelity_scatter(check: FidelityCheck) -> Figure:
    """One dot per matched network: its metric at the cheap fidelity against the full one,
    with the rank correlations in the title (the axes need not share a scale)."""
    pairs = check.pairs
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.scatter(100 * pairs["low"], 100 * pairs["high"], s=18, alpha=0.75, color="tab:blue")
    for which, color in (("low", "tab:orange"), ("high", "tab:green")):
        top = pairs.loc[pairs[which].idxmax()]
        ax.scatter(100 * top["low"], 100 * top["high"], s=70, facecolors="none",
                   edgecolors=color, label=f"best by {which.upper()}: {top['label']}")  # fmt: skip
    changed = ", ".join(f"{k.split('.')[-1]} {fmt_value(a)}->{fmt_value(b)}"
                        for k, (a, b) in check.changes.items())  # fmt: skip
    name = NAMES.get(check.metric, check.metric)
    ax.set_xlabel(f"{name} accuracy (%), LOW")
    ax.set_ylabel(f"{name} accuracy (%), HIGH")
    tau, rho = check.kendall_tau, check.spearman_rho
    ax.set_title(
        f"{check.study}: {check.n} networks ({changed})\n"
        f"Kendall tau {tau:.2f} [{check.kendall_ci[0]:.2f}, {check.kendall_ci[1]:.2f}], "
        f"Spearman rho {rho:.2f}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig
