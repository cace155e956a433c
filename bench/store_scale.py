"""The results store at scale: N rows written through the trials' own write path, compacted as
a run compacts them, then read by pandas, by `sweeper.results.read` and by `sweeper status`.

    python bench/store_scale.py --rows 1000,5000,20000 --out /tmp/store-scale --json

One JSON line per N: `rows`, `rows_read` (pandas), `write_s` (every row's atomic write,
fsync included, and the compactions a run would make meanwhile), `compactions`,
`final_compact_s`, `table_mib` (the visible table's size), `pandas_read_s` and
`pandas_peak_mib` (`pd.read_parquet(RESULTS/<sweep>)` in a fresh process: its time, and
the process's peak RSS, VmHWM, interpreter and imports included; Linux), `sweeper_read_s`,
`status_s` (the `sweeper status --json` command in a process that imported sweeper already) and
`status_cmd_s` (the whole command, interpreter start and imports, torch's included),
`polars_read_s` (`polars.read_parquet(RESULTS/<sweep>)`, no options) and `duckdb_read_s`
(`read_parquet('RESULTS/<sweep>/*.parquet')`), each asserted to return every row once.
Targets at 20,000 rows (issue 19): pandas < 1 s and < 1 GiB peak, `sweeper status` < 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# peak RSS: VmHWM of this process's own memory map (ru_maxrss would carry over, through exec,
# the high-water mark of the forked copy of the big parent process)
PANDAS_CHILD = """
import sys, time
import pandas as pd
t0 = time.perf_counter()
rows = len(pd.read_parquet(sys.argv[1]))
seconds = time.perf_counter() - t0
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(rows, seconds, int(hwm.split()[1]) / 1024)
"""

STATUS_CHILD = """
import contextlib, io, sys, time
from sweeper.cli import main
import sweeper.results, sweeper.cli.sweep_cmds, sweeper.cli.economics_cmds  # imports: untimed
t0 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["status", sys.argv[1], "--json"])
print(code, time.perf_counter() - t0)
"""


def _rows(n: int) -> list[dict[str, Any]]:
    """N distinct trials of a grid that varies the learning rate and the activation."""
    from sweeper.config import TrialConfig
    from sweeper.schema import empty_row
    from sweeper.trial import config_columns

    now = datetime.now(timezone.utc)
    acts = ("relu", "silu", "gelu", "elu")
    out = []
    for i in range(n):
        cfg = TrialConfig.model_validate({"sweep": "scale", "seed": i % 3,
                                          "train": {"lr": 0.01 + i * 1e-6},
                                          "arch": {"activation": acts[i % 4]}})  # fmt: skip
        row = empty_row()
        row.update(config_columns(cfg), status="ok", clean_acc=0.8, pgd_acc=0.4, cw_acc=0.4,
                   aa_acc=0.35, train_seconds=60.0, eval_seconds=5.0, started_at=now,
                   ended_at=now)  # fmt: skip
        out.append(row)
    return out


def measure(n: int, out: Path) -> dict[str, Any]:
    from sweeper import results
    from sweeper.results.compaction import Compactor

    sweep = out / f"rows-{n}" / "scale"
    shutil.rmtree(sweep.parent, ignore_errors=True)
    rows = _rows(n)
    varying = ["train.lr", "arch.activation"]
    compactor = Compactor(str(sweep))
    compactions = 0
    t0 = time.perf_counter()
    for row in rows:  # what each trial does when it ends, then the driver's callback
        results.write_row(str(sweep), row, varying=varying)
        compactions += compactor.maybe() > 0
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    results.compact(str(sweep))  # the run's end
    final_compact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = len(results.read(str(sweep)))
    sweeper_read_s = time.perf_counter() - t0
    child = subprocess.run([sys.executable, "-c", PANDAS_CHILD, str(sweep)], check=True,
                           capture_output=True, text=True)  # fmt: skip
    rows_read, pandas_s, peak = child.stdout.split()
    t0 = time.perf_counter()
    status = subprocess.run([sys.executable, "-c", STATUS_CHILD, str(sweep)], check=True,
                            capture_output=True, text=True)  # fmt: skip
    status_cmd_s = time.perf_counter() - t0
    code, status_s = status.stdout.split()
    assert int(code) == 0 and ours == n == int(rows_read), (code, ours, rows_read)
    others = _other_readers(sweep)
    assert all(got == n for got, _ in others.values()), others
    return {
        "rows": n, "rows_read": int(rows_read), "write_s": round(write_s, 2),
        "compactions": compactions, "final_compact_s": round(final_compact_s, 3),
        "table_mib": round((sweep / results.TABLE_FILE).stat().st_size / 2**20, 2),
        "pandas_read_s": round(float(pandas_s), 3), "pandas_peak_mib": round(float(peak), 1),
        "sweeper_read_s": round(sweeper_read_s, 3), "status_s": round(float(status_s), 3),
        "status_cmd_s": round(status_cmd_s, 2),
        **{f"{name}_read_s": round(seconds, 3) for name, (_, seconds) in others.items()},
    }  # fmt: skip


def _other_readers(sweep: Path) -> dict[str, tuple[int, float]]:
    """Rows and seconds of polars (the folder, no options) and duckdb (the folder's glob),
    where they are installed (the test extra has both)."""
    readers = {}
    try:
        import polars as pl

        t0 = time.perf_counter()
        readers["polars"] = (pl.read_parquet(str(sweep)).height, time.perf_counter() - t0)
    except ImportError:
        pass
    try:
        import duckdb

        t0 = time.perf_counter()
        got = duckdb.sql(f"SELECT count(*) FROM read_parquet('{sweep}/*.parquet')").fetchall()[0]
        readers["duckdb"] = (got[0], time.perf_counter() - t0)
    except ImportError:
        pass
    return readers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000", help="comma-separated row counts")
    parser.add_argument("--out", default="/tmp/sweeper-store-scale", help="scratch results root")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--keep", action="store_true", help="keep the sweeps written")
    parser.add_argument("--no-fsync", action="store_true",
                        help="skip fsync in the writes (write_s then means less; reads alike)")
    args = parser.parse_args()
    if args.no_fsync:  # the same write path minus durability: big N on a slow, loaded disk
        os.fsync = lambda fd: None
    out = Path(args.out)
    for n in (int(x) for x in args.rows.split(",")):
        record = {**measure(n, out), "fsync": not args.no_fsync}
        print(json.dumps(record) if args.json else
              " ".join(f"{k}={v}" for k, v in record.items()), flush=True)  # fmt: skip
        if not args.keep:
            shutil.rmtree(out / f"rows-{n}", ignore_errors=True)
    if not args.keep and out.exists() and not any(out.iterdir()):
        os.rmdir(out)


if __name__ == "__main__":
    main()
