"""The evaluation table: stored weights evaluated again (`sweeper eval`), apart from training.

    RESULTS/<sweep>/_eval/<trial_id>.<eval_id>.parquet    one row (sweeper.schema.EVAL_SCHEMA)

A training row is never touched: a re-evaluation (say, AutoAttack on all 10,000 test
images) is a row of its own, keyed by the trial and an `eval_id` that hashes the settings
it was measured with and the weights file, so the same evaluation is stored once and
different ones side by side. Readers of the training rows skip `_eval/` (a `_` name);
`pandas.read_parquet("results/<sweep>/_eval")` or `read_evals` read this table.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sweeper.results.rows import join, location, read_one, read_table, write_atomic
from sweeper.schema import EVAL_COLUMNS, EVAL_SCHEMA, check_row

EVAL_DIR = "_eval"


def eval_table(sweep_uri: str) -> str:
    return join(sweep_uri, EVAL_DIR)


def eval_id(evaluation: dict[str, Any], weights: str) -> str:
    """12 hex digits of sha256 over the evaluation settings and the weights file's name."""
    blob = json.dumps({"evaluation": evaluation, "weights": weights}, sort_keys=True,
                      separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _path(sweep_uri: str, trial_id: str, evaluation_id: str) -> tuple[pafs.FileSystem, str]:
    fs, base = location(eval_table(sweep_uri))
    return fs, f"{base}/{trial_id}.{evaluation_id}.parquet"


def write_eval_row(sweep_uri: str, row: dict[str, Any]) -> str:
    """Write one evaluation row atomically, replacing the same evaluation's earlier row."""
    check_row(row, EVAL_COLUMNS)
    table = pa.Table.from_pylist([{c: row[c] for c in EVAL_COLUMNS}], schema=EVAL_SCHEMA)
    fs, final = _path(sweep_uri, row["trial_id"], row["eval_id"])
    write_atomic(fs, final, lambda stream: pq.write_table(table, stream))
    return final


def read_eval_row(sweep_uri: str, trial_id: str, evaluation_id: str) -> dict[str, Any] | None:
    """One stored evaluation, or None when there is none yet."""
    fs, final = _path(sweep_uri, trial_id, evaluation_id)
    return read_one(fs, final, EVAL_SCHEMA)


def read_evals(sweep_uri: str) -> pd.DataFrame:
    """Every evaluation row of a sweep (empty, with the table's columns, when none)."""
    return read_table(eval_table(sweep_uri), schema=EVAL_SCHEMA).to_pandas()
