"""Does a study's ranking of architectures survive another threat model?

`transfer(rows, source, target)` takes one sweep's rows (training rows, with the metrics
of later `sweeper eval` runs filled in from its `_eval/` table) and compares the networks'
accuracy under two threats (sweeper.config.THREATS):

- one point per network: the study's factor values (sweeper.analysis.tables.study_factors),
  seeds averaged; each threat's metric is its strongest attack measured on every network
  (AutoAttack, else PGD; corruptions: the mean corruption accuracy);
- Kendall tau-b and Spearman rho with 95% BCa bootstrap intervals over networks: the
  rank-correlation code of `sweeper fidelity` (`rank_correlations`);
- per factor, each variant's effect (mean difference from the factor's baseline variant)
  under both threats, and the variants whose effect changes sign.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.tables import fmt_value, ok_rows, study_factors, variant_table
from sweeper.analysis.tables import with_factor_columns as _factor_columns
from sweeper.errors import SweeperError

# Per threat, the metric columns in order of preference (the strongest attack first).
THREAT_METRICS = {
    "linf": ("aa_acc", "pgd_acc"),
    "l2": ("l2_aa_acc", "l2_pgd_acc"),
    "corruptions": ("corruption_acc",),
}
_EVAL_FILLED = ("aa_acc", "pgd_acc", "l2_aa_acc", "l2_pgd_acc", "corruption_acc")


@dataclass
class Transfer:
    study: str
    source: str  # threat names
    target: str
    metrics: tuple[str, str]  # the column used for each
    n: int  # networks
    kendall: tuple[float, float, float]  # tau, CI low, CI high
    spearman: tuple[float, float, float]
    effects: list[dict[str, Any]]  # factor, variant, baseline, source / target effect
    networks: pd.DataFrame = field(repr=False)  # label, source, target

    @property
    def flips(self) -> list[dict[str, Any]]:
        return [e for e in self.effects if e["flips"]]

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study, "from": self.source, "to": self.target,
            "metrics": list(self.metrics), "networks": self.n,
            "kendall_tau": _num(self.kendall[0]), "kendall_ci": [_num(v) for v in self.kendall[1:]],
            "spearman_rho": _num(self.spearman[0]),
            "spearman_ci": [_num(v) for v in self.spearman[1:]],
            "bootstrap": {"method": "BCa", "unit": "network"},
            "effects": self.effects,
            "sign_changes": [f"{e['factor']}={e['variant']}" for e in self.flips],
        }  # fmt: skip


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def with_evaluations(rows: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """Rows whose missing threat metrics are filled from the latest ok `sweeper eval` row of
    the same trial (the weights stay those of the training row)."""
    if evals is None or evals.empty or "trial_id" not in rows:
        return rows
    ok = evals[evals["status"] == "ok"].sort_values("ended_at")
    latest = ok.groupby("trial_id").last()
    rows = rows.copy()
    for col in _EVAL_FILLED:
        if col not in latest:
            continue
        later = rows["trial_id"].map(latest[col])
        rows[col] = rows[col].combine_first(later) if col in rows else later
    return rows


def pick_metric(rows: pd.DataFrame, threat: str) -> str:
    """The threat's strongest metric measured on every ok row."""
    if threat not in THREAT_METRICS:
        raise SweeperError(f"unknown threat {threat!r}; choose from {', '.join(THREAT_METRICS)}")
    for col in THREAT_METRICS[threat]:
        if col in rows and pd.to_numeric(rows[col], errors="coerce").notna().all():
            return col
    raise SweeperError(
        f"no {threat} accuracy on every trial (columns {', '.join(THREAT_METRICS[threat])}): "
        f"evaluate with eval.threats including {threat} (sweeper eval --set "
        f"eval.threats=[{threat}])"
    )


def transfer(
    rows: pd.DataFrame, source: str, target: str, *, resamples: int = 2000, seed: int = 0
) -> Transfer:
    """The comparison of the module docstring; rows are one sweep's (see `with_evaluations`)."""
    if source == target:
        raise SweeperError(f"--from and --to are both {source}")
    rows = _factor_columns(ok_rows(rows)).reset_index(drop=True)
    if rows.empty:
        raise SweeperError("no ok rows to compare")
    metrics = (pick_metric(rows, source), pick_metric(rows, target))
    factors = [f for f in study_factors(rows) if f not in ("seed", "trial_id")]
    keys = factors or ["trial_id"]
    per_net = rows.groupby(keys, dropna=False)[list(metrics)].mean().reset_index()
    per_net["label"] = [", ".join(fmt_value(v) for v in t)
                        for t in per_net[keys].itertuples(index=False)]  # fmt: skip
    networks = per_net.rename(columns={metrics[0]: "source", metrics[1]: "target"})
    if len(networks) < 3:
        raise SweeperError(f"{len(networks)} networks: a ranking needs at least 3")
    from sweeper.analysis.fidelity import rank_correlations  # its imports: only when needed

    corr = rank_correlations(networks["source"].to_numpy(), networks["target"].to_numpy(),
                             resamples=resamples, seed=seed)  # fmt: skip
    named = rows["study"].dropna() if "study" in rows else pd.Series(dtype=object)
    study = str(named.iloc[0]) if len(named) else str(rows["sweep"].iloc[0])
    return Transfer(study=study, source=source, target=target, metrics=metrics,
                    n=len(networks), kendall=corr["kendall"], spearman=corr["spearman"],
                    effects=_effects(rows, factors, metrics),
                    networks=networks[["label", "source", "target"]])  # fmt: skip


