"""Study economics: `sweeper fidelity` (does a cheap schedule rank networks like the full one?),
plus the helpers behind `run --subsample/--from/--stratify`, `run --order adaptive` and the
surrogate lines of `sweeper status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sweeper.cli.analysis_cmds import check_accuracy
from sweeper.errors import SweeperError

if TYPE_CHECKING:
    from sweeper.space import SearchSpace
    from sweeper.sweep.plan import Select


def fidelity_cmd(
    low: Annotated[str, typer.Argument(help="Results of the cheap fidelity (a sweep's folder).")],
    high: Annotated[str, typer.Argument(help="Results of the expensive fidelity.")],
    metric: Annotated[str, typer.Option(help="Accuracy column to rank networks by.")] = "cw_acc",
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the CIs.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write the low-vs-high scatter (one dot per network).")
    ] = None,
) -> None:
    """Compare one study at two fidelities (schedule, stop epoch, attack steps, method):
    networks matched by architecture and seed, Kendall tau and Spearman rho with 95%
    bootstrap CIs, top-k overlap, and which of the study's conclusions hold at both."""
    from sweeper.analysis import fidelity, tables

    check_accuracy("--metric", metric)
    check = fidelity.compare(
        tables.load(low),
        tables.load(high),
        metric=metric,
        resamples=bootstrap,
        seed=seed,
        names=(f"LOW {low}", f"HIGH {high}"),
    )
    if plot is not None:
        from sweeper.analysis import plots

        try:
            plots.save(plots.fidelity_scatter(check), plot)
        except OSError as err:
            raise SweeperError(f"--plot: cannot write {plot}: {err.strerror or err}") from None
    if as_json:
        print(json.dumps({"low": low, "high": high, **check.to_json()}, indent=2, default=str))
        return
    print(f"LOW = {low}\nHIGH = {high}\n")
    print("\n".join(fidelity.summary_lines(check)))
    if plot is not None:
        print(f"\nfigure: {plot}")


def subsample_option(
    space: SearchSpace, results: str, k: int | None, source: str | None, stratify: str, seed: int
) -> Select | None:
    """`run --subsample K --from SWEEP --stratify METRIC`: the plan's cell selector (or None)."""
    if k is None and source is None:
        return None
    if k is None or source is None:
        raise SweeperError("--subsample K and --from RESULTS/SWEEP go together")
    check_accuracy("--stratify", stratify)
    if space.is_search:
        raise SweeperError("--subsample reruns grid cells; this space is an optuna search")
    from sweeper import results as store
    from sweeper.economics.subsample import subsample_selector

    if _absolute(store.sweep_dir(results, space.name)) == _absolute(source):
        raise SweeperError(
            f"--from {source} is the sweep being written: name the subsample with --sweep NAME"
        )
    return subsample_selector(source, k, metric=stratify, seed=seed, study=space.study)


def _absolute(uri: str) -> str:
    import os

    return uri.rstrip("/") if "://" in uri else os.path.realpath(os.path.expanduser(uri))


def check_order(space: SearchSpace, order: str) -> str:
    """`run --order`: grid (the listed order) or adaptive (a surrogate picks the next cell)."""
    if order not in ("grid", "adaptive"):
        raise SweeperError(f"--order: expected grid or adaptive, got {order!r}")
    if order == "adaptive" and space.is_search:
        raise SweeperError("--order adaptive orders a grid's cells; this space is an optuna search")
    return order


def adaptive_status(path: str, sweep: str) -> dict[str, Any] | None:
    """The surrogate summary an adaptive run left for `sweep` (PATH is a root or its folder)."""
    from sweeper import results as store
    from sweeper.results.summary import read_summary

    for where in (store.sweep_dir(path, sweep), path):
        summary = read_summary(where)
        if summary is not None and summary.get("sweep") == sweep:
            return summary
    return None


def adaptive_lines(summary: dict[str, Any]) -> list[str]:
    """The summary for a reader deciding whether to stop the sweep now."""
    done = f"{summary['finished']} of {summary['cells']} cells finished"
    rho = summary.get("cv_spearman")
    head = f"adaptive order ({summary.get('updated', '?')}): {done}"
    if rho is None or "best" not in summary:
        return [head + "; too few for a surrogate yet"]
    best = summary["best"]
    factors = "; ".join(
        f"{f['factor']} = {f['best']} (P {f['probability']:.2f})" for f in summary["factors"]
    )
    run = "finished" if best.get("finished") else "not run yet"
    return [
        head + f"; surrogate {summary.get('surrogate', 'GP')}, 5-fold CV Spearman {rho:.2f}",
        f"  predicted best: {best['cell']} ({summary['metric']} {100 * best['predicted']:.1f} "
        f"± {100 * best['sd']:.1f}, {run}); P(it is the grid's best) = {best['probability']:.2f},"
        f" P(the best is in the predicted top 5) = {summary['top5_probability']:.2f}",
        f"  best per factor: {factors}",
        f"  stopping now: risk {summary['risk']:.2f} that the predicted best is not the best",
    ]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("fidelity")(fidelity_cmd)
