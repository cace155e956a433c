"""The results store: one Parquet table per sweep, RESULTS/<sweep>/rows.parquet (alone in its
folder; the rest in RESULTS/_state/<sweep>/), on any pyarrow filesystem (a local path or a URI
such as s3://...).

`rows.py` writes a trial's row into the sweep's log and reads a sweep back as a table or
DataFrame; `compaction.py` folds the log into the table; `listing.py` lists and deletes without
following links;
`layout.py` says where a table's state lies and `migration.py` moves an older layout there;
`columns.py` adds a column per varying config key; `weights.py` keeps each trial's trained
network beside its row; `evals.py` holds the re-evaluation table (`sweeper eval`); `lease.py`
keeps one driver per sweep (a lease file in the store); `temps.py` removes killed writers'
temporary files and probes that the store takes writes; `summary.py` the adaptive order's
summary for `sweeper status`.
"""

from sweeper.results.compaction import compact
from sweeper.results.evals import (
    EVAL_DIR,
    EVALS,
    eval_id,
    eval_table,
    read_eval_row,
    read_evals,
    write_eval_row,
)
from sweeper.results.layout import LOG_DIR, state_dir
from sweeper.results.lease import Lease, LeaseHeld
from sweeper.results.migration import migrate
from sweeper.results.rows import (
    IGNORED_PREFIXES,
    TABLE_FILE,
    done_ids,
    join,
    location,
    read,
    read_row,
    read_table,
    status_by_id,
    sweep_dir,
    write_atomic,
    write_row,
)
from sweeper.results.temps import check_writable, remove_stale_temps
from sweeper.results.weights import (
    WEIGHTS_DIR,
    load_weights,
    store_weights,
    stored_weights,
    weights_uri,
)

__all__ = [
    "EVAL_DIR",
    "EVALS",
    "IGNORED_PREFIXES",
    "LOG_DIR",
    "TABLE_FILE",
    "compact",
    "Lease",
    "LeaseHeld",
    "WEIGHTS_DIR",
    "check_writable",
    "done_ids",
    "eval_id",
    "eval_table",
    "join",
    "load_weights",
    "location",
    "migrate",
    "read",
    "read_eval_row",
    "read_evals",
    "read_row",
    "read_table",
    "remove_stale_temps",
    "state_dir",
    "status_by_id",
    "store_weights",
    "stored_weights",
    "sweep_dir",
    "weights_uri",
    "write_atomic",
    "write_eval_row",
    "write_row",
]
