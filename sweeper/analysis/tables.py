"""Per-study tables from result rows: what varies, each variant's accuracies, and deltas.

Works on any DataFrame with the result schema's columns (sweeper.schema.COLUMNS), e.g.

    rows = load("results")                  # one sweep folder or a folder of sweeps
    for sweep, rows_s in rows.groupby("sweep"):
        print(variant_table(rows_s))

Which columns are a study's factors is detected, not declared: the architecture and
training columns that take more than one value among the sweep's ok rows, plus
architecture/training settings that the schema has no column for (e.g. the SE
reduction) read from each row's `config` JSON. Widths (or depths) scaled to match a
budget are consequences, not factors. Whether they were is read from the config (every
`derive:` rule records its budget as `macs_target`), never guessed from the values: a grid
of widths 0.5 and 1 is a grid. With one budget the fitted widths are dropped (the depths,
when they vary, stay factors); with several it is a compound-scaling sweep, whose factors
are the budget and the depth share.

The baseline of a study is the variant whose factors all take the WRN-28-10-like
default (BASELINE: basic pre-activation block, standard convs, no SE, 3x3, ReLU,
BatchNorm, D = 4,4,4, W = 10,10,10, TRADES); when no variant matches, the variant with
the most ok rows (ties: the first in sort order) is the baseline. Deltas are the
variant's mean minus the baseline's mean.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeper.results.columns import fmt_value

METRICS = ["clean_acc", "pgd_acc", "cw_acc", "aa_acc"]
CATEGORICAL = [
    "block",
    "activation_order",
    "conv_type",
    "se",
    "kernel_size",
    "activation",
    "norm",
    "dataset",
    "train_method",
    "epochs",
    "stop_epoch",
    "eps",
    "checkpoint",
    "cw_kappa",
    "precision",
]
DEPTHS = ["depth1", "depth2", "depth3"]
WIDTHS = ["width1", "width2", "width3"]
# Settings without a column of their own, read from the config JSON when they vary.
CONFIG_FIELDS = [
    "arch.cardinality",
    "arch.base_width",
    "arch.scales",
    "arch.se_reduction",
    "arch.expansion",
    "train.lr",
    "train.weight_decay",
    "train.beta",
    "train.batch_size",
    "train.schedule",
    "train.ema",
    "train.steps",
    "train.step_size",
]
BASELINE: dict[str, Any] = {
    "block": "basic",
    "activation_order": "pre",
    "conv_type": "standard",
    "se": "none",
    "kernel_size": "3",
    "activation": "relu",
    "norm": "batchnorm",
    "dataset": "cifar10",
    "train_method": "trades",
    "eps": 8.0,
    "depth1": 4,
    "depth2": 4,
    "depth3": 4,
    "width1": 10.0,
    "width2": 10.0,
    "width3": 10.0,
}


def t975(dof: int) -> float:
    """The 97.5% quantile of Student's t with `dof` degrees of freedom (a two-sided 95%
    interval's half-width in standard errors); NaN below 1 dof."""
    from scipy import stats  # imported here: only a confidence interval needs it

    return float(stats.t.ppf(0.975, dof)) if dof >= 1 else float("nan")


def load(path: str | Path) -> pd.DataFrame:
    """Rows of a results folder: RESULTS/<sweep>/*.parquet, one sweep's folder, or one file
    (sweeper.results also reads s3:// and other pyarrow URIs). Names starting with _ or .
    (checkpoints, files being written) are skipped."""
    from sweeper.errors import SweeperError
    from sweeper.results import read

    rows = read(str(path))
    if rows.empty:
        raise SweeperError(f"{path}: no result rows (*.parquet) there or below")
    return rows


def ok_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"] if "status" in rows else rows


def config_columns(rows: pd.DataFrame, fields: list[str] = CONFIG_FIELDS) -> pd.DataFrame:
    """The given dotted fields of each row's config JSON as columns (missing: NaN)."""
    out: dict[str, list[Any]] = {f.split(".")[-1]: [] for f in fields}
    for blob in rows.get("config", pd.Series([None] * len(rows), index=rows.index)):
        try:
            cfg = json.loads(blob) if isinstance(blob, str) else {}
        except json.JSONDecodeError:
            cfg = {}
        for f in fields:
            value: Any = cfg
            for part in f.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            out[f.split(".")[-1]].append(value if not isinstance(value, list) else str(value))
    return pd.DataFrame(out, index=rows.index)


