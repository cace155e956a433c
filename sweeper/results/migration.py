"""Move a sweep laid out by the previous release into the current layout.

The previous release kept a sweep's row log, weights, evaluation table, Ray files, lease and
adaptive summary inside the table's folder (`RESULTS/<sweep>/_rows/`, ...). polars reads
every file below a folder, so they now lie in the state folder beside it
(sweeper.results.layout). `sweeper compact` moves them: one rename per folder (file by file
where the target folder exists already, or on an object store), nothing copied twice and
nothing dropped. A kill between two renames leaves every file in one place; readers refuse
the half-moved folder (naming `sweeper compact`) and the next `sweeper compact` finishes.
The names keep their meaning: a row's `weights` (`_weights/<trial_id>/final.pt`) is relative
to the state folder, as it was to the table's folder. A lease in the old place is only a
lock: a live one refuses the move, a stale one is removed.
"""

from __future__ import annotations

import time

import pyarrow.fs as pafs

from sweeper.errors import SweeperError
from sweeper.results.layout import OLD_STATE_NAMES, state_dir
from sweeper.results.lease import Lease, LeaseHeld
from sweeper.results.listing import delete_dir, entries
from sweeper.results.rows import crash_point, location

EVAL_NAME = "_eval"


def migrate(sweep_uri: str) -> list[str]:
    """Move the previous release's state out of the sweep's table folder, and out of its
    evaluation table's folder; returns the paths moved. LeaseHeld while a driver of the
    previous release still holds the sweep (or its evaluation table)."""
    fs, path = location(sweep_uri)
    state = state_dir(path)
    tables = [path, f"{path}/{EVAL_NAME}", f"{state}/{EVAL_NAME}"]  # before and after a move
    for table in tables:
        _check_lease(sweep_uri, fs, f"{table}/_lease")
    evals = state_dir(f"{state}/{EVAL_NAME}")
    # the evaluation table's own log and lease first: until `_eval/` itself moves, readers
    # refuse the sweep's folder (naming it), never a half-moved evaluation table
    moved = _move_state(fs, f"{path}/{EVAL_NAME}", evals)
    moved += _move_state(fs, path, state)
    return moved + _move_state(fs, f"{state}/{EVAL_NAME}", evals)


def _check_lease(sweep_uri: str, fs: pafs.FileSystem, folder: str) -> None:
    """Refuse while the lease kept in `folder` is live (its driver may still write there)."""
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        return
    _, holder = Lease(sweep_uri, folder=folder).current()
    if holder is not None and not holder.stale(time.time()):
        raise LeaseHeld(f"{folder}: a driver of an older sweeper runs this sweep "
                        f"({holder.describe()}); let it finish first")  # fmt: skip


def _move_state(fs: pafs.FileSystem, table: str, state: str) -> list[str]:
    """Move every state name found in the table folder `table` to `state`."""
    moved = []
    for name in OLD_STATE_NAMES:
        source = f"{table}/{name}"
        kind = fs.get_file_info(source).type
        if kind == pafs.FileType.NotFound:
            continue
        if name == "_lease":
            _delete_tree(fs, source)  # stale (checked first): a lock, no data
        else:
            _move(fs, source, f"{state}/{name}", kind == pafs.FileType.Directory)
        moved.append(source)
    return moved


def _delete_tree(fs: pafs.FileSystem, path: str) -> None:
    """Remove a folder left empty by the moves (or a stale lease's), never through a link."""
    delete_dir(fs, path.rpartition("/")[0], path)


def _move(fs: pafs.FileSystem, source: str, target: str, is_dir: bool) -> None:
    """Rename `source` to `target`; into an existing folder, entry by entry. A file that
    lies in both places is refused, naming both: which one holds the data is not ours to
    guess."""
    found = fs.get_file_info(target).type
    if found == pafs.FileType.NotFound and (not is_dir or isinstance(fs, pafs.LocalFileSystem)):
        fs.create_dir(target.rpartition("/")[0], recursive=True)
        fs.move(source, target)
        crash_point("state-moved")
        return
    if not is_dir or found == pafs.FileType.File:
        raise SweeperError(f"{source}: {target} exists too; keep one of them, then run "
                           "`sweeper compact` again")  # fmt: skip
    for entry in entries(fs, source):
        _move(fs, entry.path, f"{target}/{entry.base_name}", entry.is_dir)
    _delete_tree(fs, source)
