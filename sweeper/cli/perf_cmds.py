"""`sweeper calibrate`: measure this device's attack-and-train throughput for GPU-hour estimates."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def calibrate_cmd(
    device: str = typer.Option("auto", help="auto: cuda when available, else cpu"),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="calibration JSON; default $SWEEPER_CALIBRATION or "
        "~/.cache/sweeper/calibration-<device>.json",
    ),
    quick: bool = typer.Option(
        False, "--quick", help="tiny models, batch 4, 2 steps, 1 CPU thread (tests)"
    ),
    models: str | None = typer.Option(None, help="comma-separated subset of the models"),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="default 128"),
    steps: int | None = typer.Option(None, min=1, help="timed steps per model (default 10)"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model (CUDA)"),
    workers: int = typer.Option(
        1, min=1, help="also time TRADES-10 on this many data-parallel workers (local GPUs)"
    ),
    as_json: bool = typer.Option(False, "--json", help="the calibration as JSON on stdout"),
) -> None:
    """Time TRADES-10 training and PGD-20 evaluation for a few model sizes; store images/s."""
    from sweeper.config import RuntimeConfig
    from sweeper.errors import ConfigError
    from sweeper.perf import calibrate as cal

    _check_device(device)
    calibration = cal.calibrate(
        device,
        quick=quick,
        models=models.split(",") if models else None,
        batch_size=batch_size,
        steps=steps,
        runtime=RuntimeConfig(compile=compile),
        log=(lambda line: print(line, file=sys.stderr, flush=True)) if as_json
        else (lambda line: print(line, flush=True)),
        workers=workers,
    )
    try:
        path = cal.save_calibration(calibration, out)
    except OSError as err:
        raise ConfigError(f"cannot write {out or err.filename}: {err.strerror or err}",
                          key="--out") from None  # fmt: skip
    if as_json:
        print(json.dumps({"file": str(path), **calibration}, default=str))
        return
    print(f"calibration of {calibration['device']} written to {path}")


def _check_device(device: str) -> None:
    """A device torch cannot name or use here is the user's error: one line, exit 2."""
    import torch

    from sweeper.errors import ConfigError, first_line

    if device == "auto":
        return
    try:
        torch.zeros(1, device=torch.device(device))
    except (RuntimeError, AssertionError, ValueError) as err:
        raise ConfigError(f"cannot use device {device!r} here: {first_line(err)}",
                          key="--device") from None  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("calibrate")(calibrate_cmd)
