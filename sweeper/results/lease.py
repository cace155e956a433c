"""One driver per sweep: a lease file in the results store.

Two drivers on one sweep folder would train every trial twice. `flock` cannot prevent it: many
cluster filesystems do not share it between nodes, and object stores have none. So the driver
that runs a sweep holds RESULTS/_state/<sweep>/_lease/<generation>.json, which names it (host, pid,
start time) and which it renews every `ttl / 4` seconds from a background thread.

A second driver reads the newest generation. While that lease is fresh it stops at once
(`LeaseHeld`, one line naming the holder). Once it is stale (not renewed for `ttl` seconds,
or its pid is gone on this very host) the new driver takes generation n + 1. Taking a
generation is an exclusive create: a hard link of a fully written temporary file, atomic on
local disks and on NFS, Lustre and GPFS, so of two drivers racing for one generation exactly
one wins, and no reader ever sees a half-written lease. Object stores (s3://, gs://) have no
exclusive create through pyarrow: there the writer whose token is still in place after a
settle delay wins (best effort). A holder that finds a newer generation than its own has lost
the sweep (it stalled past the TTL and another driver took over) and must stop.

Clocks: staleness compares the holder's wall clock (`renewed_at`) with the reader's, so nodes
are assumed to be NTP-synchronised to well within the TTL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow.fs as pafs

from sweeper.errors import StorageError, SweeperError, storage_error
from sweeper.results.layout import state_dir
from sweeper.results.rows import location

TTL_SECONDS = 60.0
OBJECT_STORE_SETTLE_SECONDS = 2.0
_GENERATION = re.compile(r"^(\d+)\.json$")
log = logging.getLogger(__name__)


class LeaseHeld(SweeperError):
    """Another driver holds the sweep: the message names it."""


@dataclass(frozen=True)
class Holder:
    """Who holds a sweep, as written in its lease file."""

    host: str
    pid: int
    started_at: str  # ISO 8601, UTC
    renewed_at: float  # seconds since the epoch, the holder's clock
    ttl: float
    token: str

    def describe(self, now: float | None = None) -> str:
        ago = max(0.0, (now or time.time()) - self.renewed_at)
        return (f"host {self.host}, pid {self.pid}, started {self.started_at}, "
                f"renewed {ago:.0f}s ago")  # fmt: skip

    def stale(self, now: float) -> bool:
        """Not renewed within its TTL, or its process is gone on this host."""
        if now - self.renewed_at > self.ttl:
            return True
        return self.host == socket.gethostname() and not pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Lease:
    """The lease of one sweep folder; use as a context manager around a run.

    `acquire()` raises LeaseHeld while another driver's lease is fresh. Inside the `with`
    block a thread renews the lease; `lost` turns true (and `taken_by` names the new holder)
    when another driver took the sweep over, and the run should then stop. `fault` is set
    (a StorageError) when the store became full or read-only: the run should stop too.
    """

    def __init__(self, sweep_uri: str, *, ttl: float = TTL_SECONDS,
                 folder: str | None = None) -> None:  # fmt: skip
        """`folder`: the folder holding the lease itself (default: the sweep's state folder's
        `_lease/`; the previous release kept it in the table's folder)."""
        self.sweep_uri = sweep_uri
        self.ttl = ttl
        self.fs, base = location(sweep_uri)
        self.dir = folder or f"{state_dir(base)}/_lease"
        self.generation: int | None = None
        self.holder: Holder | None = None
        self.taken_by: Holder | None = None
        self.fault: StorageError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def lost(self) -> bool:
        return self.taken_by is not None

    # --- reading -------------------------------------------------------------------------
    def _generations(self) -> list[int]:
        selector = pafs.FileSelector(self.dir, allow_not_found=True)
        found = (_GENERATION.match(i.base_name) for i in self.fs.get_file_info(selector))
        return sorted(int(m.group(1)) for m in found if m)

    def _read(self, generation: int) -> Holder | None:
        path = f"{self.dir}/{generation}.json"
        try:
            with self.fs.open_input_stream(path) as stream:
                return Holder(**json.loads(stream.read()))
        except FileNotFoundError:
            return None  # released or cleaned up meanwhile
        except (OSError, ValueError, TypeError):  # not ours to judge: treat as held
            info = self.fs.get_file_info(path)
            renewed = (info.mtime_ns or time.time_ns()) / 1e9
            return Holder("unknown", -1, "unknown", renewed, self.ttl, "")

    def current(self) -> tuple[int, Holder | None]:
        """The newest generation and its holder (0, None when nobody ever held the sweep)."""
        for generation in reversed(self._generations()):
            holder = self._read(generation)
            if holder is not None:
                return generation, holder
        return 0, None

    # --- taking, renewing, releasing -----------------------------------------------------
    def acquire(self) -> Lease:
        """Take the sweep, or raise LeaseHeld naming the driver that has it."""
        try:
            self.fs.create_dir(self.dir, recursive=True)
        except OSError as err:  # e.g. --results names a file, or a read-only location
            raise storage_error(err, self.dir) or SweeperError(
                f"{self.sweep_uri}: cannot create the results folder: {err}") from None
        generation, holder = self.current()
        now = time.time()
        if holder is not None and not holder.stale(now):
            raise self._held(holder)
        mine = Holder(host=socket.gethostname(), pid=os.getpid(),
                      started_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                      renewed_at=now, ttl=self.ttl, token=uuid.uuid4().hex)  # fmt: skip
        try:
            taken = self._create_exclusive(generation + 1, mine)
        except OSError as err:  # a full or read-only store: one line, no retry
            raise storage_error(err, f"{self.dir}/{generation + 1}.json") or err from None
        if not taken:
            _, winner = self.current()  # another driver took this generation first
            raise self._held(winner or holder or mine)
        self.generation, self.holder = generation + 1, mine
        for old in self._generations():
            if old < self.generation:
                self._delete(old)
        return self

    def _held(self, holder: Holder) -> LeaseHeld:
        return LeaseHeld(
            f"{self.sweep_uri}: another driver runs this sweep ({holder.describe()}); "
            f"wait for it to end, or for its lease to go {holder.ttl:.0f}s without renewal "
            f"(it is then taken over)"
        )

    def _create_exclusive(self, generation: int, holder: Holder) -> bool:
        path = f"{self.dir}/{generation}.json"
        data = json.dumps(asdict(holder)).encode()
        if isinstance(self.fs, pafs.LocalFileSystem):
            temp = f"{self.dir}/.{holder.token}.tmp"
            try:
                with open(temp, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError:
                self._remove(temp)
                raise
            try:
                os.link(temp, path)  # fails if the generation exists: the atomic step
            except OSError:
                pass  # over NFS a lost reply can report failure on success: nlink decides
            try:
                return os.stat(temp).st_nlink == 2
            finally:
                os.unlink(temp)
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            return False
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)
        time.sleep(OBJECT_STORE_SETTLE_SECONDS)  # a racing writer's object lands meanwhile
        written = self._read(generation)
        return written is not None and written.token == holder.token

    def renew(self) -> bool:
        """Rewrite our lease with a new time; False (and `taken_by` set) when we lost it."""
        assert self.generation is not None and self.holder is not None, "acquire() first"
        newer = [g for g in self._generations() if g > self.generation]
        if newer:
            self.taken_by = self._read(max(newer)) or self.holder
            return False
        self.holder = Holder(**{**asdict(self.holder), "renewed_at": time.time()})
        path = f"{self.dir}/{self.generation}.json"
        temp = f"{self.dir}/.{self.holder.token}.renew.tmp"
        try:
            with self.fs.open_output_stream(temp) as stream:
                stream.write(json.dumps(asdict(self.holder)).encode())
            self.fs.move(temp, path)
        except OSError:
            self._remove(temp)
            raise
        return True

    def release(self) -> None:
        """Give the sweep up (only our own generation, and only if it is still ours)."""
        if self.generation is None or self.holder is None:
            return
        current = self._read(self.generation)
        if current is not None and current.token == self.holder.token:
            self._delete(self.generation)
        self.generation = None

    def _delete(self, generation: int) -> None:
        self._remove(f"{self.dir}/{generation}.json")

    def _remove(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except OSError:
            pass  # already gone (another driver cleaned up), or a read-only store

    # --- the renewing thread -------------------------------------------------------------
    def _keep(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                if not self.renew():
                    log.error("lost the lease of %s to %s", self.sweep_uri,
                              self.taken_by.describe() if self.taken_by else "?")  # fmt: skip
                    return
            except OSError as err:
                self.fault = storage_error(err, f"{self.dir}/{self.generation}.json")
                if self.fault is not None:  # full or read-only: the run stops, says why once
                    return
                # the store is unreachable for a moment: try again
                log.warning("could not renew the lease of %s: %s", self.sweep_uri, err)

    def __enter__(self) -> Lease:
        if self.generation is None:
            self.acquire()
        self._stop.clear()
        self._thread = threading.Thread(target=self._keep, name="sweeper-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not self.lost:
            self.release()
