"""Result rows on any pyarrow filesystem: one Parquet file per trial, written atomically.

RESULTS/<sweep>/<trial_id>.parquet holds exactly one row in the fixed SCHEMA, so a
sweep directory is one dataset (`pandas.read_parquet("results/<sweep>")`) and a
trial's presence is a file's presence. Writers put the bytes under a dot-name in the
same directory and rename it over the final name, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweeper.errors import SweeperError, first_line, storage_error
from sweeper.results.columns import extra_columns, with_varying
from sweeper.schema import COLUMNS, SCHEMA, check_row

# pyarrow's dataset discovery skips names starting with these: temp files and _ray/
IGNORED_PREFIXES = (".", "_")


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
    """Write one trial's row as <sweep_uri>/<trial_id>.parquet, replacing any earlier one.

    `varying`: dotted config keys the run varies; each becomes a column of its own
    (sweeper.results.columns), taken from the row's config."""
    table = _to_table(row, varying)
    fs, path = location(sweep_uri)
    final = f"{path}/{row['trial_id']}.parquet"
    write_atomic(fs, final, lambda stream: pq.write_table(table, stream))
    return final


def write_atomic(fs: pafs.FileSystem, final: str, write: Callable[[Any], None]) -> None:
    """`write(stream)` into a dot-name beside `final`, then rename it over `final`: a reader
    sees the old file or the new one, never a part (and on a local disk, the rename is
    made durable before returning). A full or read-only store raises StorageError naming
    `final` (the dot-name removed): no retry would succeed."""
    folder, _, name = final.rpartition("/")
    temp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fs.create_dir(folder, recursive=True)
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


def _dataset(uri: str, schema: pa.Schema = SCHEMA) -> pads.Dataset | None:
    fs, path = location(uri)
    try:
        return _discover(fs, path, schema)
    except (pa.ArrowException, OSError) as err:
        raise SweeperError(f"{uri}: cannot read result rows: {first_line(err)}") from None


def _discover(fs: pafs.FileSystem, path: str, schema: pa.Schema) -> pads.Dataset | None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return None
    if info.type == pafs.FileType.File:
        return pads.dataset(path, filesystem=fs, format="parquet", schema=schema)
    selector = pafs.FileSelector(path, recursive=True)
    files = [
        f.path
        for f in fs.get_file_info(selector)
        if f.type == pafs.FileType.File
        and f.path.endswith(".parquet")
        and not any(
            part.startswith(IGNORED_PREFIXES) for part in f.path[len(path) :].split("/") if part
        )
    ]
    return pads.dataset(files, filesystem=fs, format="parquet", schema=schema)


def _with_all_columns(data: pads.Dataset) -> pads.Dataset:
    """The dataset read with the union of its files' columns: the fixed schema first, then
    the varying-key columns each run added (a file without one reads it as null). Types
    that cannot be unified leave the fixed schema only (`read` recomputes those columns)."""
    try:
        schemas = [fragment.physical_schema for fragment in data.get_fragments()]
        return data.replace_schema(
            pa.unify_schemas([data.schema, *schemas], promote_options="permissive")
        )
    except (pa.ArrowException, OSError):
        return data  # a damaged file: reading it names it


def read_table(uri: str, columns: list[str] | None = None, *, schema: pa.Schema = SCHEMA
               ) -> pa.Table:  # fmt: skip
    """Every row under a sweep dir, a results root (all sweeps) or one file: the fixed
    schema's columns (and, when `columns` is None, every varying-key column stored).

    A trial with two rows in one sweep (a row file copied under a second name) is an error:
    counting it twice would bias every table built from the rows."""
    data = _dataset(uri, schema)
    if data is None:
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    if columns is None:
        data = _with_all_columns(data)
    keys = [c for c in ("sweep", "trial_id") if columns is not None and c not in columns]
    try:
        table = data.to_table(columns=None if columns is None else [*columns, *keys])
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(data, uri, err, schema) from None
    if any(table.column(c).null_count for c in ("trial_id", "status") if c in table.column_names):
        raise _unreadable(data, uri, None, schema)
    if schema is SCHEMA:
        _check_unique(data, table, uri)
    return table.drop_columns(keys)


def _check_unique(data: pads.Dataset, table: pa.Table, uri: str) -> None:
    pairs = list(zip(table.column("sweep").to_pylist(), table.column("trial_id").to_pylist()))
    if len(set(pairs)) == len(pairs):
        return
    sweep, trial_id = next(p for p, n in Counter(pairs).items() if n > 1)
    files = [
        fragment.path.rsplit("/", 1)[-1]
        for fragment in data.get_fragments()
        if trial_id in fragment.to_table(columns=["trial_id"]).column(0).to_pylist()
    ]
    raise SweeperError(
        f"{uri}: trial {trial_id} of sweep {sweep} has {len(files)} row files "
        f"({', '.join(files[:3])}); keep one (a copy would be counted twice)"
    )


def _unreadable(data: pads.Dataset, uri: str, err: BaseException | None,
                schema: pa.Schema = SCHEMA) -> SweeperError:  # fmt: skip
    """Name the file that is damaged or is no result row (a foreign Parquet file)."""
    for fragment in data.get_fragments():
        try:
            names = fragment.physical_schema.names
            fragment.to_table(schema=schema)
        except (pa.ArrowException, OSError) as bad:
            return SweeperError(f"{fragment.path}: not a readable result row: {first_line(bad)}")
        if "trial_id" not in names or "status" not in names:
            return SweeperError(
                f"{fragment.path}: not a sweeper result row (no trial_id or status column)"
            )
    why = first_line(err) if err is not None else "rows without a trial_id or status"
    return SweeperError(f"{uri}: cannot read result rows: {why}")


def read(uri: str) -> pd.DataFrame:
    """The rows as a DataFrame: one row per trial, the fixed columns, then a column for every
    config key that varies within a sweep (`train.beta`); empty with the fixed columns if
    there are no rows."""
    return with_varying(read_table(uri)).to_pandas()


def status_by_id(sweep_uri: str) -> dict[str, str]:
    """trial_id -> status of every row in a sweep directory."""
    table = read_table(sweep_uri, columns=["trial_id", "status"])
    return dict(zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist()))


def done_ids(sweep_uri: str, statuses: tuple[str, ...] = ("ok",)) -> set[str]:
    """trial_ids with a row whose status is one of `statuses` (default: finished fine)."""
    return {tid for tid, status in status_by_id(sweep_uri).items() if status in statuses}


def read_row(sweep_uri: str, trial_id: str) -> dict[str, Any] | None:
    """One trial's row, or None when it has none yet."""
    fs, path = location(sweep_uri)
    return read_one(fs, f"{path}/{trial_id}.parquet", SCHEMA)


def read_one(fs: pafs.FileSystem, final: str, schema: pa.Schema) -> dict[str, Any] | None:
    """The row of one file (None when there is no such file)."""
    try:
        if fs.get_file_info(final).type != pafs.FileType.File:
            return None
        rows = pq.read_table(final, filesystem=fs, schema=schema).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise SweeperError(f"{final}: not a readable result row: {first_line(err)}") from None
    return rows[0] if rows else None
