"""Where a row came from: the code's git commit, the host and the library versions.

Collected once per process (a worker runs many trials). Nothing here imports Ray or
AutoAttack: versions come from the installed distributions' metadata.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path

import numpy as np

import sweeper


@functools.cache
def provenance() -> dict[str, str | None]:
    """The provenance columns of a row (sweeper.schema.PROVENANCE)."""
    return {
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "ray_version": _version("ray"),
        "autoattack_version": _version("pyautoattack"),
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(package_dir: Path | None = None) -> str | None:
    """HEAD of the checkout the code runs from, "-dirty" appended when tracked files differ;
    None for an installed package (also when it sits in a venv inside some checkout)."""
    here = (package_dir or Path(sweeper.__file__).parent).resolve()

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(here), *args], capture_output=True,
                                  text=True, timeout=10)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or (Path(top).resolve() / here.name) != here:  # not this checkout's package
        return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if dirty else commit
