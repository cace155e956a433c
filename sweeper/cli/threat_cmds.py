"""`sweeper transfer`: does a study's ranking of architectures survive another threat model?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sweeper.errors import SweeperError


def transfer_cmd(
    sweep: Annotated[str, typer.Argument(help="One sweep's results folder (RESULTS/<sweep>).")],
    source: Annotated[str, typer.Option("--from", help="Threat: linf, l2 or corruptions.")] = (
        "linf"
    ),
    target: Annotated[str, typer.Option("--to", help="Threat: linf, l2 or corruptions.")] = "l2",
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the CIs.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    plot: Annotated[
        Path | None,
        typer.Option(help="Scatter to write (default: transfer-<sweep>-<from>-<to>.png here)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Rank a study's networks under two threat models (metrics of `sweeper eval` runs
    included): Kendall tau and Spearman rho with 95% bootstrap CIs over networks, a scatter
    plot, and the factors whose effect changes sign."""
    from sweeper import results
    from sweeper.analysis import plots, tables, transfer

    for flag, threat in (("--from", source), ("--to", target)):
        if threat not in transfer.THREAT_METRICS:
            raise SweeperError(f"{flag}: expected linf, l2 or corruptions, got {threat!r}")
    rows = tables.load(sweep)
    if rows.empty:
        raise SweeperError(f"{sweep}: no result rows")
    rows = transfer.with_evaluations(rows, results.read_evals(sweep))
    result = transfer.transfer(rows, source, target, resamples=bootstrap, seed=seed)
    name = Path(sweep.rstrip("/")).name
    path = plot if plot is not None else Path(f"transfer-{name}-{source}-{target}.png")
    try:
        plots.save(transfer.scatter(result), path)
    except OSError as err:
        raise SweeperError(f"--plot: cannot write {path}: {err.strerror or err}") from None
    if as_json:
        print(json.dumps({"results": sweep, "plot": str(path), **result.to_json()}, indent=2))
        return
    print("\n".join(transfer.summary_lines(result)))
    print(f"figure: {path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("transfer")(transfer_cmd)
