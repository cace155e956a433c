"""The results store: one Parquet row per trial under RESULTS/<sweep>/, on any pyarrow
filesystem (a local path or a URI such as s3://...).

`rows.py` writes rows atomically and reads a sweep back as a table or DataFrame;
`lease.py` keeps one driver per sweep (a lease file in the store).
"""

from sweeper.results.lease import Lease, LeaseHeld
from sweeper.results.rows import (
    IGNORED_PREFIXES,
    done_ids,
    join,
    location,
    read,
    read_row,
    read_table,
    status_by_id,
    sweep_dir,
    write_row,
)

__all__ = [
    "IGNORED_PREFIXES",
    "Lease",
    "LeaseHeld",
    "done_ids",
    "join",
    "location",
    "read",
    "read_row",
    "read_table",
    "status_by_id",
    "sweep_dir",
    "write_row",
]
