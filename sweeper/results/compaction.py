"""Fold a table's row log into the table: the one step that makes rows visible to plain readers.

    1. an older layout's row files (`<trial_id>.parquet` directly in the folder) move into
       the log (in the state folder, sweeper.results.layout), one rename each;
    2. the table and the log are read as one (`rows.read_folder`: a log row replaces the
       table's row of its key) and written as the new `rows.parquet` in the state folder,
       then renamed over the old (the table's folder never holds anything else);
    3. the log files just folded are deleted (a file rewritten meanwhile stays for the next
       compaction).

Exactly once at every moment: readers of `read_table` see the table overlaid by the log, and
each step leaves that view as it was (a row moves into the log, the table gains rows the log
still holds, the log loses rows the table now holds); plain readers see the old table or the
new one, whole. A kill at any point leaves a state the next compaction finishes. Only the
driver holding the sweep's lease compacts (or `sweeper compact`, on a sweep no driver runs).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweeper.errors import SweeperError
from sweeper.results.layout import LOG_DIR, state_dir
from sweeper.results.listing import Entry
from sweeper.results.rows import (
    ROWS,
    TABLE_FILE,
    Folder,
    Kind,
    crash_point,
    location,
    read_folder,
    table_folder,
    write_atomic,
)

log = logging.getLogger(__name__)
COMPACT_EVERY_S = 5.0  # at least this far apart while a run goes on
SPACING = 10  # and ten times the last compaction's duration: at most a tenth of the time


class Compactor:
    """The driver's compactions while a run goes on: one after a trial ends when the last is
    COMPACT_EVERY_S old and SPACING times its own duration ago, so a table of many rows
    (slower to rewrite) is rewritten less often and the cost stays linear in the rows."""

    def __init__(self, uri: str, kind: Kind = ROWS) -> None:
        self.uri, self.kind = uri, kind
        self.due = 0.0

    def maybe(self) -> int:
        """Compact if due; returns the row files folded. A failure is logged, not raised:
        the run goes on, and its end compacts again (and raises)."""
        start = time.monotonic()
        if start < self.due:
            return 0
        try:
            folded = compact(self.uri, self.kind)
        except (SweeperError, OSError) as err:
            log.warning("compaction of %s: %s", self.uri, str(err).splitlines()[0])
            folded = 0
        spent = time.monotonic() - start
        self.due = time.monotonic() + max(COMPACT_EVERY_S, SPACING * spent)
        return folded


def compact(uri: str, kind: Kind = ROWS) -> int:
    """Fold the log (and an older layout's row files) of the table in `uri` into its
    `rows.parquet`; returns how many row files were folded (0: nothing to do)."""
    fs, path = location(uri)
    folder = table_folder(fs, path)
    if folder is None:
        return 0
    merged = read_folder(fs, folder, kind, None, varying=True)  # 2 rows of a trial: refused
    if _migrate(fs, folder, kind):
        folder = table_folder(fs, path, force=True)
        assert folder is not None
        merged = read_folder(fs, folder, kind, None, varying=True)
    strays = [e for e in folder.table if e.path != f"{path}/{TABLE_FILE}"]
    if strays:
        raise SweeperError(
            f"{strays[0].path}: a Parquet file sweeper did not write lies in the table's "
            "folder; move it out (plain readers would read it as rows)"
        )
    if not folder.log:
        return 0
    if kind.sweep_named:
        merged = _ordered(merged)
    crash_point("compact-read")

    def write(stream: Any) -> None:
        pq.write_table(merged, stream)
        crash_point("compact-written")

    write_atomic(fs, f"{path}/{TABLE_FILE}", write, temp_dir=state_dir(path))
    crash_point("compact-renamed")
    for done, entry in enumerate(folder.log):
        if done == 1:
            crash_point("compact-deleting")
        _delete_if_unchanged(fs, entry)
    return len(folder.log)


def _ordered(table: pa.Table) -> pa.Table:
    """The fixed schema's columns first, then the varying keys' by name: one schema for every
    compaction of a sweep that varies the same keys."""
    fixed = [n for n in ROWS.schema.names if n in table.column_names]
    extra = sorted(n for n in table.column_names if n not in fixed)
    return table.select([*fixed, *extra])


def _migrate(fs: pafs.FileSystem, folder: Folder, kind: Kind) -> bool:
    """Move an older layout's row files (one per row, named by its key, directly in the
    folder) into the log; a log row of the same key is newer and stays. True if any moved."""
    moved = False
    for entry in folder.table:
        stem = entry.base_name.removesuffix(".parquet")
        if entry.path != f"{folder.path}/{entry.base_name}" or entry.base_name == TABLE_FILE:
            continue
        if _key_of(fs, entry, kind) != stem:
            continue  # not a row file sweeper wrote: compaction refuses it, naming it
        log_dir = f"{state_dir(folder.path)}/{LOG_DIR}"
        target = f"{log_dir}/{entry.base_name}"
        if fs.get_file_info(target).type == pafs.FileType.File:
            fs.delete_file(entry.path)  # superseded by the log's newer row of the trial
        else:
            fs.create_dir(log_dir, recursive=True)
            fs.move(entry.path, target)
        moved = True
        crash_point("migrate-moved")
    return moved


def _key_of(fs: pafs.FileSystem, entry: Entry, kind: Kind) -> str | None:
    """The key of a one-row file (None when it holds another number of rows)."""
    rows = pq.read_table(entry.path, filesystem=fs, columns=list(kind.keys)).to_pylist()
    return kind.key(rows[0]) if len(rows) == 1 else None


def _delete_if_unchanged(fs: pafs.FileSystem, entry: Entry) -> None:
    """Delete a folded log file unless it was rewritten since it was read (a newer row)."""
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            stat = os.lstat(entry.path)
            same = (stat.st_mtime_ns, stat.st_size) == (entry.mtime_ns, entry.size)
        else:
            info = fs.get_file_info(entry.path)
            same = (info.mtime_ns, info.size) == (entry.mtime_ns, entry.size)
        if same:
            fs.delete_file(entry.path)
    except FileNotFoundError:
        pass  # gone already (another compaction's clean-up)
