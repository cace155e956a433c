"""A full or read-only store: the first failed write is one StorageError naming the path and
the errno (exit 2), nothing is retried, rows already written stay intact; stale temporary
files of killed writers are removed at the next start; `sweeper eval` probes its table and
runs torch on a trial's thread count.

Unit tests simulate ENOSPC / EROFS at the OS call; the `real_*` tests use a real 1 MiB tmpfs
and a read-only bind mount when the platform lets the test mount (root), else they skip.
scripts/storage_faults.sh is the same repro end to end through `sweeper run`.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import log_dir, tiny_space

from sweeper import results
from sweeper.cli import main
from sweeper.errors import StorageError, storage_error
from sweeper.results import Lease
from sweeper.results.temps import remove_stale_temps, stale_temps
from sweeper.schema import empty_row
from sweeper.space import expand, load

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EROFS = OSError(errno.EROFS, os.strerror(errno.EROFS))


def _rows(tmp_path: Path, name: str = "tiny", n: int = 2) -> tuple[Path, list[dict[str, Any]]]:
    """A space file and `n` ok rows of it (as a finished sweep would hold)."""
    from sweeper.trial import config_columns

    space = tmp_path / f"{name}.yaml"
    space.write_text(tiny_space(name, "axes:\n  - grid: {arch.activation: [relu, silu, gelu]}\n"))
    now = datetime.now(timezone.utc)
    rows = []
    for config in expand(load(space))[:n]:
        row = empty_row()
        row.update(config_columns(config), status="ok", clean_acc=0.5, started_at=now,
                   ended_at=now, weights=f"_weights/{config.trial_id}/final.pt")  # fmt: skip
        rows.append(row)
    return space, rows


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# --- the shared write paths, simulated -------------------------------------------------------


def test_a_full_disk_at_a_row_write_is_one_storage_error_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, (first, second) = _rows(tmp_path)
    sweep = tmp_path / "r" / "tiny"
    results.write_row(str(sweep), first)
    log = Path(results.state_dir(str(sweep))) / results.LOG_DIR  # the row log, first
    before = (log / f"{first['trial_id']}.parquet").read_bytes()

    def full(*args: Any) -> None:
        raise ENOSPC

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError) as caught:
        results.write_row(str(sweep), second)
    message = str(caught.value)
    assert f"{second['trial_id']}.parquet: cannot write: No space left on device" in message
    assert "(ENOSPC, errno 28)" in message and "\n" not in message
    monkeypatch.undo()
    assert _files(log) == [f"{first['trial_id']}.parquet"]  # no temp, no half row
    assert (log / f"{first['trial_id']}.parquet").read_bytes() == before


def test_other_os_errors_are_not_storage_faults(tmp_path: Path, monkeypatch) -> None:
    _, (row, _) = _rows(tmp_path)

    def flaky(*args: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="I/O error") as caught:
        results.write_row(str(tmp_path / "r" / "tiny"), row)
    assert not isinstance(caught.value, StorageError)
    assert storage_error(caught.value, "x") is None
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")
    wrapped.__context__ = EROFS  # what torch.save raises on a handle that hit EROFS
    assert "(EROFS, errno 30)" in str(storage_error(wrapped, "/p"))
    pyarrow_text = OSError("Error writing bytes to file. Detail: [errno 28] No space left")
    assert "ENOSPC" in str(storage_error(pyarrow_text, "/p"))


def test_a_checkpoint_on_a_full_disk_raises_storage_error_even_when_catching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_trial(catch=True) turns a trial's error into a failed row, but not a full disk:
    that row could not be written either, and every retry would fail the same way."""
    import torch

    from sweeper.training import checkpoint
    from sweeper.trial import run_trial

    real_save = torch.save

    def full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real_save(obj, f, *args, **kwargs)
        raise ENOSPC

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(StorageError, match=r"last\.pt: cannot write: .*ENOSPC"):
        checkpoint.save_checkpoint(tmp_path / "ck", {"epoch": 1})
    assert _files(tmp_path / "ck") == []  # the temporary file is gone
    space, _ = _rows(tmp_path)
    config = expand(load(space))[0]
    with pytest.raises(StorageError, match="ENOSPC"):
        run_trial(config, checkpoint_dir=tmp_path / "ck", catch=True)


