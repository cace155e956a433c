"""Result rows on any pyarrow filesystem: one Parquet file per trial, written atomically.

RESULTS/<sweep>/<trial_id>.parquet holds exactly one row in the fixed SCHEMA, so a
sweep directory is one dataset (`pandas.read_parquet("results/<sweep>")`) and a
trial's presence is a file's presence. Writers put the bytes under a dot-name in the
same directory and rename it over the final name, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweeper.errors import SweeperError
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


def _to_table(row: dict[str, Any]) -> pa.Table:
    check_row(row)
    return pa.Table.from_pylist([{c: row[c] for c in COLUMNS}], schema=SCHEMA)


def write_row(sweep_uri: str, row: dict[str, Any]) -> str:
    """Write one trial's row as <sweep_uri>/<trial_id>.parquet, replacing any earlier one."""
    table = _to_table(row)
    fs, path = location(sweep_uri)
    fs.create_dir(path, recursive=True)
    final = f"{path}/{row['trial_id']}.parquet"
    temp = f"{path}/.{row['trial_id']}.{uuid.uuid4().hex[:8]}.tmp"
    if isinstance(fs, pafs.LocalFileSystem):
        with open(temp, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)
        _fsync_dir(path)
    else:
        with fs.open_output_stream(temp) as stream:
            pq.write_table(table, stream)
        fs.move(temp, final)
    return final


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


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _dataset(uri: str) -> pads.Dataset | None:
    fs, path = location(uri)
    try:
        return _discover(fs, path)
    except (pa.ArrowException, OSError) as err:
        raise SweeperError(f"{uri}: cannot read result rows: {_first_line(err)}") from None


def _discover(fs: pafs.FileSystem, path: str) -> pads.Dataset | None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return None
    if info.type == pafs.FileType.File:
        return pads.dataset(path, filesystem=fs, format="parquet", schema=SCHEMA)
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
    return pads.dataset(files, filesystem=fs, format="parquet", schema=SCHEMA)


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Every row under a sweep dir, a results root (all sweeps) or one file, in SCHEMA."""
    data = _dataset(uri)
    if data is None:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    try:
        table = data.to_table(columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(data, uri, err) from None
    if any(table.column(c).null_count for c in ("trial_id", "status") if c in table.column_names):
        raise _unreadable(data, uri, None)
    return table


def _unreadable(data: pads.Dataset, uri: str, err: BaseException | None) -> SweeperError:
    """Name the file that is damaged or is no result row (a foreign Parquet file)."""
    for fragment in data.get_fragments():
        try:
            names = fragment.physical_schema.names
            fragment.to_table(schema=SCHEMA)
        except (pa.ArrowException, OSError) as bad:
            return SweeperError(f"{fragment.path}: not a readable result row: {_first_line(bad)}")
        if "trial_id" not in names or "status" not in names:
            return SweeperError(
                f"{fragment.path}: not a sweeper result row (no trial_id or status column)"
            )
    why = _first_line(err) if err is not None else "rows without a trial_id or status"
    return SweeperError(f"{uri}: cannot read result rows: {why}")


def read(uri: str) -> pd.DataFrame:
    """The rows as a DataFrame (one row per trial; empty with the schema's columns if none)."""
    return read_table(uri).to_pandas()


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
    final = f"{path}/{trial_id}.parquet"
    try:
        if fs.get_file_info(final).type != pafs.FileType.File:
            return None
        rows = pq.read_table(final, filesystem=fs, schema=SCHEMA).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise SweeperError(f"{final}: not a readable result row: {_first_line(err)}") from None
    return rows[0] if rows else None
