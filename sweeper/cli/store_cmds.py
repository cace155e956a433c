"""`sweeper eval` (stored weights evaluated again, into the evaluation table),
`sweeper export` (one trial as a self-contained model file) and `sweeper compact` (a sweep's
row logs folded into its tables)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import typer

from sweeper.cli.analysis_cmds import ACCURACIES
from sweeper.errors import SweeperError

THREAT_LABELS = (("L2 PGD", "l2_pgd_acc"), ("L2 AA", "l2_aa_acc"),
                 ("corruptions", "corruption_acc"))  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("eval")(eval_cmd)
    app.command("export")(export_cmd)
    app.command("compact")(compact_cmd)


def compact_cmd(
    sweep: str = typer.Argument(..., help="one sweep's results folder or URI (RESULTS/<sweep>)"),
) -> None:
    """Fold a sweep's row log into its table, RESULTS/<sweep>/rows.parquet, and the same for
    its evaluation table: for a sweep written by an older version (its log, weights and Ray
    files inside RESULTS/<sweep>/, or one file per row there: moved to RESULTS/_state/<sweep>/
    first) or by runs that were killed. Refused while a driver runs the sweep."""
    from sweeper import results
    from sweeper.results.layout import OLD_STATE_NAMES
    from sweeper.results.listing import entries
    from sweeper.results.rows import table_folder

    fs, path = results.location(sweep)
    try:
        old = any(e.base_name in OLD_STATE_NAMES for e in entries(fs, path))
        found = old or table_folder(fs, path) is not None
    except OSError as err:
        raise SweeperError(f"{sweep}: cannot read the sweep's folder: {err}") from None
    if not found:
        raise SweeperError(f"{sweep}: no sweep's results here (expected RESULTS/<sweep>)")
    with results.Lease(sweep):
        moved = results.migrate(sweep)
        rows = results.compact(sweep)
    evals = _compact_evals(sweep)
    if moved:
        print(f"{sweep}: moved {len(moved)} older-layout item(s) to {results.state_dir(path)}")
    print(f"{sweep}: {rows} row file(s) folded into {results.TABLE_FILE}, {evals} into "
          f"{results.eval_table(path)}/{results.TABLE_FILE}")  # fmt: skip


def _compact_evals(sweep: str) -> int:
    """Fold the evaluation table's log into its table (under the table's own lease: two
    `sweeper eval` on one sweep must not compact at once)."""
    from sweeper import results
    from sweeper.results.rows import table_folder

    table = results.eval_table(sweep)
    fs, path = results.location(table)
    if table_folder(fs, path) is None:  # no table, no log: never evaluated
        return 0
    try:
        with results.Lease(table):
            return results.compact(table, results.EVALS)
    except results.LeaseHeld:
        print(f"{table}: another process compacts it; its new rows are read from its log "
              "until then", file=sys.stderr)  # fmt: skip
        return 0


def _sweep_rows(sweep: str) -> Any:
    """The rows of one sweep folder (its rows sit directly in it, as `run` writes them)."""
    from sweeper import results

    frame = results.read(sweep)
    if frame.empty:
        raise SweeperError(f"{sweep}: no result rows found")
    if results.read_row(sweep, str(frame["trial_id"].iloc[0])) is None:
        raise SweeperError(f"{sweep}: expected one sweep's folder (RESULTS/<sweep>)")
    return frame


def _pick(ids: list[str], wanted: list[str], sweep: str) -> list[str]:
    """Trial ids named in full or by a unique prefix, in the order given."""
    picked = []
    for want in wanted:
        match = [i for i in ids if i.startswith(want)]
        if len(match) != 1:
            why = "no trial" if not match else f"{len(match)} trials"
            raise SweeperError(f"--trial {want}: {why} of {sweep} starts with it")
        picked.append(match[0])
    return list(dict.fromkeys(picked))


def _with_weights(frame: Any, ids: list[str], sweep: str) -> list[dict[str, Any]]:
    rows = {r["trial_id"]: r for r in frame.to_dict("records")}
    missing = [i for i in ids if not isinstance(rows[i].get("weights"), str)]
    if missing:
        raise SweeperError(
            f"{sweep}: trial {missing[0]} has no stored weights (it failed before training "
            "ended, or was run before weights were kept)"
        )
    return [rows[i] for i in ids]


def _eval_config(row: dict[str, Any], sets: list[str]) -> Any:
    """The trial's config with the evaluation overrides applied and validated."""
    from pydantic import ValidationError

    from sweeper.config import TrialConfig
    from sweeper.errors import from_validation_error
    from sweeper.space.overrides import apply_overrides

    try:
        return TrialConfig.model_validate(apply_overrides(json.loads(row["config"]), sets))
    except ValidationError as err:
        raise from_validation_error(err, prefix="--set") from None


