"""Result rows on any pyarrow filesystem: a row log that trials append to, folded into one
table that every Parquet reader gets whole.

    RESULTS/<sweep>/rows.parquet                 the table: every compacted row, one schema
    RESULTS/_state/<sweep>/_rows/<trial_id>.parquet  the log: a trial's row, until compacted

A trial writes its row into the log (a small file, from the worker, the moment it ends); the
driver folds the log into the table (`sweeper.results.compact`). Plain readers
(`pandas.read_parquet("results/<sweep>")`, pyarrow.dataset, polars, duckdb on `*.parquet`)
see the table only: it is the only file in its folder (sweeper.results.layout). `read_table`
here reads the table and the log, a log row replacing the table's row of the same trial (a
rerun of a failed trial, or a compaction killed before it cleared the log). Every file is
written under a dot-name and renamed over its final name, so no reader sees half a file.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweeper.errors import SweeperError, first_line, storage_error
from sweeper.results.columns import aligned, complete, extra_columns, with_varying
from sweeper.results.layout import LOG_DIR, OLD_STATE_NAMES, STATE_DIR, state_dir
from sweeper.results.listing import Entry, entries, linked
from sweeper.schema import COLUMNS, SCHEMA, check_row

# pyarrow's dataset discovery skips names starting with these (the results root's _state/)
IGNORED_PREFIXES = (".", "_")
TABLE_FILE = "rows.parquet"


@dataclass(frozen=True)
class Kind:
    """A table of the store: its schema, the columns that key a row (one row per key), and
    whether its rows must name the sweep folder they lie in."""

    schema: pa.Schema
    keys: tuple[str, ...]
    sweep_named: bool

    def key(self, row: dict[str, Any]) -> str:
        """The row's key as its log file's name stem (`<trial_id>`, `<trial_id>.<eval_id>`)."""
        return ".".join(str(row[k]) for k in self.keys)


ROWS = Kind(SCHEMA, ("trial_id",), sweep_named=True)


def crash_point(name: str) -> None:
    """A named moment of a write; does nothing (the kill tests replace it with a SIGKILL)."""


def private(name: str) -> bool:
    return name.startswith(IGNORED_PREFIXES)


def location(uri: str) -> tuple[pafs.FileSystem, str]:
    """A path or URI (s3://, gs://, hdfs://, file://) -> (filesystem, path inside it)."""
    text = str(uri)
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text))
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise SweeperError(f"{text}: cannot open results location: {err}") from None


def join(base: str, *names: str) -> str:
    """Join path parts below a local path or a URI (keeps the scheme)."""
    return "/".join([base.rstrip("/"), *names])


def sweep_dir(results: str, sweep: str) -> str:
    return join(results, sweep)


def _to_table(row: dict[str, Any], varying: Sequence[str] = ()) -> pa.Table:
    check_row(row)
    extras = extra_columns(row.get("config"), varying)
    schema = pa.schema([*SCHEMA, *(pa.field(name, kind) for name, kind, _ in extras)])
    values = {**{c: row[c] for c in COLUMNS}, **{name: v for name, _, v in extras}}
    return pa.Table.from_pylist([values], schema=schema)


def write_row(sweep_uri: str, row: dict[str, Any], varying: Sequence[str] = ()) -> str:
    """Write one trial's row into the sweep's log, replacing any earlier one of the trial.

    `varying`: dotted config keys the run varies; each becomes a column of its own
    (sweeper.results.columns), taken from the row's config."""
    table = _to_table(row, varying)
    fs, path = location(sweep_uri)
    return write_log(fs, path, ROWS.key(row), table)


def write_log(fs: pafs.FileSystem, folder: str, key: str, table: pa.Table) -> str:
    """One row into the table's log, `<state folder>/_rows/<key>.parquet` (replacing an
    earlier one of the same key); the driver folds it into the table later."""

    def write(stream: Any) -> None:
        pq.write_table(table, stream)
        crash_point("row-written")

    final = f"{state_dir(folder)}/{LOG_DIR}/{key}.parquet"
    write_atomic(fs, final, write)
    try:  # the table's folder is there from the first row on (`ls RESULTS`, status of a root)
        fs.create_dir(folder, recursive=True)
    except OSError as err:
        raise (storage_error(err, folder) or err) from None
    return final