def _is_derived_shape(rows: pd.DataFrame) -> bool:
    """Widths/depths were computed from a budget (match_gmacs or RobustScaling): the
    config says so with its macs_target; a non-integer width alone says nothing."""
    return bool("macs_target" in rows and rows["macs_target"].notna().any())


def with_factor_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows plus the config-only settings and the depth share, ready to group by."""
    rows = rows.copy()
    extra = config_columns(rows)
    for col in extra:
        if col not in rows:
            rows[col] = extra[col]
    if set(DEPTHS + WIDTHS) <= set(rows):
        d, w = rows[DEPTHS].sum(axis=1), rows[WIDTHS].sum(axis=1)
        rows["depth_share"] = (d / (d + w)).round(3)
    return rows


def study_factors(rows: pd.DataFrame) -> list[str]:
    """The columns that vary among a sweep's ok rows and define its variants."""
    ok = ok_rows(rows)
    if "depth_share" not in ok:
        ok = with_factor_columns(ok)
    varying = [c for c in CATEGORICAL if c in ok and ok[c].nunique(dropna=True) > 1]
    shape = [c for c in DEPTHS + WIDTHS if c in ok and ok[c].nunique(dropna=True) > 1]
    if shape and _is_derived_shape(ok):
        if ok["macs_target"].nunique() > 1:
            shape = ["macs_target", "depth_share"]  # a compound-scaling sweep
        else:  # one budget: the widths were fitted to it, the depths were chosen
            shape = [c for c in shape if c in DEPTHS]
    factors = varying + shape
    extra = [c.split(".")[-1] for c in CONFIG_FIELDS]
    for col in extra:
        if col not in ok or ok[col].nunique(dropna=True) < 2:
            continue
        # drop a setting that the column factors already determine (cardinality per conv_type)
        if factors and (ok.groupby(factors, dropna=False)[col].nunique(dropna=False) <= 1).all():
            continue
        factors.append(col)
    return factors


def _pick_baseline(table: pd.DataFrame, factors: list[str]) -> Any:
    """Index of the baseline variant (see the module docstring)."""
    match = pd.Series(True, index=table.index)
    known = [f for f in factors if f in BASELINE]
    for f in known:
        values = table.index.get_level_values(f) if len(factors) > 1 else table.index
        match &= np.asarray([_same(v, BASELINE[f]) for v in values])
    candidates = table[match] if known and match.any() else table
    return candidates["n"].sort_values(ascending=False, kind="stable").index[0]


def _arch_text(row: pd.Series) -> str:
    """'D 14/14/7, W 5/7/3' from a row's depth and width columns."""
    d = "/".join(fmt_value(float(row[c])) for c in DEPTHS if c in row)
    w = "/".join(fmt_value(float(row[c])) for c in WIDTHS if c in row)
    return f"D {d}, W {w}"


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, (int, float)):
        try:
            return math.isclose(float(value), float(default))
        except (TypeError, ValueError):
            return False
    return str(value) == str(default)


