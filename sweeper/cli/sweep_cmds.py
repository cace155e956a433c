"""`sweeper run` (a search space on Ray Tune) and `sweeper status` (what a sweep holds)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from sweeper.cli.analysis_cmds import ACCURACIES
from sweeper.errors import first_line


def id_column(table: Table) -> None:
    """A trial_id column that is never cut or wrapped (other columns shrink instead)."""
    table.add_column("trial_id", no_wrap=True, min_width=16)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("run")(run)
    app.command("status")(status)


# long: a typer command; 40 of its lines are its options, one each
def run(
    space: Path = typer.Argument(
        ..., metavar="SPACE_OR_STUDY", help="a search-space YAML file, or the name of a "
        "packaged study (smoke, depth, width, compound, ...; `sweeper init` copies them)"
    ),
    results: str = typer.Option("results", help="results folder or pyarrow URI (s3://...)"),
    set_: list[str] = typer.Option([], "--set", help="override a base value: key.path=value"),
    address: str = typer.Option(None, help="join a Ray cluster (auto or host:port)"),
    cpus_per_trial: float = typer.Option(
        1.0, min=0.0, help="CPUs Ray reserves for each trial (for each worker of a "
        "multi-worker trial); with no GPU this sets how many trials run at once"
    ),
    gpus_per_trial: float = typer.Option(
        None,
        min=0.0,
        max=1.0,
        help="GPU share of a one-worker trial (more GPUs: --workers-per-trial); default 1 or 0",
    ),
    workers_per_trial: int = typer.Option(
        None, min=1, help="data-parallel workers per trial, one GPU each (runtime.workers)"
    ),
    max_concurrent: int = typer.Option(None, min=1, help="trials at once (default: by resources)"),
    max_failures: int = typer.Option(2, min=0, help="Ray retries of a preempted trial"),
    retry_failed: bool = typer.Option(False, help="rerun trials whose row says failed"),
    dry_run: bool = typer.Option(False, help="list the trials; start nothing"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    sweep: str = typer.Option(None, help="results folder / sweep name (default: the space's)"),
    order: str = typer.Option(
        "grid", help="the order cells run in: grid (as the space lists them) | adaptive (a "
        "surrogate picks each next cell; grids only)"
    ),
    subsample: int = typer.Option(None, min=1, help="run only K cells of --from's finished ones"),
    from_: str = typer.Option(
        None, "--from", help="a finished sweep to --subsample from (--dry-run: its seed spread)"
    ),
    stratify: str = typer.Option("cw_acc", help="--subsample spreads K over this metric"),
    subsample_seed: int = typer.Option(0, help="seed of the --subsample draw"),
    log: list[str] = typer.Option([], help="a tracker per trial: mlflow, wandb, tensorboard"),
    log_uri: str = typer.Option(None, help="MLflow tracking URI / W&B folder (default: "
                                "RESULTS/<sweep>/_mlflow; W&B: each trial's Tune folder)"),
) -> None:
    """Run every trial of a search space that has no result row yet."""
    from sweeper import space as spaces

    if workers_per_trial is not None:  # the same as --set runtime.workers=N
        set_ = [*set_, f"runtime.workers={workers_per_trial}"]
    loaded = spaces.load(space, set_, sweep=sweep)  # before pandas, Ray, torch are imported
    from sweeper.cli import economics_cmds
    from sweeper.sweep.plan import make_plan
    from sweeper.sweep.trackers import check_trackers

    order = economics_cmds.check_order(loaded, order)
    trackers = check_trackers(log)
    spread_from = from_ if dry_run and subsample is None else None  # only the power figures
    select = economics_cmds.subsample_option(loaded, results, subsample,
                                             None if spread_from else from_, stratify,
                                             subsample_seed)  # fmt: skip
    if dry_run:
        plan = make_plan(loaded, results, retry_failed=retry_failed, select=select)
        _print_plan(plan, as_json, spread_from)
        return
    from sweeper import api

    summary = api.run(loaded, results, address=address, cpus_per_trial=cpus_per_trial,
                      gpus_per_trial=gpus_per_trial, max_concurrent=max_concurrent,
                      max_failures=max_failures, retry_failed=retry_failed, progress=True,
                      order=order, select=select, log=trackers, log_uri=log_uri)  # fmt: skip
    _print_summary(loaded, summary, as_json)
    _say_skipped_failures(summary.plan, retry_failed)
    raise typer.Exit(_exit_code(summary))


def _print_summary(loaded: Any, summary: Any, as_json: bool) -> None:
    """The run's rows: a table under a line of counts, or (--json) one JSON document."""
    rows = summary.rows
    if as_json:
        out = {
            "sweep": loaded.name,
            "trials": len(summary.plan.configs) if not loaded.is_search else len(rows),
            "started": summary.started,
            "finished": summary.finished,
            "unfinished": summary.unfinished,
            "failed": [{"trial_id": t, "error": e} for t, e in summary.failed],
            "seconds": round(summary.seconds, 1),
            "results": summary.plan.sweep_uri,
            "counts": {str(k): int(v) for k, v in rows["status"].value_counts().items()},
            "rows": _records(rows),
        }
        print(json.dumps(out, indent=2))
    else:
        _print_rows(rows, f"{loaded.name}: {summary.finished} of {summary.started} trial(s) "
                          f"finished in {summary.seconds:,.0f}s; rows in "
                          f"{summary.plan.sweep_uri}")  # fmt: skip


