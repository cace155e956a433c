"""`sweeper init DIR`: copy the packaged studies into a folder for editing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from sweeper.errors import SweeperError


def init(
    directory: Path = typer.Argument(Path("studies"), help="folder to copy the studies into"),
    force: bool = typer.Option(False, help="overwrite study files already there"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
) -> None:
    """Copy the paper's studies and the smoke sweep (with their shared _protocol.yaml) into
    DIRECTORY, to edit and run: `sweeper run DIRECTORY/depth.yaml`."""
    from sweeper.space.load import studies_dir

    files = sorted(studies_dir().glob("*.yaml"))
    there = [f.name for f in files if (directory / f.name).exists()]
    if there and not force:
        raise SweeperError(
            f"{directory}: {', '.join(there[:3])}{' ...' if len(there) > 3 else ''} already "
            "there; --force overwrites"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for file in files:
            shutil.copyfile(file, directory / file.name)
    except OSError as err:
        raise SweeperError(f"{directory}: cannot copy the studies: {err.strerror or err}") from None
    if as_json:
        print(json.dumps({"directory": str(directory), "files": [f.name for f in files]}))
        return
    print(f"copied {len(files)} files to {directory} (each study extends _protocol.yaml there); "
          f"edit them, then e.g.: sweeper run {directory / 'depth.yaml'} --dry-run")  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add `sweeper init` to the app."""
    app.command("init")(init)
