"""`sweeper run` as a batch job sees it: the log when stderr is no terminal, exit codes (0 all
ok, 1 a trial of this run failed, 2 another driver holds the sweep, 130 Ctrl+C), and two
drivers started together on one sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import checkpoint_folders, marked_env, tiny_space

from sweeper import results

pytest.importorskip("ray")

SPACE = tiny_space(
    "cli",
    """
axes:
  - grid:
      train.lr: [0.05, 1.0e+20]   # the second one diverges (non-finite loss)
""",
    train=256,
)  # 8 steps: enough for the huge learning rate to overflow


def _run(space: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweeper", "run", str(space), "--results", str(out), *extra]


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Wait for all; return the indices in the order they ended."""
    order: list[int] = []
    deadline = time.monotonic() + timeout
    while len(order) < len(procs):
        assert time.monotonic() < deadline, "a driver did not end"
        for i, p in enumerate(procs):
            if i not in order and p.poll() is not None:
                order.append(i)
        time.sleep(0.05)
    return order


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="cleans up its processes via /proc")
def test_two_drivers_started_together_one_runs_the_other_exits_2(tmp_path: Path) -> None:
    space, out = tmp_path / "cli.yaml", tmp_path / "r"
    space.write_text(SPACE)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with marked_env() as env:
        procs = [subprocess.Popen(_run(space, out), env=env, stdout=subprocess.DEVNULL,
                                  stderr=log.open("w")) for log in logs]  # fmt: skip
        order = _wait(procs, timeout=900)
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [1, 2], [log.read_text()[-3000:] for log in logs]
    loser, winner = (codes.index(2), codes.index(1))
    assert order[0] == loser  # it stopped at once, long before the sweep ended
    refusal = logs[loser].read_text().strip().splitlines()
    assert len(refusal) == 1 and refusal[0].startswith("error: ")
    assert f"another driver runs this sweep (host {os.uname().nodename}, " in refusal[0]
    assert f"pid {procs[winner].pid}, started " in refusal[0]

    # the winner's log (stderr is a file): a line for each trial's start and end, no ANSI
    frame = results.read(str(out / "cli"))
    ok, bad = (frame[frame["status"] == s]["trial_id"].tolist() for s in ("ok", "failed"))
    assert len(ok) == 1 and len(bad) == 1
    log = logs[winner].read_text()
    assert "\x1b" not in log
    lines = [line.split(" ", 2)[-1] for line in log.splitlines()]
    for trial_id in ok + bad:
        assert sum(line.startswith(f"start   {trial_id} ") for line in lines) == 1, log
    assert any(line.startswith(f"ok      {ok[0]}  clean ") for line in lines), log
    assert f"failed  {bad[0]}: TrialFailed: diverged: non-finite loss at epoch 1" in lines, log
    summary = "cli: done 1, running 0, failed 1, pending 0 of 2;"
    assert any(line.startswith(summary) for line in lines), log
    last = log.strip().splitlines()[-1]  # after the table: the failures of this run, named
    assert last.startswith(f"1 trial(s) of this run failed: {bad[0]} (TrialFailed: diverged")
    # each trial trained once: one Tune run, one row each
    ray_dir = out / "_state" / "cli" / "_ray"  # the sweep's state folder
    assert len(list(ray_dir.glob("run-*"))) == 1 and frame["trial_id"].is_unique

    # nothing left to run: exit 0 (the failed row stays failed without --retry-failed)
    again = subprocess.run(_run(space, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 trial(s) with a failed row were not rerun; --retry-failed reruns them" in (
        again.stderr.strip().splitlines()
    )


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="cleans up its processes via /proc")
def test_ctrl_c_exits_130_and_says_how_many_trials_are_left(tmp_path: Path) -> None:
    space, out, log = tmp_path / "cli.yaml", tmp_path / "r", tmp_path / "run.log"
    space.write_text(SPACE.replace("1.0e+20", "0.1"))
    cmd = _run(space, out, "--max-concurrent", "1", "--set", "train.epochs=1000")
    with marked_env() as env:
        # a session of its own, like a terminal's foreground job: Ctrl+C reaches the group
        driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                                  start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 600
        while " start " not in log.read_text():
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGINT)
        assert driver.wait(timeout=600) == 130, log.read_text()[-3000:]
    rows = results.read(str(out / "cli"))
    assert set(rows["status"]) <= {"ok"}  # an interrupted trial is no failed row
    tail = log.read_text().strip().splitlines()[-1]
    assert tail.startswith(f"interrupted: {2 - len(rows)} trial(s) left unfinished"), tail


def test_an_address_where_no_cluster_answers_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """ray.init would retry for minutes; a closed port is one line, at once."""
    space = tmp_path / "cli.yaml"
    space.write_text(SPACE)
    done = subprocess.run(_run(space, tmp_path / "r", "--address", "127.0.0.1:1"),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: --address 127.0.0.1:1: no Ray cluster answers there (")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="cleans up its processes via /proc")
def test_sigterm_exits_143_releases_the_lease_and_a_rerun_finishes(tmp_path: Path) -> None:
    """SLURM's scancel, time limit and preemption send SIGTERM: it used to kill the driver
    with Ray's crash dump, exit 1, no "interrupted" line and the lease left behind."""
    space, out, log = tmp_path / "cli.yaml", tmp_path / "r", tmp_path / "run.log"
    ray_dir = out / "_state" / "cli" / "_ray"  # the sweep's state folder
    space.write_text(SPACE.replace("1.0e+20", "0.1"))
    cmd = _run(space, out, "--max-concurrent", "1", "--set", "train.epochs=12")
    with marked_env() as env:
        driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                                  start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 600
        while not checkpoint_folders(ray_dir, "run-*/*/checkpoint_*"):  # an epoch's
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.1)
        # a run under way: the table's folder holds nothing a reader could trip on
        table = out / "cli"  # (made by the first row's write)
        found = [p.name for p in table.iterdir()] if table.exists() else []
        assert found in ([], ["rows.parquet"]), found
        driver.send_signal(signal.SIGTERM)  # the driver alone: its trials stop through Tune
        assert driver.wait(timeout=600) == 143, log.read_text()[-3000:]
        text = log.read_text()
        left = 2 - len(results.read(str(out / "cli")))
        assert text.strip().splitlines()[-1].startswith(
            f"interrupted (SIGTERM): {left} trial(s) left unfinished; run the same command again"
        ), text[-3000:]
        assert "SIGTERM received" not in text and "Traceback" not in text, text[-3000:]
        assert results.Lease(str(out / "cli")).current()[1] is None  # released
        assert checkpoint_folders(ray_dir, "run-*/*/checkpoint_*")  # kept to resume
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"cli: {left} trial(s) to run" in again.stderr, again.stderr[-3000:]
    rows = results.read(str(out / "cli"))
    assert sorted(rows["status"]) == ["ok", "ok"] and rows["trial_id"].is_unique
