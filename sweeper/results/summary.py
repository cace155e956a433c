"""The summary `run --order adaptive` keeps in the sweep's folder for `sweeper status`: a
JSON file, read without the surrogate's libraries (sweeper.sweep.adaptive_search writes it)."""

from __future__ import annotations

import json
from typing import Any

from sweeper.results.layout import state_dir
from sweeper.results.rows import location, write_atomic

SUMMARY_FILE = "_adaptive.json"  # in the sweep's state folder (sweeper.results.layout)


def write_summary(sweep_uri: str, summary: dict[str, Any]) -> None:
    """Replace the sweep's adaptive summary (a temporary name, then a rename)."""
    fs, base = location(state_dir(sweep_uri))
    data = json.dumps(summary, indent=1, default=str).encode()
    write_atomic(fs, f"{base}/{SUMMARY_FILE}", lambda stream: stream.write(data))


def read_summary(sweep_uri: str) -> dict[str, Any] | None:
    """The adaptive summary a run left in the sweep's folder, or None."""
    fs, base = location(state_dir(sweep_uri))
    try:
        with fs.open_input_stream(f"{base}/{SUMMARY_FILE}") as stream:
            return json.loads(stream.read().decode())
    except (OSError, ValueError):
        return None