def _effects(rows: pd.DataFrame, factors: list[str], metrics: tuple[str, str]) -> list[dict]:
    """Per factor and non-baseline variant: mean difference from the baseline variant (the
    one `sweeper report` uses) under each threat, and whether its sign differs."""
    out = []
    for factor in factors:
        table = variant_table(rows, [factor])
        if table.empty or "baseline" not in table or not table["baseline"].any():
            continue
        base = table.index[table["baseline"]][0]
        means = rows.groupby(factor, dropna=False)[list(metrics)].mean()
        for variant in means.index:
            if variant == base:
                continue
            d_src, d_tgt = (float(means.loc[variant, m] - means.loc[base, m]) for m in metrics)
            out.append({"factor": factor, "variant": fmt_value(variant),
                        "baseline": fmt_value(base), "from": round(d_src, 4),
                        "to": round(d_tgt, 4),
                        "flips": bool(np.sign(d_src) * np.sign(d_tgt) < 0)})  # fmt: skip
    return out


def summary_lines(result: Transfer) -> list[str]:
    """The comparison for a reader: correlations with CIs, then the effects that flip."""
    tau, t_lo, t_hi = result.kendall
    rho, r_lo, r_hi = result.spearman
    src, tgt = result.metrics
    lines = [
        f"{result.study}: {result.n} networks ranked by {src} ({result.source}) and "
        f"{tgt} ({result.target})",
        f"Kendall tau  {tau:+.3f}  95% CI [{t_lo:+.3f}, {t_hi:+.3f}]",
        f"Spearman rho {rho:+.3f}  95% CI [{r_lo:+.3f}, {r_hi:+.3f}]  (BCa bootstrap over "
        "networks)",
    ]
    if not result.effects:
        return [*lines, "no factors vary: no effects to compare"]
    lines.append(f"factor effects (points vs the baseline variant), {result.source} -> "
                 f"{result.target}:")  # fmt: skip
    for e in result.effects:
        mark = "  SIGN CHANGES" if e["flips"] else ""
        lines.append(f"  {e['factor']}={e['variant']} (vs {e['baseline']}): "
                     f"{100 * e['from']:+.1f} -> {100 * e['to']:+.1f}{mark}")  # fmt: skip
    flips = result.flips
    lines.append(f"{len(flips)} of {len(result.effects)} effects change sign")
    return lines


def scatter(result: Transfer) -> Any:
    """One dot per network: accuracy under the source threat against the target threat."""
    from matplotlib.figure import Figure

    nets = result.networks
    fig = Figure(figsize=(5.4, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.scatter(100 * nets["source"], 100 * nets["target"], s=20, alpha=0.8)
    if len(nets) <= 30:
        for _, r in nets.iterrows():
            ax.annotate(r["label"], (100 * r["source"], 100 * r["target"]), fontsize=6,
                        alpha=0.7)  # fmt: skip
    ax.set_xlabel(f"{result.metrics[0]} (%), {result.source}")
    ax.set_ylabel(f"{result.metrics[1]} (%), {result.target}")
    tau, lo, hi = result.kendall
    ax.set_title(f"{result.study}: {result.n} networks, {result.source} -> {result.target}\n"
                 f"Kendall tau {tau:.2f} [{lo:.2f}, {hi:.2f}], Spearman rho "
                 f"{result.spearman[0]:.2f}", fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    return fig


def corruption_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per corruption (over severities, then trials) from `corruption_accs`."""
    per = []
    for blob in rows.get("corruption_accs", pd.Series(dtype=object)).dropna():
        per.append({k: float(np.mean(v)) for k, v in json.loads(blob).items()})
    return pd.DataFrame(per).mean().to_frame("accuracy") if per else pd.DataFrame()


def report_section(rows: pd.DataFrame, out: Any, *, bootstrap: int = 1000) -> list[str]:
    """`sweeper report`'s threat-model section: per sweep scored under several threats, the
    transfer from linf to each other threat, its scatter, and the mean per corruption."""
    from pathlib import Path

    from sweeper.analysis.plots import save
    from sweeper.analysis.tables import to_markdown

    lines: list[str] = []
    for sweep, part in ok_rows(rows).groupby("sweep", sort=True):
        for target in ("l2", "corruptions"):
            try:
                result = transfer(part, "linf", target, resamples=bootstrap)
            except SweeperError:
                continue  # not evaluated under both threats, or too few networks
            fig = save(scatter(result), Path(out) / f"transfer_{sweep}_linf_{target}.png")
            lines += [f"### {sweep}: linf -> {target}", "", *summary_lines(result), "",
                      f"![{sweep} linf vs {target}]({fig.name})", ""]  # fmt: skip
        table = corruption_table(part)
        if not table.empty:
            table["accuracy"] = (100 * table["accuracy"]).round(1)
            sources = ", ".join(sorted(part["corruption_source"].dropna().unique()))
            lines += [f"### {sweep}: accuracy per corruption (%, mean of 5 severities)", "",
                      f"Source: {sources}.", "", to_markdown(table), ""]  # fmt: skip
    if not lines:
        return []
    return ["## Threat models: do the rankings survive L2 attacks and corruptions?", "",
            "Networks (seeds averaged) ranked under L-inf and under each other threat the "
            "sweep was scored under (`eval.threats`); 95% BCa bootstrap intervals over "
            "networks.", "", *lines]  # fmt: skip