def write_atomic(fs: pafs.FileSystem, final: str, write: Callable[[Any], None],
                 temp_dir: str | None = None) -> None:  # fmt: skip
    """`write(stream)` into a dot-name beside `final` (or in `temp_dir`, on the same
    filesystem: a table's folder holds nothing but the table), then rename it over `final`:
    a reader sees the old file or the new one, never a part (and on a local disk, the rename
    is made durable before returning). A full or read-only store raises StorageError naming
    `final` (the dot-name removed): no retry would succeed."""
    folder, _, name = final.rpartition("/")
    temp = f"{temp_dir or folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fs.create_dir(folder, recursive=True)
        if temp_dir is not None:
            fs.create_dir(temp_dir, recursive=True)
        if isinstance(fs, pafs.LocalFileSystem):
            with open(temp, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
            _fsync_dir(folder)
        else:
            with fs.open_output_stream(temp) as stream:
                write(stream)
            fs.move(temp, final)
    except (OSError, RuntimeError) as err:  # RuntimeError: torch's and pyarrow's wrappers
        _remove_quietly(fs, temp)
        fault = storage_error(err, final)
        if fault is None:
            raise
        raise fault from None


def _remove_quietly(fs: pafs.FileSystem, path: str) -> None:
    try:
        fs.delete_file(path)
    except OSError:
        pass  # never written, or the store refuses even that


def _fsync_dir(path: str) -> None:
    """Make the rename itself durable (a crash right after must not lose the row)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Folder:
    """One table's folder: its visible Parquet files and its log's row files."""

    path: str
    table: list[Entry]  # the compacted table (an older layout: one file per row)
    log: list[Entry]  # <state folder>/_rows/*.parquet, not yet compacted

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def _parquet(entry: Entry) -> bool:
    return not entry.is_dir and entry.base_name.endswith(".parquet")


def table_folder(fs: pafs.FileSystem, path: str, *, force: bool = False) -> Folder | None:
    """The table in `path` and its log (None when `path` holds no table and has no state
    folder, and `force` is false: a results root or an empty folder). Links are skipped
    (sweeper.results.listing). A folder laid out by the previous release (its log, weights,
    Ray files inside it) is refused in one line naming `sweeper compact`, which moves them."""
    listing = entries(fs, path)
    old = sorted(e.base_name for e in listing if e.base_name in OLD_STATE_NAMES)
    if old:
        raise SweeperError(
            f"{path}: laid out by an older sweeper ({', '.join(old)} inside the table's "
            f"folder); run `sweeper compact {path}` once to move them to {state_dir(path)}"
        )
    state = state_dir(path)
    visible = [e for e in listing if _parquet(e) and not private(e.base_name)]
    if not (force or visible or _is_dir(fs, state)):
        return None
    for sub in (e for e in listing if e.is_dir and not private(e.base_name)):
        found = entries(fs, sub.path, recursive=True, skip=private)
        visible += [e for e in found if _parquet(e)]  # pandas reads these too: so do we
    logged = entries(fs, f"{state}/{LOG_DIR}", skip=private)
    return Folder(path, visible, [e for e in logged if _parquet(e)])


def _is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def _folders(fs: pafs.FileSystem, path: str) -> list[Folder]:
    """Every table folder at or below `path` (a sweep folder, or a root of sweep folders; a
    sweep whose rows are all in its log yet may have only its state folder, `_state/<name>`)."""
    folder = table_folder(fs, path)
    if folder is not None:
        return [folder]
    subs = {e.base_name: e.path for e in entries(fs, path) if e.is_dir}
    for state in entries(fs, f"{path.rstrip('/')}/{STATE_DIR}"):
        if state.is_dir:
            subs.setdefault(state.base_name, f"{path.rstrip('/')}/{state.base_name}")
    found = []
    for name in sorted(n for n in subs if not private(n)):
        found += _folders(fs, subs[name])
    return found


def read_table(uri: str, columns: list[str] | None = None, *, kind: Kind = ROWS) -> pa.Table:
    """Every row under a sweep dir, a results root (all sweeps) or one file, each sweep's
    table overlaid by its log: the fixed schema's columns (and, when `columns` is None, a
    column for every config key that varies within a sweep, sweeper.results.columns).

    One row per trial in a sweep: a second row of a trial (a row file copied under another
    name), or a row naming another sweep than the folder it lies in, is an error naming the
    files: counting it twice would bias every table built from the rows."""
    fs, path = location(uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            folders = [Folder(path.rsplit("/", 1)[0], [Entry(path, "", False)], [])]
        else:  # a sweep with rows in its log only may have no table folder yet
            folders = _folders(fs, path)
    except OSError as err:
        raise SweeperError(f"{uri}: cannot read result rows: {first_line(err)}") from None
    extra = [c for c in _checked(kind) if columns is not None and c not in columns]
    wanted = None if columns is None else [*columns, *extra]
    named = info.type != pafs.FileType.File
    tables = [_read_settled(fs, f, kind, wanted, named) for f in folders]
    tables = [t for t in tables if t.num_rows] or [_empty(kind, wanted)]
    if kind.sweep_named and columns is None:
        tables = aligned(tables) if named else [with_varying(t) for t in tables]
    table = _concat(tables) if len(tables) > 1 else tables[0]
    return table if columns is None else table.select(columns)


def _read_settled(fs: pafs.FileSystem, folder: Folder, kind: Kind, columns: list[str] | None,
                  named: bool) -> pa.Table:  # fmt: skip
    """`read_folder`, listed again when a file listed is gone by the time it is read: the
    driver compacted meanwhile (the rows are in the new table; the log files were cleared)."""
    for _ in range(READ_TRIES - 1 if named else 0):
        try:
            return read_folder(fs, folder, kind, columns, named=named, varying=named)
        except SweeperError:
            if all(fs.get_file_info(e.path).type == pafs.FileType.File
                   for e in (*folder.table, *folder.log)):  # fmt: skip
                raise  # a real error, not a compaction under way
        folder = table_folder(fs, folder.path, force=True) or folder
    return read_folder(fs, folder, kind, columns, named=named, varying=named)


READ_TRIES = 5


def _checked(kind: Kind) -> list[str]:
    """Columns every read needs: the key, the status, and the sweep a row names."""
    return [*kind.keys, "status", *(("sweep",) if kind.sweep_named else ())]


def _empty(kind: Kind, columns: list[str] | None) -> pa.Table:
    table = kind.schema.empty_table()
    return table if columns is None else table.select(columns)


def read_folder(fs: pafs.FileSystem, folder: Folder, kind: Kind, columns: list[str] | None,
                *, named: bool = True, varying: bool = False) -> pa.Table:  # fmt: skip
    """The folder's rows: its table's, each replaced by the log's row of the same key, then
    the log's new ones. `named`: refuse rows of another sweep than the folder's name.
    `varying`: with a column for every config key that varies among the rows (training
    rows, every column read), parsing the configs of the log's rows only
    (sweeper.results.columns.complete)."""
    table, table_files = _read_files(fs, folder, folder.table, kind, columns)
    log, log_files = _read_files(fs, folder, folder.log, kind, columns)
    table_keys, log_keys = _keys(table, kind), _keys(log, kind)
    _check_unique(folder, table_keys, table_files)
    _check_unique(folder, log_keys, log_files)
    if named and kind.sweep_named:
        _check_sweep(folder, table, table_files)
        _check_sweep(folder, log, log_files)
    if log.num_rows:
        replaced = pc.is_in(table_keys, value_set=log_keys)
        _check_replaced(folder, table_keys, replaced, table_files, log_keys, log_files)
        table = table.filter(pc.invert(replaced))
    if varying and kind.sweep_named and columns is None:
        if [e.base_name for e in folder.table] in ([TABLE_FILE], []):
            return complete(table, log)  # the table's columns were completed when compacted
        return complete(kind.schema.empty_table(), _concat([table, log]))  # an older layout
    return _concat([table, log]) if log.num_rows else table


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="permissive")


def _check_replaced(folder: Folder, keys: pa.Array, replaced: pa.Array, sources: list[str],
                    log_keys: pa.Array, log_sources: list[str]) -> None:  # fmt: skip
    """A log row replaces the table's row of its key (a rerun, or a compaction killed before
    it cleared the log), or an older layout's file of it; never a file of another name."""
    for at in pc.indices_nonzero(replaced).to_pylist():
        key, source = keys[at].as_py(), sources[at].rsplit("/", 1)[-1]
        if source not in (TABLE_FILE, f"{key}.parquet"):
            logged = log_sources[log_keys.to_pylist().index(key)].rsplit("/", 1)[-1]
            raise SweeperError(
                f"{folder.path}: trial {key} of sweep {folder.name} has 2 row files "
                f"({source}, {LOG_DIR}/{logged}); keep one (a copy would be counted twice)"
            )