def _say_skipped_failures(plan: Any, retry_failed: bool) -> None:
    """A rerun leaves failed rows alone unless told: say how many, and how to retry them."""
    import sys

    skipped = 0 if retry_failed else sum(1 for s in plan.existing.values() if s == "failed")
    if skipped:
        print(f"{skipped} trial(s) with a failed row were not rerun; --retry-failed reruns "
              "them", file=sys.stderr)  # fmt: skip


def _exit_code(summary: Any) -> int:
    """0: every trial of this run ok; 1: some failed (named here); 130: interrupted (Ctrl+C);
    143: stopped by SIGTERM (scancel, a time limit, preemption)."""
    import sys

    from sweeper.sweep.signals import TERMINATED_EXIT, interrupted_line

    if summary.terminated:
        print(interrupted_line(summary.unfinished, "SIGTERM"), file=sys.stderr)
        return TERMINATED_EXIT
    if summary.unfinished:
        print(interrupted_line(summary.unfinished), file=sys.stderr)
        return 130
    if summary.failed:
        names = ", ".join(f"{t} ({e})" for t, e in summary.failed[:10])
        more = f" and {len(summary.failed) - 10} more" if len(summary.failed) > 10 else ""
        print(f"{len(summary.failed)} trial(s) of this run failed: {names}{more}",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _plan_json(plan: Any) -> dict[str, Any]:
    from sweeper.space import macs_of, varying_values

    configs = plan.configs
    macs = [macs_of(c.arch) for c in configs]
    values = varying_values(configs)
    out: dict[str, Any] = {
        "sweep": plan.space.name,
        "file": plan.space.file,
        "trials": plan.space.doc.search.num_samples if plan.space.is_search else len(configs),
        "to_run": plan.budget,
        "done": sum(1 for s in plan.existing.values() if s == "ok"),
        "failed": sum(1 for s in plan.existing.values() if s == "failed"),
        "total_macs": int(sum(macs)),
        "trials_list": [
            {
                "trial_id": c.trial_id,
                "status": plan.existing.get(c.trial_id, "pending"),
                "macs": m,
                "macs_target": c.macs_target,
                "workers": c.runtime.workers,
                "values": v,
            }
            for c, m, v in zip(configs, macs, values)
        ],  # fmt: skip
    }
    if plan.space.is_search:
        s = plan.space.doc.search
        from sweeper.space import search_params

        out["search"] = {"method": s.method, "sampler": s.sampler, "metric": s.metric,
                         "mode": s.mode, "num_samples": s.num_samples,
                         "params": {k: d.model_dump(exclude_none=True)
                                    for k, d in search_params(plan.space).items()}}  # fmt: skip
    estimate = _gpu_hours(plan.to_run)
    out["gpu_hours"] = estimate["gpu_hours"]
    out["gpu_hours_from" if "source" in estimate else "gpu_hours_note"] = (
        estimate.get("source") or estimate["note"]
    )
    return out


def _gpu_hours(configs: list[Any]) -> dict[str, Any]:
    """The calibration's GPU-hour estimate and where it comes from, or why there is none
    (sweeper.perf.calibrate.dry_run_estimate); a broken calibration never stops a dry run."""
    from sweeper.perf.calibrate import dry_run_estimate

    try:
        estimate = dry_run_estimate(configs)
    except Exception as err:  # noqa: BLE001 - an estimate must never stop a dry run
        return {"gpu_hours": None, "note": f"no GPU-hour estimate: {first_line(err)}"}
    hours = estimate["gpu_hours"]
    if hours is None or not math.isfinite(hours):
        return {"gpu_hours": None, "note": estimate.get("note", "no GPU-hour estimate")}
    # three significant digits: a small sweep (digits) costs minutes, not "0.0" hours
    return {**estimate, "gpu_hours": float(f"{hours:.3g}")}


def _power(plan: Any, source: str | None) -> dict[str, Any]:
    """The study's detectable differences (sweeper.analysis.power), from `source`'s seed
    spread when given (`--from`), else the stated default."""
    from sweeper.analysis.power import Spread, spread_from_rows, study_power

    if not plan.configs:
        return {}
    spread = Spread()
    if source is not None:
        from sweeper import results as store
        from sweeper.errors import SweeperError

        rows = store.read(source)
        if rows.empty:
            raise SweeperError(f"--from {source}: no result rows there")
        spread = spread_from_rows(rows)
    return study_power(plan.configs, spread)


def _print_plan(plan: Any, as_json: bool, spread_from: str | None = None) -> None:
    info = {**_plan_json(plan), **_power(plan, spread_from)}
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    console = _console()
    table = Table(title=f"{info['sweep']}: {info['trials']} trials, {info['to_run']} to run, "
                        f"{info['total_macs'] / 1e9:,.2f} GMACs in all")  # fmt: skip
    id_column(table)
    table.add_column("status")
    table.add_column("GMACs", justify="right")
    table.add_column("values")
    for t in info["trials_list"]:
        shown = ", ".join(f"{k}={_compact(v)}" for k, v in t["values"].items())
        table.add_row(t["trial_id"], t["status"], f"{t['macs'] / 1e9:.3f}", shown)
    console.print(table)
    if "search" in info:
        console.print(f"optuna search: {info['search']}", soft_wrap=True)
    if info["gpu_hours"] is not None:
        src = info["gpu_hours_from"]
        console.print(f"estimated GPU hours: {info['gpu_hours']:,} (from a {src['mode']} "
                      f"calibration on {src['device']}, {src['date']}: {src['path']})",
                      highlight=False, markup=False, soft_wrap=True)  # fmt: skip
    else:
        console.print(info["gpu_hours_note"], highlight=False, markup=False, soft_wrap=True)
    if "detectable_difference" in info:
        console.print(_power_line(info), highlight=False, markup=False, soft_wrap=True)


def _power_line(info: dict[str, Any]) -> str:
    p = info["power"]
    figures = ", ".join(f"{k.removesuffix('_acc')} {'-' if v is None else f'{v:.2f}'}"
                        for k, v in info["detectable_difference"].items())  # fmt: skip
    sources = sorted(set(p["seed_sd_from"].values()))
    return (f"detectable difference between two cells (points; {p['power']:.0%} power, "
            f"alpha {p['alpha']}, two-sided, {p['seeds_per_cell']} seed(s) per cell, "
            f"{p['images']['pgd_acc']} test / {p['images']['aa_acc']} AutoAttack images, "
            f"seed spread from {' / '.join(sources)}): {figures}")


def _compact(value: Any) -> str:
    """Per-stage lists the way rows store them: 'relu' when uniform, '3/5/7' when not."""
    from sweeper.trial import per_stage

    if isinstance(value, list) and value and not any(isinstance(v, list) for v in value):
        return per_stage(tuple(value))
    return str(value)


def _records(frame: Any, varying: list[str] | None = None) -> list[dict[str, Any]]:
    keys = _varying(frame) if varying is None else varying
    cols = ["trial_id", "status", "error", "seed", *keys, "macs", *ACCURACIES, "train_seconds"]
    return json.loads(frame[cols].to_json(orient="records"))


# fixed columns that hold a config key a sweep may vary (sweeper.results.columns writes no
# dotted copy of them)
VARYING_FIXED = ("block", "activation_order", "conv_type", "se", "kernel_size", "activation",
                 "norm", "depth1", "depth2", "depth3", "width1", "width2", "width3", "eps",
                 "eval_eps", "pgd_steps", "cw_steps")  # fmt: skip
SHOWN = ("block", "activation", "depth1", "depth2", "depth3", "width1", "width2", "width3")


def _varying(frame: Any) -> list[str]:
    """The columns of config keys that vary among these rows: the fixed ones above, and
    `train.beta` and the like (one per key that varies within a sweep, see
    sweeper.results.columns)."""
    return [c for c in frame.columns if (c in VARYING_FIXED or "." in c)
            and frame[c].nunique(dropna=False) > 1]  # fmt: skip


def _console(stderr: bool = False) -> Console:
    """Wide enough for the results table even when piped (rich assumes 80 columns)."""
    import sys

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 140)


