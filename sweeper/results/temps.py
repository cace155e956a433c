"""The store's own temporary files: stale ones removed, and a write probe.

Every writer of the store puts its bytes under a dot-name ending in `.tmp` and renames it
over the final name (rows.write_atomic, the lease, training checkpoints). A writer killed
between the two leaves its dot-name behind; the next run removes those older than the
lease's TTL (a live writer's file is younger: a driver holding the lease renews it that
often), and only names sweeper itself writes. Symbolic links are never followed.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
import uuid

import pyarrow.fs as pafs

from sweeper.results.layout import state_dir
from sweeper.results.rows import location, write_atomic

# .<name>.<8 hex>.tmp (write_atomic), .<name>.<pid>.tmp (checkpoints), .<32 hex>.tmp and
# .<32 hex>.renew.tmp (the lease)
TEMP_NAME = re.compile(r"^\.(?:[\w.-]+\.)?(?:[0-9a-f]{8}|[0-9a-f]{32}(?:\.renew)?|\d+)\.tmp$")
log = logging.getLogger(__name__)


def stale_temps(sweep_uri: str, older_than: float, now: float | None = None) -> list[str]:
    """Paths of sweeper's temporary files under a sweep's folder and its state folder
    (sweeper.results.layout) not modified for `older_than` seconds (symbolic links, and what
    they point to, are skipped)."""
    cutoff = (now if now is not None else time.time()) - older_than
    found = []
    for uri in (sweep_uri, state_dir(sweep_uri)):
        found += [path for path, mtime in _temps(uri) if mtime < cutoff]
    return sorted(found)


def _temps(uri: str) -> list[tuple[str, float]]:
    """(path, mtime) of every sweeper temporary file under `uri`."""
    fs, base = location(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        stamped = []
        for folder, _, files in os.walk(base, followlinks=False):
            for name in filter(TEMP_NAME.match, files):
                try:
                    info = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue  # renamed into place meanwhile
                if not stat.S_ISLNK(info.st_mode):
                    stamped.append((os.path.join(folder, name), info.st_mtime))
    else:
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        stamped = [(i.path, (i.mtime_ns or 0) / 1e9) for i in fs.get_file_info(selector)
                   if i.type == pafs.FileType.File and TEMP_NAME.match(i.base_name)]  # fmt: skip
    return stamped


def remove_stale_temps(sweep_uri: str, older_than: float) -> list[str]:
    """Remove what `stale_temps` finds (a file that vanished meanwhile is fine); the paths."""
    fs, _ = location(sweep_uri)
    removed = []
    for path in stale_temps(sweep_uri, older_than):
        try:
            fs.delete_file(path)
        except OSError:
            continue  # removed by another process, or a read-only store: nothing to do
        removed.append(path)
    if removed:
        log.info("removed %d stale temporary file(s) of killed writers in %s", len(removed),
                 sweep_uri)  # fmt: skip
    return removed


def check_writable(folder_uri: str) -> None:
    """Write and remove a small file in `folder_uri`: a full or read-only store raises
    StorageError here, before any work whose result could not be stored."""
    fs, base = location(folder_uri)
    probe = f"{base}/.writable.{uuid.uuid4().hex[:8]}.tmp"  # a stale one is removed later
    write_atomic(fs, probe, lambda stream: stream.write(b"sweeper\n"))
    try:
        fs.delete_file(probe)
    except OSError:
        pass
