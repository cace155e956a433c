"""report.md plus PNG figures for a results folder holding one sweep or several.

from sweeper.analysis.report import write_report
write_report("results", "report/")        # or: sweeper report results --out report/
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from sweeper.analysis import fidelity, plots
from sweeper.analysis.synthetic import SYNTHETIC_DEVICE
from sweeper.analysis.tables import (
    DEPTHS,
    WIDTHS,
    fmt_value,
    load,
    ok_rows,
    percent_view,
    study_factors,
    summarize,
    to_markdown,
    variant_table,
)

SHOW_ALL = 40  # variants; bigger studies show their best and worst ones (the CSV has all)


def scaling_markdown(fit: object) -> str:
    """The fit-scaling result as a markdown table, with the reasons for missing optima."""
    from sweeper.analysis.scaling import ScalingFit

    assert isinstance(fit, ScalingFit)
    lines = []
    for opt in [*fit.budgets, fit.pooled]:
        ci = "-" if opt.ci_low is None else f"{opt.ci_low:.3f} - {opt.ci_high:.3f}"
        lines.append(
            {
                "budget": opt.label,
                "n": opt.n,
                "R²": "-" if opt.r2 is None else f"{opt.r2:.2f}",
                "best depth share": "none" if opt.depth_share is None else f"{opt.depth_share:.3f}",
                "95% CI": ci,
                "sum(D) : sum(W)": opt.ratio or "-",
                "resamples with optimum": "-"
                if opt.boot_interior is None
                else f"{opt.boot_interior:.0%}",
            }
        )
    text = to_markdown(pd.DataFrame(lines), index=False)
    notes = [
        f"- {o.label}: no interior optimum - {o.reason}."
        for o in [*fit.budgets, fit.pooled]
        if not o.interior and o.reason
    ]
    return text + ("\n\n" + "\n".join(notes) if notes else "")


def _variants_section(name: str, part: pd.DataFrame, out: Path, metric: str) -> list[str]:
    table = variant_table(part)
    if table.empty:
        return ["No ok rows."]
    table.to_csv(out / f"{name}_variants.csv")
    view = percent_view(table)
    lines = []
    if "macs_target" not in table.index.names:
        marks, note = _resolved_marks(part, table, metric)
        if note:
            view["resolved"] = marks
            lines.append(note + "\n")
    if "macs_target" in table.index.names:
        # compound scaling: a delta against one network of one budget means little; show
        # each budget's best networks and leave the comparison to the fit below
        budget = table.index.get_level_values("macs_target")
        rank = table.groupby(budget)[metric].rank(ascending=False, method="first").to_numpy()
        order = np.lexsort((rank, budget.to_numpy(float)))
        view = view.iloc[order][(rank[order] <= 3)]
        view = view[[c for c in view.columns if not c.startswith("Δ")]]
        view.index = pd.Index([i.removesuffix(" *") for i in view.index], name="network")
        lines.append(
            f"The 3 best networks by {metric} at each budget (all {len(table)} are in "
            f"`{name}_variants.csv`).\n"
        )
    elif len(view) > SHOW_ALL:
        order = table[metric].sort_values(ascending=False).index
        keep = set(order[:15]) | set(order[-5:]) | set(table.index[table["baseline"]])
        picked = [k in keep for k in table.index]
        view = view[picked].iloc[np.argsort(-table[metric][picked].to_numpy())]
        lines.append(
            f"{len(table)} variants; the 15 best and 5 worst by {metric} and the "
            f"baseline are shown, all are in `{name}_variants.csv`.\n"
        )
    elif table[metric].notna().any():
        view = view.iloc[np.argsort(-table[metric].fillna(-1).to_numpy())]
        fig = plots.save(plots.variant_intervals(part, metric), out / f"{name}_variants.png")
        lines.append(f"![{name} variants]({fig.name})\n")
    lines.append(to_markdown(view))
    return lines


def _resolved_marks(part: pd.DataFrame, table: pd.DataFrame, metric: str) -> tuple[list[str], str]:
    """Per variant: whether its difference from the baseline reaches the smallest difference
    the sweep resolves (80% power, alpha 0.05; sweeper.analysis.power), and a line saying so."""
    from sweeper.analysis.power import spread_from_rows, study_power
    from sweeper.config import TrialConfig

    ok = ok_rows(part)
    if "config" not in ok or f"{metric}_delta" not in table or not len(ok):
        return [], ""
    configs = [TrialConfig.model_validate_json(c) for c in ok["config"]]
    spread = spread_from_rows(ok)
    power = study_power(configs, spread)
    found = power["detectable_difference"].get(metric)
    if found is None:
        return [], ""
    marks = ["baseline" if b else ("yes" if abs(100 * d) >= found else "no")
             for d, b in zip(table[f"{metric}_delta"], table["baseline"])]  # fmt: skip
    note = (f"Resolved: a variant whose Δ{metric} from the baseline is at least {found:.2f} "
            f"points, the smallest difference this sweep resolves at 80% power (alpha 0.05, "
            f"two-sided; {power['power']['seeds_per_cell']} seed(s) per variant, "
            f"{power['power']['images'][metric]} images, seed spread from "
            f"{power['power']['seed_sd_from'][metric]}). A smaller Δ may be real, or noise.")
    return marks, note


def _sweep_section(
    name: str, part: pd.DataFrame, out: Path, metric: str, bootstrap: int
) -> list[str]:
    ok = ok_rows(part)
    factors = study_factors(ok) if len(ok) else []
    lines = [
        f"## {name}",
        "",
        f"{len(ok)} ok / {len(part) - len(ok)} failed trials; "
        f"factors: {', '.join(f'`{f}`' for f in factors) or 'none vary'}; "
        f"epochs: {', '.join(fmt_value(e) for e in sorted(ok['epochs'].dropna().unique()))}.",
        "",
    ]
    if not len(ok):
        return lines + _failures(part)
    lines += _variants_section(name, part, out, metric)
    lines.append("")
    if not ok[metric].notna().any():
        return lines + [f"No {metric} values: no figures.", ""] + _failures(part)
    for kind, cols in (("depth", DEPTHS), ("width", WIDTHS)):
        if sum(c in factors for c in cols) >= 2:
            fig = plots.save(plots.shape_heatmaps(ok, kind, metric), out / f"{name}_{kind}.png")
            lines += [f"![{name} {kind} heat maps]({fig.name})", ""]
    if "macs_target" in factors:
        lines += _scaling_section(name, ok, out, metric, bootstrap)
    return lines + _failures(part)


def _scaling_section(
    name: str, ok: pd.DataFrame, out: Path, metric: str, bootstrap: int
) -> list[str]:
    from sweeper.analysis.scaling import fit_scaling
    from sweeper.errors import SweeperError

    lines = ["### Compound scaling: best depth share per budget", ""]
    try:
        fit = fit_scaling(ok, metric=metric, n_boot=bootstrap)
    except SweeperError as err:
        return lines + [f"Not fitted: {err}", ""]
    fig = plots.save(plots.scaling_figure(fit), out / f"{name}_scaling.png")
    return lines + [
        f"Quadratic fit of {metric} against sum(D) / (sum(D) + sum(W)); 95% CIs from "
        f"{bootstrap} bootstrap resamples of networks within budgets. The paper found about "
        "0.7 (7 : 3).",
        "",
        scaling_markdown(fit),
        "",
        f"![{name} scaling]({fig.name})",
        "",
    ]


def _fidelity_section(rows: pd.DataFrame, out: Path, metric: str) -> list[str]:
    """Pairs of sweeps of one study at two fidelities (rows with the same `study` that share
    networks): does the cheap one rank the networks like the expensive one?"""
    from sweeper.errors import SweeperError

    lines: list[str] = []
    for low, high in fidelity.fidelity_pairs(rows):
        try:
            check = fidelity.compare(rows[rows["sweep"] == low], rows[rows["sweep"] == high],
                                     metric=metric, names=(low, high))  # fmt: skip
        except SweeperError:
            continue  # no shared networks (or too few): not a fidelity pair
        fig = plots.save(plots.fidelity_scatter(check), out / f"fidelity_{low}_{high}.png")
        lines += [f"### {low} (LOW) vs {high} (HIGH)", "",
                  *fidelity.summary_lines(check, (low, high)), "",
                  f"![{low} vs {high}]({fig.name})", ""]  # fmt: skip
    if not lines:
        return []
    return [
        "## Fidelity: do cheap runs rank networks like expensive ones?",
        "",
        "Sweeps of one study (their rows' `study`) that share networks, matched by "
        "architecture and seed; 95% BCa bootstrap intervals over networks.",
        "",
        *lines,
    ]


def _failures(part: pd.DataFrame, show: int = 10) -> list[str]:
    failed = part[part["status"] != "ok"] if "status" in part else part.iloc[:0]
    if failed.empty:
        return []
    shown = failed[["trial_id", "seed", "error"]].head(show)
    return [
        "",
        f"Failed trials ({len(failed)}, first {len(shown)}):",
        "",
        to_markdown(shown, index=False),
        "",
    ]


def _overview_section(rows: pd.DataFrame, metric: str) -> list[str]:
    """The overview table: one line per sweep, its best variant against its baseline and its
    spread, in points."""
    summary = summarize(rows, metric)
    view = summary.copy()
    for col in ("best_delta", "spread"):
        if col in view:
            view[col] = [
                (
                    "-"
                    if pd.isna(v)
                    else f"{v * 100:+.2f}"
                    if col == "best_delta"
                    else f"{v * 100:.2f}"
                )
                for v in view[col]
            ]
    return [
        "## Overview",
        "",
        to_markdown(view.fillna("-"), index=False),
        "",
        f"`best_delta` and `spread` are {metric} differences in points "
        "(best variant minus baseline; best minus worst variant).",
        "",
    ]


def write_report(
    source: str | Path | pd.DataFrame,
    out: str | Path,
    *,
    metric: str = "cw_acc",
    bootstrap: int = 1000,
    origin: str | None = None,
) -> Path:
    """Write OUT/report.md with per-study tables and figures; returns its path. `origin`
    names where the rows came from (default: the path, or "a DataFrame")."""
    rows = source if isinstance(source, pd.DataFrame) else load(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if origin is None:
        origin = "a DataFrame" if isinstance(source, pd.DataFrame) else str(source)
    lines = [
        "# Sweep report",
        "",
        f"From `{origin}`, {when}: {len(rows)} rows in {rows['sweep'].nunique()} sweep(s). "
        "Accuracies in %, mean ± 95% t-interval over seeds (no interval with one seed); "
        "Δ = difference from the study's baseline (marked *) in points. The baseline is "
        "the WRN-28-10-like variant (basic pre-activation block, standard 3x3 convs, no "
        "SE, ReLU, BatchNorm, D 4/4/4, W 10/10/10, TRADES) where the study has one, else "
        "its variant with the most rows. A study's factors are the columns that vary "
        "among its ok rows; widths matched to a budget are not factors.",
        "",
    ]
    if "device" in rows and (rows["device"] == SYNTHETIC_DEVICE).any():
        lines += [
            "> **Warning: this report includes SYNTHETIC rows generated for testing "
            "(device = '" + SYNTHETIC_DEVICE + "'). They are not results.**",
            "",
        ]
    lines += _overview_section(rows, metric)
    ok = ok_rows(rows)
    if len(ok) and ok[metric].notna().any():
        for stem, fig in (
            ("factor_effects", plots.factor_effects(rows, metric)),
            ("acc_vs_macs", plots.acc_vs_macs(rows, metric)),
        ):
            lines += [f"![{stem}]({plots.save(fig, out / f'{stem}.png').name})", ""]
    for name, part in rows.groupby("sweep", sort=True):
        lines += _sweep_section(str(name), part, out, metric, bootstrap)
        lines.append("")
    lines += _fidelity_section(rows, out, metric)
    from sweeper.analysis.transfer import report_section

    lines += report_section(rows, out, bootstrap=bootstrap)
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
