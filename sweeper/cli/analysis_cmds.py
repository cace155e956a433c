"""`sweeper fit-scaling` and `sweeper report`: read a sweep's rows, fit and summarise them."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sweeper.errors import SweeperError

ACCURACIES = ("clean_acc", "pgd_acc", "cw_acc", "aa_acc")  # the metric columns, every command's


def check_accuracy(option: str, value: str) -> None:
    """An option naming a metric names one of the accuracy columns, or it is one line."""
    if value not in ACCURACIES:
        raise SweeperError(f"{option}: expected one of {', '.join(ACCURACIES)}, got {value!r}")


def _analysis(module: str) -> Any:
    """Import analysis.<module> lazily: pandas plotting stays off the CLI's start-up path."""
    return importlib.import_module(f"sweeper.analysis.{module}")


def _budgets(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SweeperError(f"--budgets: expected GMACs separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise SweeperError(f"--budgets: expected positive GMACs, got {text!r}")
    return values


def fit_scaling_cmd(
    results: Annotated[Path, typer.Argument(
        help="A compound-scaling sweep's results folder (or a parquet file)."
    )],  # fmt: skip
    metric: Annotated[str, typer.Option(help="Accuracy column to maximise.")] = "cw_acc",
    budgets: Annotated[
        str, typer.Option(help="GMACs budgets to bin rows to when they have no macs_target.")
    ] = "5,10,15,20,30,40",
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the CIs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    sweep: Annotated[
        str | None, typer.Option(help="Only rows of this sweep (when RESULTS holds several).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write the figure (points, fit, 95% band) to this PNG.")
    ] = None,
) -> None:
    """Needs a compound-scaling sweep (`sweeper run compound`: several depth shares per MACs
    budget). Fits robust accuracy against the depth share sum(D)/(sum(D)+sum(W)), per budget
    and pooled, and reports the share that maximises it (the paper: about 0.7, i.e. 7 : 3)."""
    from sweeper.analysis.scaling import fit_scaling

    rows = _analysis("tables").load(results)
    rows = _one_sweep(rows, sweep, results)
    if metric not in rows:
        raise SweeperError(f"--metric: {metric!r} is not a column of the results")
    fit = fit_scaling(rows, metric=metric, budgets=_budgets(budgets), n_boot=bootstrap, seed=seed)
    if plot is not None:
        plots = _analysis("plots")
        try:
            plots.save(plots.scaling_figure(fit), plot)
        except OSError as err:
            raise SweeperError(f"--plot: cannot write {plot}: {err.strerror or err}") from None
    if as_json:
        print(json.dumps(fit.to_json(), indent=2))
        return
    _print_fit(fit, plot)


def _one_sweep(rows: Any, sweep: str | None, results: Path) -> Any:
    """The rows of the named sweep; unnamed, the only sweep, or the only one whose rows
    carry several budgets (a results root holding a compound sweep among others)."""
    names = sorted(set(rows["sweep"].dropna()))
    if sweep is not None:
        if sweep not in names:
            raise SweeperError(f"{results}: no rows of sweep {sweep!r}; found {', '.join(names)}")
        return rows[rows["sweep"] == sweep]
    if len(names) <= 1:
        return rows
    scaled = [n for n in names if rows.loc[rows["sweep"] == n, "macs_target"].nunique() > 1]
    if len(scaled) == 1:
        print(
            f"fitting sweep {scaled[0]!r} (the one with several budgets; --sweep picks another)",
            file=sys.stderr,
        )
        return rows[rows["sweep"] == scaled[0]]
    raise SweeperError(f"{results} holds the sweeps {', '.join(names)}: pick one with --sweep")


def _print_fit(fit: Any, plot: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from sweeper.analysis.scaling import MACS_TOLERANCE

    console = Console()
    table = Table(
        title=f"Best depth share for {fit.metric} (quadratic fit, {fit.n_boot} "
        "bootstrap resamples of networks)"
    )
    for col in ("budget", "n", "R²", "best share", "95% CI", "D : W", "boot interior"):
        table.add_column(col, justify="left" if col == "budget" else "right")
    for opt in [*fit.budgets, fit.pooled]:
        table.add_row(
            opt.label,
            str(opt.n),
            "-" if opt.r2 is None else f"{opt.r2:.2f}",
            "none" if opt.depth_share is None else f"{opt.depth_share:.3f}",
            "-" if opt.ci_low is None else f"{opt.ci_low:.3f}-{opt.ci_high:.3f}",
            opt.ratio or "-",
            "-" if opt.boot_interior is None else f"{opt.boot_interior:.0%}",
            style="bold" if opt.macs_target is None else None,
        )
    console.print(table)
    print(
        "D : W is sum(D) : sum(W) on a scale of 10; boot interior: the fraction of "
        "resamples with a maximum inside the sampled shares."
    )
    spreads = [(o.label, o.macs_ratio) for o in [*fit.budgets, fit.pooled] if o.macs_ratio]
    if spreads:
        print(
            "MACs of the fitted networks / their budget: "
            + ", ".join(f"{label} {lo:.3f}-{hi:.3f}" for label, (lo, hi) in spreads)
        )
    spread = fit.pooled.macs_ratio
    if spread is not None and max(1 - spread[0], spread[1] - 1) > MACS_TOLERANCE:
        print(
            f"warning: the networks' MACs range {spread[0]:.2f}-{spread[1]:.2f} of their budget "
            f"(more than {MACS_TOLERANCE:.0%} off): their depth shares also differ in compute."
        )
    for opt in [*fit.budgets, fit.pooled]:
        if not opt.interior:
            print(f"{opt.label}: no interior optimum - {opt.reason}.")
        elif opt.boot_interior is not None and opt.boot_interior < 0.8:
            print(
                f"{opt.label}: weak optimum - only {opt.boot_interior:.0%} of the "
                "resamples have one inside the sampled shares."
            )
    if plot is not None:
        print(f"figure: {plot}")
    share = fit.pooled.depth_share
    if share is not None:
        gmacs = max(b.macs_target for b in fit.budgets)
        print(
            f"Next, the network at the fitted share for a budget: "
            f"sweeper scale --target-gmacs {gmacs:g} --depth-share {share:.2f}"
        )


def report_cmd(
    results: Annotated[Path, typer.Argument(help="A results folder: one sweep or several.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md and the PNGs.")] = Path("report"),
    metric: Annotated[str, typer.Option(help="Robust accuracy column to rank by.")] = "cw_acc",
    bootstrap: Annotated[int, typer.Option(min=0, help="Resamples of the scaling fit.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Write report.md (per-study tables: accuracies, 95% CIs, deltas from the baseline) and
    figures (factor effects, accuracy vs MACs, depth/width heat maps, scaling fit)."""
    rows = _analysis("tables").load(results)
    if metric not in rows:
        raise SweeperError(f"--metric: {metric!r} is not a column of the results")
    check_accuracy("--metric", metric)  # the tables rank networks by an accuracy column only
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweeperError(f"--out: cannot make the folder {out}: {err.strerror or err}") from None
    path = _analysis("report").write_report(
        rows, out, metric=metric, bootstrap=bootstrap, origin=str(results)
    )
    figures = sorted(str(p) for p in out.glob("*.png"))
    if as_json:
        print(json.dumps({"report": str(path), "figures": figures, "rows": len(rows)}))
        return
    print(f"wrote {path} ({len(figures)} figures)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("fit-scaling")(fit_scaling_cmd)
    app.command("report")(report_cmd)