def eval_cmd(
    sweep: str = typer.Argument(..., help="one sweep's results folder or URI (RESULTS/<sweep>)"),
    trial: list[str] = typer.Option(
        [], "--trial", help="trial_id or a unique prefix (repeatable); default: every trial"
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="evaluation setting: eval.*, runtime.* or data.test_size=VALUE"
    ),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    cpus: int = typer.Option(
        1, min=1, help="CPU threads of the evaluation (as a trial's --cpus-per-trial)"
    ),
) -> None:
    """Evaluate the stored weights of a sweep's trials again (e.g. --set eval.aa_size=10000)
    and write the metrics to the sweep's evaluation table, RESULTS/_state/<sweep>/_eval/.

    Training rows are never changed. An evaluation already in the table with the same
    settings and weights is not repeated. Exit 1 when any evaluation failed."""
    from sweeper import results
    from sweeper.reevaluate import check_eval_override
    from sweeper.space.overrides import parse_override

    sets = list(set_)
    for item in sets:
        check_eval_override(".".join(parse_override(item)[0]))
    frame = _sweep_rows(sweep)
    ids = list(frame["trial_id"])
    if trial:
        chosen = _with_weights(frame, _pick(ids, list(trial), sweep), sweep)
    else:
        chosen = [r for r in frame.to_dict("records") if isinstance(r.get("weights"), str)]
        if not chosen:
            raise SweeperError(f"{sweep}: no trial has stored weights")
    configs = [_eval_config(row, sets) for row in chosen]  # every bad --set before any work
    # a full or read-only store: exit 2 now (probed in the state folder: the table's folder
    # holds nothing but the table)
    results.check_writable(results.state_dir(results.eval_table(sweep)))
    from sweeper.reevaluate import use_cpu_threads

    use_cpu_threads(cpus)
    out = []
    for i, (row, cfg) in enumerate(zip(chosen, configs), 1):
        print(f"[{i}/{len(chosen)}] {row['trial_id']}", file=sys.stderr, flush=True)
        out.append(_evaluate_one(sweep, row, cfg))
    _compact_evals(sweep)
    if as_json:
        info = {"results": sweep, "table": results.eval_table(sweep), "rows": out}
        print(json.dumps(info, indent=2, default=str))
    else:
        _print_evals(out, f"{len(out)} evaluation(s) in {results.eval_table(sweep)}")
    failed = [r for r in out if r["status"] != "ok"]
    for r in failed:
        print(f"failed {r['trial_id']}: {r['error']}", file=sys.stderr)
    if failed:
        raise typer.Exit(1)


