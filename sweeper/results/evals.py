"""The evaluation table: stored weights evaluated again (`sweeper eval`), apart from training.

    RESULTS/_state/<sweep>/_eval/rows.parquet       the table (EVAL_SCHEMA), alone in its folder
    RESULTS/_state/<sweep>/_state/_eval/_rows/<trial_id>.<eval_id>.parquet
                                                    one row each, until compacted
    RESULTS/_state/<sweep>/_state/_eval/_lease/     the lease of the process compacting it

A training row is never touched: a re-evaluation (say, AutoAttack on all 10,000 test
images) is a row of its own, keyed by the trial and an `eval_id` that hashes the settings
it was measured with and the weights file, so the same evaluation is stored once and
different ones side by side. The table and its log work as the training rows' do
(sweeper.results.rows, `sweeper eval` compacts at its end), its state folder given by the
same rule (sweeper.results.layout.state_dir). Readers of the training rows never see it;
`pandas.read_parquet`, `polars.read_parquet("results/_state/<sweep>/_eval")` or `read_evals`
read this table.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sweeper.results.layout import LOG_DIR, state_dir
from sweeper.results.rows import (
    TABLE_FILE,
    Kind,
    join,
    location,
    read_keyed,
    read_one,
    read_table,
    write_log,
)
from sweeper.schema import EVAL_COLUMNS, EVAL_SCHEMA, check_row

EVAL_DIR = "_eval"
EVALS = Kind(EVAL_SCHEMA, ("trial_id", "eval_id"), sweep_named=False)


def eval_table(sweep_uri: str) -> str:
    """The evaluation table's folder: `_eval/` in the sweep's state folder."""
    return join(state_dir(sweep_uri), EVAL_DIR)


def eval_id(evaluation: dict[str, Any], weights: str) -> str:
    """12 hex digits of sha256 over the evaluation settings and the weights file's name."""
    blob = json.dumps({"evaluation": evaluation, "weights": weights}, sort_keys=True,
                      separators=(",", ":"))  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def write_eval_row(sweep_uri: str, row: dict[str, Any]) -> str:
    """Write one evaluation row into the table's log, replacing the same evaluation's
    earlier row."""
    check_row(row, EVAL_COLUMNS)
    table = pa.Table.from_pylist([{c: row[c] for c in EVAL_COLUMNS}], schema=EVAL_SCHEMA)
    fs, base = location(eval_table(sweep_uri))
    return write_log(fs, base, EVALS.key(row), table)


def read_eval_row(sweep_uri: str, trial_id: str, evaluation_id: str) -> dict[str, Any] | None:
    """One stored evaluation, or None when there is none yet (the log's, else the table's,
    else an older layout's file)."""
    fs, base = location(eval_table(sweep_uri))
    name = f"{trial_id}.{evaluation_id}.parquet"
    for final in (f"{state_dir(base)}/{LOG_DIR}/{name}", f"{base}/{name}"):
        row = read_one(fs, final, EVAL_SCHEMA)
        if row is not None:
            return row
    where = (pc.field("trial_id") == trial_id) & (pc.field("eval_id") == evaluation_id)
    return read_keyed(fs, f"{base}/{TABLE_FILE}", where, EVAL_SCHEMA)


def read_evals(sweep_uri: str) -> pd.DataFrame:
    """Every evaluation row of a sweep (empty, with the table's columns, when none)."""
    return read_table(eval_table(sweep_uri), kind=EVALS).to_pandas()
