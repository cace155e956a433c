"""`sweeper trial CONFIG.yaml`: one trial in the foreground, with a progress bar."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import typer


def load_trial_config(path: Path, overrides: list[str]) -> Any:
    """Read a trial YAML, apply --set overrides, validate: ConfigError names file and key."""
    import yaml
    from pydantic import ValidationError

    from sweeper.config import TrialConfig
    from sweeper.errors import ConfigError, from_validation_error
    from sweeper.space.overrides import apply_overrides, parse_override
    from sweeper.space.paths import file_too_big, fill_indexed, too_many_nodes
    from sweeper.space.sections import sections_problem

    try:
        too_big = file_too_big(path.stat().st_size)  # size first: a huge file is never parsed
        if too_big:
            raise ConfigError(too_big, file=str(path))
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read the file ({err.strerror})", file=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("expected UTF-8 text", file=str(path)) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "malformed YAML"
        raise ConfigError(f"{problem}{where}", file=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", file=str(path))
    too_many = too_many_nodes(data)
    if too_many:
        raise ConfigError(too_many, file=str(path))
    try:
        for item in overrides:  # `arch.depths.0=5` edits the preset's list, as `run` does
            fill_indexed(data, parse_override(item)[0])
            data = apply_overrides(data, [item])
    except ConfigError as err:
        raise ConfigError(f"--set: {err.detail}", file=str(path), key=err.key) from None
    except ValueError as err:
        raise ConfigError(f"--set: {str(err).splitlines()[0]}", file=str(path)) from None
    problem = sections_problem(data)  # before the arch's checks, which import torch
    if problem:
        raise ConfigError(problem, file=str(path))
    try:
        return TrialConfig.model_validate(data)
    except ValidationError as err:
        raise from_validation_error(err, file=str(path)) from None


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _fraction(value: float | None, n: int | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}% (n={n})"


def trial(
    config: Path = typer.Argument(..., help="Trial YAML (TrialConfig fields)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a key: --set train.epochs=5 (repeatable; YAML values)."
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Checkpoint every epoch here; resume from it."
    ),
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", help="Keep the trained weights here (final.pt, a state dict)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full result row as JSON."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Data-parallel workers (Ray Train): runtime.workers."
    ),
) -> None:
    """Run one trial in the foreground and print its metrics (exit 1 when it failed)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    overrides = [*set_, *([f"runtime.workers={workers}"] if workers is not None else [])]
    cfg = load_trial_config(config, overrides)  # before torch is imported by the trial
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err,
        transient=as_json,
    ) as progress:
        task = progress.add_task(cfg.trial_id, total=cfg.train.trained_epochs, info="")

        def on_epoch(record: dict[str, Any]) -> None:
            acc = record.get("holdout_pgd_acc")
            info = f"loss {record['train_loss']:.3f}"
            if acc is not None:
                info += f"  holdout PGD {100 * acc:.1f}%"
            if record["epoch"] == cfg.train.trained_epochs:
                info += "  evaluating..."
            progress.update(task, completed=record["epoch"], info=info)

        row = _run(cfg, checkpoint_dir, weights_dir, on_epoch)

    if as_json:
        print(json.dumps({k: _jsonable(v) for k, v in row.items()}, indent=2))
    else:
        _print_metrics(row)
    if row["status"] != "ok":
        print(f"error: {row['error']}", file=sys.stderr)
        raise typer.Exit(1)


def _run(cfg: Any, checkpoint_dir: Path | None, weights_dir: Path | None,
         on_epoch: Callable[[dict[str, Any]], None]) -> dict[str, Any]:  # fmt: skip
    """The trial's row: run_trial here, or on Ray Train workers of a local Ray instance."""
    keep = weights_dir.resolve() if weights_dir else None
    if cfg.runtime.workers > 1:  # on Ray Train workers of a local Ray instance
        from sweeper.sweep.runner import run_trial_on_workers

        ckpt = str(checkpoint_dir.resolve()) if checkpoint_dir is not None else None
        return run_trial_on_workers(cfg, checkpoint_dir=ckpt, on_epoch=on_epoch,
                                    weights=str(keep) if keep else None)  # fmt: skip
    from sweeper.trial import run_trial

    return run_trial(cfg, checkpoint_dir=checkpoint_dir, on_epoch=on_epoch,
                     weights_dir=keep)  # fmt: skip


def _print_metrics(row: dict[str, Any]) -> None:
    """The row's status, and of an ok trial its accuracies, size and times, one line each."""
    from rich.console import Console

    out = Console()
    out.print(f"trial {row['trial_id']}  status [bold]{row['status']}[/]")
    if row["status"] == "ok":
        out.print(
            f"clean {_fraction(row['clean_acc'], row['clean_n'])}  "
            f"PGD-{row['pgd_steps']} {_fraction(row['pgd_acc'], row['pgd_n'])}  "
            f"CW-{row['cw_steps']} {_fraction(row['cw_acc'], row['cw_n'])}  "
            f"AA {_fraction(row['aa_acc'], row['aa_n'])}"
        )
        if row.get("l2_eps") is not None or row.get("corruption_acc") is not None:
            out.print(  # the other threat models (eval.threats)
                f"L2 {row['l2_eps']}: PGD {_fraction(row['l2_pgd_acc'], row['l2_pgd_n'])}  "
                f"AA {_fraction(row['l2_aa_acc'], row['l2_aa_n'])}  corruptions "
                f"{_fraction(row['corruption_acc'], row['corruption_n'])}"
            )
        out.print(
            f"params {row['params']:,}  MACs {row['macs']:,}  train "
            f"{row['train_seconds']:.1f}s  eval {row['eval_seconds']:.1f}s  on {row['device']}"
        )


def register(app: typer.Typer) -> None:
    """Add `sweeper trial` to the app."""
    app.command("trial")(trial)