def test_the_lease_on_a_read_only_store_is_one_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(*args: Any, **kwargs: Any) -> None:
        raise EROFS

    monkeypatch.setattr(os, "fsync", read_only)
    with pytest.raises(StorageError, match=r"_lease/1\.json: cannot write: Read-only .*EROFS"):
        Lease(str(tmp_path / "tiny")).acquire()
    monkeypatch.undo()
    assert _files(tmp_path / "_state" / "tiny") == []  # no temp file left behind


def test_a_lease_whose_renewal_meets_a_full_disk_stops_renewing_and_says_why(
    tmp_path: Path,
) -> None:
    lease = Lease(str(tmp_path / "tiny"), ttl=0.2)
    calls = []

    def full() -> bool:
        calls.append(1)
        raise ENOSPC

    with lease:
        lease.renew = full  # type: ignore[method-assign]
        deadline = time.monotonic() + 60
        while lease.fault is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a thread that kept retrying would call again meanwhile
    assert isinstance(lease.fault, StorageError) and "ENOSPC" in str(lease.fault)
    assert len(calls) == 1


def test_eval_checks_its_table_is_writable_before_evaluating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import sweeper.reevaluate

    _, rows = _rows(tmp_path)
    sweep = tmp_path / "r" / "tiny"
    for row in rows:
        results.write_row(str(sweep), row)

    def never(*args: Any) -> None:
        raise AssertionError("evaluated although the table cannot be written")

    monkeypatch.setattr(sweeper.reevaluate, "evaluate_state", never)
    monkeypatch.setattr(results.temps, "write_atomic", _failing_write(EROFS))
    assert main(["eval", str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "/_eval/.writable." in err and "(EROFS, errno 30)" in err


def _failing_write(error: OSError) -> Any:
    def write(fs: Any, final: str, _: Any) -> None:
        raise storage_error(error, final) or error

    return write


# --- stale temporary files -------------------------------------------------------------------


def test_stale_temps_of_killed_writers_are_removed_and_only_those(tmp_path: Path) -> None:
    sweep, state = tmp_path / "tiny", tmp_path / "_state" / "tiny"  # both folders are searched
    sweep.mkdir()
    (state / "_weights" / "abc").mkdir(parents=True)
    (state / "_lease").mkdir()
    old = [sweep / ".abc.parquet.0123abcd.tmp", state / "_weights/abc/.final.pt.89abcdef.tmp",
           state / "_lease" / f".{'a' * 32}.tmp", state / "_lease" / f".{'b' * 32}.renew.tmp",
           state / ".rows.parquet.0123abcd.tmp", sweep / ".last.pt.4242.tmp"]  # fmt: skip
    young = sweep / ".def.parquet.0123abcd.tmp"
    foreign = [sweep / "notes.tmp", sweep / ".mine.tmp", sweep / "abc.parquet"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".x.parquet.0123abcd.tmp").write_text("not the sweep's")
    (sweep / "linked").symlink_to(outside)
    (sweep / ".y.parquet.0123abcd.tmp").symlink_to(outside / ".x.parquet.0123abcd.tmp")
    for path in [*old, young, *foreign]:
        path.write_text("x")
    an_hour_ago = time.time() - 3600
    for path in [*old, *foreign]:
        os.utime(path, (an_hour_ago, an_hour_ago))
    os.utime(outside / ".x.parquet.0123abcd.tmp", (an_hour_ago, an_hour_ago))
    assert stale_temps(str(sweep), older_than=60) == sorted(str(p) for p in old)
    assert sorted(remove_stale_temps(str(sweep), older_than=60)) == sorted(str(p) for p in old)
    assert not any(p.exists() for p in old)
    assert young.exists() and all(p.exists() for p in foreign)
    assert (outside / ".x.parquet.0123abcd.tmp").exists()  # links are never followed


def test_eval_runs_torch_on_a_trials_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from sweeper.reevaluate import use_cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert use_cpu_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's setting wins, as in Ray
        assert use_cpu_threads(1) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --- a real tmpfs and a real read-only mount (root only) -------------------------------------


def _mount(*args: str) -> bool:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    return done.returncode == 0


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs at tmp_path/m (skips where the test may not mount)."""
    point = tmp_path / "m"
    point.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC


def test_real_full_tmpfs_row_write_is_enospc_and_rows_stay(mounted: Path) -> None:
    space, (first, second) = _rows(mounted.parent)
    sweep = mounted / "tiny"
    results.write_row(str(sweep), first)
    _fill(mounted)
    with pytest.raises(StorageError, match=r"cannot write: No space left on device \(ENOSPC"):
        results.write_row(str(sweep), second)
    assert list(results.read(str(sweep))["trial_id"]) == [first["trial_id"]]
    log = Path(results.state_dir(str(sweep))) / results.LOG_DIR
    assert [p.name for p in log.iterdir()] == [f"{first['trial_id']}.parquet"]  # no temp


def test_real_read_only_store_run_and_eval_are_one_line_exit_2(mounted: Path) -> None:
    space, rows = _rows(mounted.parent)
    sweep = mounted / "tiny"
    for row in rows:
        results.write_row(str(sweep), row)
    if not _mount("-o", "remount,ro", str(mounted)):
        pytest.skip("cannot remount read-only here")
    for args in (["run", str(space), "--results", str(mounted)], ["eval", str(sweep)]):
        done = subprocess.run([sys.executable, "-m", "sweeper", *args], capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        err = done.stderr.strip()
        assert done.returncode == 2, (args, err[-3000:])
        assert err.startswith("error: ") and "\n" not in err, err
        assert "Read-only file system (EROFS, errno 30)" in err
    assert len(results.read(str(sweep))) == 2  # rows intact


# --- the runner: a trial meeting a full disk stops the run, without retries ------------------

LOG_DIR = log_dir("sweeper-test-storage-")  # captured by value in the workers


def full_disk_trial(config: Any, *, checkpoint_dir: str | None = None, on_epoch: Any = None,
                    catch: bool = True, weights_dir: str | None = None,
                    ) -> dict[str, Any]:  # fmt: skip
    """An ok row, except for silu, whose checkpoint meets a full disk (as run_trial raises)."""
    from sweeper.trial import config_columns

    with open(os.path.join(LOG_DIR, "runs.log"), "a") as handle:
        handle.write(f"{config.arch.activation[0]}\n")
    if config.arch.activation[0] == "silu":
        raise storage_error(ENOSPC, f"{checkpoint_dir}/last.pt") or ENOSPC
    row = empty_row()
    now = datetime.now(timezone.utc)
    row.update(config_columns(config), status="ok", clean_acc=0.5, started_at=now, ended_at=now)
    return row


def test_a_trial_on_a_full_disk_stops_the_run_without_retries(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from sweeper.sweep.runner import RunOptions, _init_ray, run_sweep

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    space, _ = _rows(tmp_path)
    opts = RunOptions(results=str(tmp_path / "r"), progress=False, max_concurrent=1,
                      max_failures=2)  # fmt: skip
    assert _init_ray(opts, num_cpus=2)
    try:
        with pytest.raises(StorageError, match=r"last\.pt: cannot write: .*ENOSPC"):
            run_sweep(load(space), opts, trial_fn=full_disk_trial)
    finally:
        ray.shutdown()
    ran = Path(LOG_DIR, "runs.log").read_text().split()
    assert ran[:2] == ["relu", "silu"] and ran.count("silu") == 1  # never retried
    rows = results.read(str(tmp_path / "r" / "tiny"))
    assert list(rows["activation"]) == ["relu"] and list(rows["status"]) == ["ok"]