def _evaluate_one(sweep: str, row: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Evaluate one trial's weights (or find the same evaluation stored) -> its eval row."""
    import torch

    import sweeper
    from sweeper import results
    from sweeper.provenance import provenance
    from sweeper.reevaluate import evaluate_state, evaluation_settings
    from sweeper.schema import EVAL_COLUMNS
    from sweeper.trial import one_line

    settings = evaluation_settings(cfg)
    eid = results.eval_id(settings, row["weights"])
    stored = results.read_eval_row(sweep, row["trial_id"], eid)
    if stored is not None and stored["status"] == "ok":
        return {**stored, "training": {m: row.get(m) for m in ACCURACIES}, "reused": True}
    new: dict[str, Any] = dict.fromkeys(EVAL_COLUMNS)
    new.update(sweep=row["sweep"], trial_id=row["trial_id"], eval_id=eid, weights=row["weights"],
               evaluation=json.dumps(settings, sort_keys=True), config=cfg.canonical_json(),
               started_at=datetime.now(timezone.utc), sweeper_version=sweeper.__version__,
               torch_version=torch.__version__, **provenance())  # fmt: skip
    state = results.load_weights(sweep, row["weights"])
    try:
        new.update(evaluate_state(cfg, state), status="ok")
    except SweeperError:
        raise  # bad input (a data folder, a device): every trial would fail the same way
    except Exception as err:  # noqa: BLE001 - one trial's failure is its row
        new.update(status="failed", error=one_line(err))
    new["ended_at"] = datetime.now(timezone.utc)
    results.write_eval_row(sweep, new)
    return {**new, "training": {m: row.get(m) for m in ACCURACIES}, "reused": False}


def _print_evals(rows: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    from sweeper.cli.sweep_cmds import _console, _pct

    table = Table(title=title, title_justify="left")
    for col in ("trial_id", "weights", "eval_id", "clean", "PGD", "CW", "AA", "n (AA)"):
        table.add_column(col, justify="left" if col in ("trial_id", "weights", "eval_id")
                         else "right")  # fmt: skip
    for r in rows:
        cells = [f"{_pct(r['training'][m])} -> {_pct(r.get(m))}" for m in ACCURACIES]
        table.add_row(r["trial_id"], r["weights"].rsplit("/", 1)[-1],
                      r["eval_id"] + (" (stored)" if r["reused"] else ""), *cells,
                      str(r.get("aa_n") or "-"))  # fmt: skip
    _console().print(table)
    print("accuracy in % as trained -> as evaluated now")
    for r in rows:  # the other threat models (eval.threats), when evaluated
        other = [f"{label} {_pct(r.get(col))}" for label, col in THREAT_LABELS
                 if r.get(col) is not None]  # fmt: skip
        if other:
            print(f"{r['trial_id']}: " + ", ".join(other)
                  + (f" ({r['corruption_source']})" if r.get("corruption_source") else ""))


def export_cmd(
    sweep: str = typer.Argument(..., help="one sweep's results folder or URI (RESULTS/<sweep>)"),
    trial: str = typer.Argument(..., help="trial_id or a unique prefix"),
    out: Path = typer.Option(None, "--out", help="file to write (default: <trial_id>.pt/.pt2)"),
    format_: str = typer.Option("sweeper", "--format",
                                help="sweeper: a .pt for sweeper.load_model; export: a "
                                "torch.export program (.pt2) that needs torch alone"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
) -> None:
    """Write one trial as a self-contained model file (architecture + weights + its config
    and metrics) that loads without the sweep machinery:
    `model, info = sweeper.models.load_model(FILE)`, or with torch alone plus the builder:
    `blob = torch.load(FILE, weights_only=True)`,
    `model = build(ArchSpec(**blob["arch"])); model.load_state_dict(blob["state_dict"])`.
    With `--format export`, a torch.export program: `torch.export.load(FILE).module()`."""
    from sweeper import results
    from sweeper.config import TrialConfig
    from sweeper.models import save_model

    if format_ not in ("sweeper", "export"):
        raise SweeperError(f"--format: expected sweeper or export, got {format_[:40]!r}")
    frame = _sweep_rows(sweep)
    [trial_id] = _pick(list(frame["trial_id"]), [trial], sweep)
    [row] = _with_weights(frame, [trial_id], sweep)
    row = results.read_row(sweep, trial_id) or row  # plain Python values, not numpy's
    config = TrialConfig.model_validate_json(row["config"])
    state = results.load_weights(sweep, row["weights"])
    target = out or Path(f"{trial_id}.{'pt2' if format_ == 'export' else 'pt'}")
    metrics = {k: row[k] for k in (*ACCURACIES, "clean_n", "pgd_n", "cw_n", "aa_n")}
    try:
        if format_ == "export":
            _save_program(target, config, state)
        else:
            save_model(target, config.arch, state, trial_id=trial_id, sweep=row["sweep"],
                       config=row["config"], metrics=metrics, weights=row["weights"],
                       sweeper_version=row["sweeper_version"])  # fmt: skip
    except OSError as err:
        raise SweeperError(f"--out: cannot write {target}: {err.strerror or err}") from None
    load = (f"torch.export.load({str(target)!r}).module()" if format_ == "export"
            else f"sweeper.load_model({str(target)!r})")  # fmt: skip
    if as_json:
        print(json.dumps({"file": str(target), "format": format_, "trial_id": trial_id,
                          "sweep": row["sweep"], "block": row["block"], "metrics": metrics,
                          "load": load}, indent=2))  # fmt: skip
        return
    print(f"wrote {target} (trial {trial_id}, {row['block']} network, clean "
          f"{100 * (row['clean_acc'] or 0):.1f}%); load it with {load}")  # fmt: skip


def _save_program(target: Path, config: Any, state: dict[str, Any]) -> None:
    """The trial's network as a torch.export program (sweeper.models.exported)."""
    from sweeper.models import build
    from sweeper.models.exported import save_program

    model = build(config.arch)
    model.load_state_dict(state)
    save_program(target, model, in_channels=config.arch.in_channels,
                 image_size=config.data.image_size)  # fmt: skip
