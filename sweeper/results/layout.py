"""Where a table's files lie: its folder holds the table's Parquet file and nothing else;
everything else of it lies in a state folder beside it.

    RESULTS/<sweep>/rows.parquet     the table (the only file there, at every moment)
    RESULTS/_state/<sweep>/          its state: `_rows/` (the row log), `_weights/`, `_eval/`
                                     (the evaluation table), `_ray/`, `_lease/`, `_adaptive.json`,
                                     `_mlflow/` (`--log mlflow`'s local store)

polars' `read_parquet(folder)` reads every file below a folder, `_` and `.` names included,
and fails on files of another kind; so nothing but the table may lie there, not even a
temporary file (a new table is written in the state folder and renamed into place). The
names inside the state folder are those the previous release kept in the table's folder,
so a row's `weights` value (`_weights/<trial_id>/final.pt`, relative to the state folder)
names the same file after `sweeper compact` moved them (sweeper.results.migration).
"""

from __future__ import annotations

import os

STATE_DIR = "_state"
LOG_DIR = "_rows"
# what the previous release kept inside the table's folder (moved by `sweeper compact`)
OLD_STATE_NAMES = (LOG_DIR, "_weights", "_eval", "_ray", "_lease", "_adaptive.json", "_mlflow")


def state_dir(table_uri: str) -> str:
    """The state folder of the table in `table_uri` (a path or a URI such as s3://b/x/smoke):
    `<parent>/_state/<name>`, beside the table's folder on the same filesystem, so that a
    file written there is renamed into the table's folder atomically."""
    text = str(table_uri).rstrip("/")
    if "://" not in text and text.rpartition("/")[2] in ("", ".", "..", "~"):
        text = os.path.abspath(os.path.expanduser(text or "/"))  # `sweeper status .`
    parent, slash, name = text.rpartition("/")
    if not name or name in (".", ".."):
        raise ValueError(f"{table_uri}: not a table's folder (no name to keep its state by)")
    return f"{parent}{slash}{STATE_DIR}/{name}"