def _print_rows(frame: Any, title: str, *, by_id: bool = True,
                varying: list[str] | None = None) -> None:  # fmt: skip
    table = Table(title=title, title_justify="left")
    varying = [c for c in (_varying(frame) if varying is None else varying) if c not in SHOWN]
    id_column(table)
    attacks = [_header(frame, "PGD", "pgd_steps"), _header(frame, "CW", "cw_steps"), "AA"]
    for col in ("status", "block", "activation", "depths", "widths", *varying,
                "clean", *attacks):  # fmt: skip
        table.add_column(col, justify="right" if col.isupper() or col == "clean" else "left")
    flagged = 0
    for _, r in (frame.sort_values("trial_id") if by_id else frame).iterrows():
        depths = f"{r['depth1']}/{r['depth2']}/{r['depth3']}"
        widths = f"{r['width1']:g}/{r['width2']:g}/{r['width3']:g}"
        metrics = [_pct(r[m]) for m in ACCURACIES]
        if _aa_above_pgd(r):
            metrics[-1] += "*"
            flagged += 1
        table.add_row(r["trial_id"], r["status"], str(r["block"]), str(r["activation"]), depths,
                      widths, *(_cell(r[c]) for c in varying), *metrics)  # fmt: skip
    if flagged:
        table.caption = ("* AA above PGD: AutoAttack ran on the first aa_n test points only, "
                         "PGD on all of them; the subset's noise, not a weaker attack")  # fmt: skip
        table.caption_justify = "left"
    _console().print(table)
    failed = frame[frame["status"] == "failed"]
    for _, r in failed.iterrows():  # one line each, never wrapped: a log is grepped
        print(f"failed {r['trial_id']}: {r['error']}", file=sys.stderr)