def _keys(table: pa.Table, kind: Kind) -> pa.Array:
    parts = [pc.cast(table.column(k), pa.string()) for k in kind.keys]
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, ".")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _read_files(fs: pafs.FileSystem, folder: Folder, files: list[Entry], kind: Kind,
                columns: list[str] | None) -> tuple[pa.Table, list[str]]:  # fmt: skip
    """The rows of some Parquet files (with the union of their columns when `columns` is
    None) and, per row, the file it came from. File by file: a log of many one-row files
    reads several times faster so than as one pyarrow dataset."""
    if not files:
        return _empty(kind, columns), []
    tables, sources = [], []
    for entry in files:
        table = _read_file(fs, entry.path, kind.schema, columns)
        tables.append(table)
        sources += [entry.path] * table.num_rows
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, OSError) as err:  # a varying-key column of two types
        raise SweeperError(f"{folder.path}: cannot read result rows: {first_line(err)}") from None
    return table, sources


def _read_file(fs: pafs.FileSystem, path: str, schema: pa.Schema, columns: list[str] | None
               ) -> pa.Table:  # fmt: skip
    """One file's rows in `schema` (a column an older version did not write reads as null),
    and, when `columns` is None, the varying-key columns it holds after them."""
    try:
        with fs.open_input_file(path) as stream:
            found = pq.ParquetFile(stream)
            names = found.schema_arrow.names
            table = found.read(columns=None if columns is None else
                               [c for c in columns if c in names])  # fmt: skip
        if "trial_id" not in names or "status" not in names:
            raise SweeperError(f"{path}: not a sweeper result row (no trial_id or status column)")
        fixed = [f for f in schema if columns is None or f.name in columns]
        arrays = [table.column(f.name).cast(f.type) if f.name in names
                  else pa.nulls(table.num_rows, f.type) for f in fixed]  # fmt: skip
        extra = [n for n in table.column_names if n not in schema.names]
        out = pa.Table.from_arrays([*arrays, *(table.column(n) for n in extra)],
                                   schema=pa.schema([*fixed, *(table.schema.field(n)
                                                               for n in extra)]))  # fmt: skip
    except (pa.ArrowException, OSError) as err:
        raise SweeperError(f"{path}: not a readable result row: {first_line(err)}") from None
    if any(out.column(c).null_count for c in ("trial_id", "status") if c in out.column_names):
        raise SweeperError(f"{path}: not a sweeper result row (a row without trial_id or status)")
    return out


