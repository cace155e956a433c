"""`sweeper calibrate`: measure this device's attack-and-train throughput for GPU-hour estimates."""

from __future__ import annotations

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
) -> None:
    """Time TRADES-10 training and PGD-20 evaluation for a few model sizes; store images/s."""
    from sweeper import calibrate as cal
    from sweeper.config import RuntimeConfig

    calibration = cal.calibrate(
        device,
        quick=quick,
        models=models.split(",") if models else None,
        batch_size=batch_size,
        steps=steps,
        runtime=RuntimeConfig(compile=compile),
        log=lambda line: print(line, flush=True),
    )
    path = cal.save_calibration(calibration, out)
    print(f"calibration of {calibration['device']} written to {path}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("calibrate")(calibrate_cmd)