def _header(frame: Any, name: str, steps: str) -> str:
    """'PGD-20' when every row's attack took the same steps (rows of older sweeps: 'PGD')."""
    values = frame[steps].dropna().unique() if steps in frame else []
    return f"{name}-{int(values[0])}" if len(values) == 1 else name


def _aa_above_pgd(row: Any) -> bool:
    """AutoAttack (the stronger attack) above PGD, measured on fewer points than PGD."""
    aa, pgd, aa_n, pgd_n = (row.get(c) for c in ("aa_acc", "pgd_acc", "aa_n", "pgd_n"))
    known = all(v is not None and v == v for v in (aa, pgd, aa_n, pgd_n))
    return bool(known and aa > pgd and aa_n < pgd_n)


def _cell(value: Any) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pct(value: Any) -> str:
    return "-" if value is None or value != value else f"{100 * float(value):.1f}"


def status(
    path: str = typer.Argument(..., help="a results folder (all sweeps) or one sweep's folder"),
    top: int = typer.Option(5, min=0, help="best rows to show"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Counts by status, best rows and time spent, per sweep."""
    from sweeper import results
    from sweeper.cli.economics_cmds import adaptive_lines, adaptive_status
    from sweeper.errors import SweeperError
    from sweeper.schema import ranking_metric

    frame = results.read(path)
    if frame.empty:
        raise SweeperError(f"{path}: no result rows found")
    report = {}
    for sweep, rows in frame.groupby("sweep"):
        ok = rows[rows["status"] == "ok"]
        metric = ranking_metric({m for m in ACCURACIES if ok[m].notna().any()})  # as `run`
        best = ok.sort_values(metric, ascending=False).head(top)
        seconds = rows["train_seconds"].fillna(0).sum() + rows["eval_seconds"].fillna(0).sum()
        span = (rows["ended_at"].max() - rows["started_at"].min()).total_seconds()
        varies = _varying(rows)
        report[str(sweep)] = {
            "counts": {str(k): int(v) for k, v in rows["status"].value_counts().items()},
            "trials": len(rows),
            "varies": varies,
            "compute_seconds": round(float(seconds), 1),
            "wall_seconds": round(float(span), 1) if span == span else None,
            "best_by": metric,
            "best": _records(best, varies),
        }
        adaptive = adaptive_status(path, str(sweep))
        if adaptive is not None:
            report[str(sweep)]["adaptive"] = adaptive
    if as_json:
        print(json.dumps(report, indent=2))
        return
    console = _console()
    for sweep, info in report.items():
        counts = ", ".join(f"{k} {v}" for k, v in info["counts"].items())
        varies = f"; varies {', '.join(info['varies'])}" if info["varies"] else ""
        console.print(f"[bold]{sweep}[/]: {info['trials']} trials ({counts}); "
                      f"{info['compute_seconds']:,.0f}s of trial time, "
                      f"{info['wall_seconds'] or 0:,.0f}s wall{varies}",
                      soft_wrap=True)  # fmt: skip
        if info["best"]:
            order = [b["trial_id"] for b in info["best"]]
            ours = frame[frame["sweep"] == sweep]  # a trial_id may recur in another sweep
            best = ours.set_index("trial_id").loc[order].reset_index()
            _print_rows(best, f"best by {info['best_by']}", by_id=False, varying=info["varies"])
        for line in adaptive_lines(info["adaptive"]) if "adaptive" in info else []:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