def _check_unique(folder: Folder, keys: pa.Array, sources: list[str]) -> None:
    counts = Counter(keys.to_pylist())
    if len(counts) == len(keys):
        return
    key = next(k for k, n in counts.items() if n > 1)
    files = [f.rsplit("/", 1)[-1] for k, f in zip(keys.to_pylist(), sources) if k == key]
    raise SweeperError(
        f"{folder.path}: trial {key} of sweep {folder.name} has {len(files)} row files "
        f"({', '.join(files[:3])}); keep one (a copy would be counted twice)"
    )


def _check_sweep(folder: Folder, table: pa.Table, sources: list[str]) -> None:
    sweeps = table.column("sweep")
    wrong = pc.invert(pc.fill_null(pc.equal(sweeps, folder.name), False))
    if not pc.any(wrong).as_py():
        return
    at = pc.index(wrong, True).as_py()
    raise SweeperError(
        f"{sources[at]}: trial {table.column('trial_id')[at]} is a row of sweep "
        f"{sweeps[at]}, not of {folder.name} whose folder holds it; move it to its own "
        "sweep's folder"
    )


def read(uri: str) -> pd.DataFrame:
    """The rows as a DataFrame: one row per trial, the fixed columns, then a column for every
    config key that varies within a sweep (`train.beta`); empty with the fixed columns if
    there are no rows."""
    return read_table(uri).to_pandas()


def status_by_id(sweep_uri: str) -> dict[str, str]:
    """trial_id -> status of every row in a sweep directory."""
    table = read_table(sweep_uri, columns=["trial_id", "status"])
    return dict(zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist()))


def done_ids(sweep_uri: str, statuses: tuple[str, ...] = ("ok",)) -> set[str]:
    """trial_ids with a row whose status is one of `statuses` (default: finished fine)."""
    return {tid for tid, status in status_by_id(sweep_uri).items() if status in statuses}


def read_row(sweep_uri: str, trial_id: str) -> dict[str, Any] | None:
    """One trial's row, or None when it has none yet: the log's, else the table's (else an
    older layout's file of the trial)."""
    fs, path = location(sweep_uri)
    state = state_dir(path)
    for root, final in ((state, f"{state}/{LOG_DIR}/{trial_id}.parquet"),
                        (path, f"{path}/{trial_id}.parquet")):  # fmt: skip
        row = None if linked(fs, root, final) else read_one(fs, final, SCHEMA)
        if row is not None:
            return row
    return read_keyed(fs, f"{path}/{TABLE_FILE}", pc.field("trial_id") == trial_id, SCHEMA)


def read_keyed(fs: pafs.FileSystem, final: str, where: Any, schema: pa.Schema
               ) -> dict[str, Any] | None:  # fmt: skip
    """The row of a table file that `where` picks (None when none does, or no such file)."""
    try:
        if fs.get_file_info(final).type != pafs.FileType.File:
            return None
        data = pads.dataset(final, filesystem=fs, format="parquet", schema=schema)
        rows = data.to_table(filter=where).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise SweeperError(f"{final}: not a readable result table: {first_line(err)}") from None
    return rows[0] if rows else None


def read_one(fs: pafs.FileSystem, final: str, schema: pa.Schema) -> dict[str, Any] | None:
    """The row of one file (None when there is no such file)."""
    try:
        if fs.get_file_info(final).type != pafs.FileType.File:
            return None
        rows = pq.read_table(final, filesystem=fs, schema=schema).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise SweeperError(f"{final}: not a readable result row: {first_line(err)}") from None
    return rows[0] if rows else None