def variant_table(rows: pd.DataFrame, factors: list[str] | None = None) -> pd.DataFrame:
    """One row per variant: n (ok rows), mean and 95% CI half-width (t over seeds; NaN with
    one seed) of each metric, its delta from the baseline, mean params and MACs, and a
    `baseline` flag. Indexed by the factors (one index level per factor)."""
    rows = with_factor_columns(ok_rows(rows))
    if rows.empty:
        return pd.DataFrame()
    factors = study_factors(rows) if factors is None else factors
    if not factors:
        rows = rows.assign(variant="all")
        factors = ["variant"]
    metrics = [m for m in METRICS if m in rows]
    grouped = rows.groupby(factors, dropna=False, sort=True)
    table = pd.DataFrame({"n": grouped.size()})
    for m in metrics:
        mean, std, count = grouped[m].mean(), grouped[m].std(), grouped[m].count()
        table[m] = mean
        half = [
            t975(int(k) - 1) * s / math.sqrt(k) if k > 1 else np.nan for s, k in zip(std, count)
        ]
        table[f"{m}_ci"] = half
    for col in ("params", "macs"):
        if col in rows:
            table[col] = grouped[col].mean()
    shape = [c for c in DEPTHS + WIDTHS if c in rows]
    if shape and not set(shape) & set(factors) and (rows[shape].nunique() > 1).any():
        # derived depths/widths (matched budget, RobustScaling): say what each variant is
        table["arch"] = grouped[shape].first().apply(_arch_text, axis=1)
    base = _pick_baseline(table, factors)
    for m in metrics:
        table[f"{m}_delta"] = table[m] - table.loc[base, m]
    table["baseline"] = (
        table.index == base if len(factors) == 1 else [i == base for i in table.index]
    )
    return table


def summarize(rows: pd.DataFrame, metric: str = "cw_acc") -> pd.DataFrame:
    """One line per sweep: factors, trials ok/failed, variants, baseline and best variant
    by `metric`, and the spread (best minus worst variant mean)."""
    out = []
    for sweep, part in rows.groupby("sweep", sort=True):
        ok = ok_rows(part)
        line: dict[str, Any] = {"sweep": sweep, "ok": len(ok), "failed": len(part) - len(ok)}
        if len(ok):
            factors = study_factors(with_factor_columns(ok))
            table = variant_table(ok, factors)
            best = table[metric].idxmax() if table[metric].notna().any() else None
            # across budgets (compound scaling) no network is a baseline for the others
            budgets = "macs_target" in factors
            line.update(
                factors=", ".join(factors) or "-",
                variants=len(table),
                baseline="-" if budgets else label(table.index[table["baseline"]][0], table),
                best=label(best, table) if best is not None else "-",
                best_delta=table.loc[best, f"{metric}_delta"]
                if best is not None and not budgets
                else np.nan,
                spread=table[metric].max() - table[metric].min(),
            )
        out.append(line)
    return pd.DataFrame(out)


def label(key: Any, table: pd.DataFrame) -> str:
    """A variant's index key as 'factor=value, ...' text."""
    names = list(table.index.names)
    values = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{n}={fmt_value(v)}" for n, v in zip(names, values))


def _sig(x: float) -> str:
    """One decimal for big numbers, three significant digits for small ones."""
    return "-" if pd.isna(x) else f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def percent_view(table: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """The variant table for reading: accuracies in % ('53.1 ± 0.4'), deltas in points,
    params in M and MACs in G; the baseline marked with '*'."""
    metrics = [m for m in (metrics or METRICS) if m in table]
    view = pd.DataFrame(
        index=[
            label(k, table) + (" *" if b else "") for k, b in zip(table.index, table["baseline"])
        ]
    )
    view["n"] = table["n"].to_numpy()
    for m in metrics:
        mean, ci = table[m].to_numpy() * 100, table[f"{m}_ci"].to_numpy() * 100
        view[m.removesuffix("_acc")] = [
            "-" if np.isnan(a) else (f"{a:.2f}" if np.isnan(c) else f"{a:.2f} ± {c:.2f}")
            for a, c in zip(mean, ci)
        ]
        view[f"Δ{m.removesuffix('_acc')}"] = [
            "-" if np.isnan(d) else f"{d:+.2f}" for d in table[f"{m}_delta"].to_numpy() * 100
        ]
    if "arch" in table:
        view["arch"] = table["arch"].to_numpy()
    if "params" in table:
        view["params (M)"] = [_sig(p / 1e6) for p in table["params"]]
    if "macs" in table:
        view["GMACs"] = [_sig(g / 1e9) for g in table["macs"]]
    view.index.name = "variant"
    return view


def to_markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, which we do not ship)."""
    frame = frame.reset_index() if index else frame
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        cells = [fmt_value(v) if not isinstance(v, str) else v for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
