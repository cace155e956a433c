"""The sweep's table: rows land in a log and are compacted into one Parquet table that every
reader gets whole; a SIGKILL at any point of a write or a compaction loses and duplicates
nothing; links never take the store outside its folder; a trial has one row."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as pads
import pytest

from sweeper import results
from sweeper.cli import main
from sweeper.config import TrialConfig
from sweeper.errors import SweeperError
from sweeper.schema import empty_row
from sweeper.sweep.plan import varying_columns
from sweeper.trial import config_columns


def _row(trial_id: str, config: dict[str, Any] | None = None, sweep: str = "s",
         status: str = "ok") -> dict[str, Any]:  # fmt: skip
    row = empty_row()
    cfg = TrialConfig.model_validate({**(config or {}), "sweep": sweep})
    now = datetime.now(timezone.utc)
    row.update(config_columns(cfg), trial_id=trial_id, status=status, started_at=now,
               ended_at=now, error=None if status == "ok" else "boom")  # fmt: skip
    return row


def _ids(frame: pd.DataFrame) -> list[str]:
    return sorted(frame["trial_id"])


# ---- every reader, no options ----------------------------------------------------------


def _readers(sweep: Path) -> dict[str, pd.DataFrame]:
    import duckdb
    import polars as pl

    return {
        "pandas": pd.read_parquet(sweep),
        "pyarrow": pads.dataset(sweep).to_table().to_pandas(),
        "polars": pl.read_parquet(sweep).to_pandas(),  # the folder: it reads every file in it
        "polars glob": pl.read_parquet(f"{sweep}/*.parquet").to_pandas(),
        "duckdb": duckdb.sql(f"SELECT * FROM read_parquet('{sweep}/*.parquet')").df(),
    }


def _state(sweep: Path) -> Path:
    return sweep.parent / "_state" / sweep.name


def _only_the_table(folder: Path) -> None:
    """A table's folder holds its Parquet file and nothing else (polars reads every file)."""
    found = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    assert found == ["rows.parquet"], found


def test_a_sweep_extended_by_a_new_axis_reads_whole_in_pandas_pyarrow_polars_and_duckdb(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "s"
    first = [{"arch": {"activation": a}} for a in ("relu", "silu")]
    later = [{"arch": {"activation": "relu"}, "train": {"beta": b}} for b in (1.0, 6.0, 9.0)]
    for batch, prefix in ((first, "a"), (later, "b")):  # two runs, each its varying keys
        configs = [TrialConfig.model_validate({**c, "sweep": "s"}) for c in batch]
        keys = varying_columns(_GridSpace(), configs)  # as the run's plan names them
        for i, cfg in enumerate(batch):
            results.write_row(str(sweep), _row(f"{prefix}{i}", cfg), varying=keys)
        results.compact(str(sweep))
    from sweeper.results.summary import write_summary

    write_summary(str(sweep), {})  # a sweep's other files lie in its state folder
    (_state(sweep) / "_ray" / "run-1").mkdir(parents=True)
    (_state(sweep) / "_ray" / "run-1" / "experiment_state.json").write_text("{}")
    for i in range(3):  # the evaluation table, by the same rule
        results.write_eval_row(str(sweep), {**_eval_row(f"a{i}"), "eval_id": f"e{i % 2}"})
    results.compact(results.eval_table(str(sweep)), results.EVALS)
    results.write_eval_row(str(sweep), _eval_row("b0"))  # in its log, not in its table yet
    _only_the_table(sweep)
    evals = Path(results.eval_table(str(sweep)))
    _only_the_table(evals)
    for name, frame in _readers(evals).items():
        assert sorted(zip(frame["trial_id"], frame["eval_id"])) == [
            ("a0", "e0"), ("a1", "e1"), ("a2", "e0")], name  # fmt: skip
    assert len(results.read_evals(str(sweep))) == 4
    for name, frame in _readers(sweep).items():
        assert _ids(frame) == ["a0", "a1", "b0", "b1", "b2"], name
        beta = dict(zip(frame["trial_id"], frame["train.beta"]))
        assert beta["b2"] == 9.0 and beta["a0"] == beta["a1"], name  # the first run's default
        act = dict(zip(frame["trial_id"], frame["activation"]))
        assert act["a1"] == "silu" and act["b0"] == "relu", name
    assert _ids(results.read(str(sweep))) == ["a0", "a1", "b0", "b1", "b2"]


class _GridSpace:
    """A grid space, as far as varying_columns asks."""

    is_search = False


# ---- exactly once under SIGKILL ----------------------------------------------------------

KILLER = textwrap.dedent("""
    import os, signal, sys
    from sweeper import results
    from sweeper.results import compaction, rows

    sweep, point, action = sys.argv[1:4]
    point, _, nth = point.partition("#")  # name#3: at its third time
    seen = []

    def crash(name):
        seen.extend([name] if name == point else [])
        if len(seen) == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)

    rows.crash_point = compaction.crash_point = crash
    if action == "write":
        from tests_row import row
        results.write_row(sweep, row("late"))
    elif action == "migrate":
        from sweeper.results import migration

        migration.crash_point = crash
        results.migrate(sweep)
    else:
        results.compact(sweep)
    print("not killed")
""")

ROW_MODULE = textwrap.dedent("""
    from datetime import datetime, timezone
    from sweeper.schema import empty_row

    def row(trial_id):
        r = empty_row()
        now = datetime.now(timezone.utc)
        r.update(sweep="s", trial_id=trial_id, status="ok", seed=0, started_at=now, ended_at=now)
        return r
""")


def _kill_at(tmp_path: Path, sweep: Path, point: str, action: str) -> None:
    (tmp_path / "tests_row.py").write_text(ROW_MODULE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", KILLER, str(sweep), point, action], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, (point, done.stdout, done.stderr[-2000:])


def _seeded(tmp_path: Path) -> Path:
    """A sweep with three compacted rows, and in the log: three new rows and a rerun of t1."""
    sweep = tmp_path / "s"
    for i in range(3):
        results.write_row(str(sweep), _row(f"t{i}", {"seed": i}, status="failed"))
    results.compact(str(sweep))
    for i in range(3, 6):
        results.write_row(str(sweep), _row(f"t{i}", {"seed": i}))
    results.write_row(str(sweep), _row("t1", {"seed": 1}))  # --retry-failed: now ok
    return sweep


ALL = [f"t{i}" for i in range(6)]


@pytest.mark.parametrize(
    "point", ["compact-read", "compact-written", "compact-renamed", "compact-deleting"]
)
def test_a_compaction_killed_at_any_point_loses_and_duplicates_nothing(
    tmp_path: Path, point: str
) -> None:
    sweep = _seeded(tmp_path)
    _kill_at(tmp_path, sweep, point, "compact")
    _only_the_table(sweep)  # the new table was written in the state folder, renamed in
    visible = pd.read_parquet(sweep)  # plain readers: the old table or the new one, whole
    assert visible["trial_id"].is_unique
    assert _ids(visible) in (["t0", "t1", "t2"], ALL), _ids(visible)
    ours = results.read(str(sweep))  # table and log: every trial once, the rerun's row
    assert _ids(ours) == ALL
    assert ours.set_index("trial_id").loc["t1", "status"] == "ok"
    assert results.done_ids(str(sweep)) == set(ALL) - {"t0", "t2"}

    results.compact(str(sweep))  # the next run (or `sweeper compact`) heals
    for name, frame in _readers(sweep).items():
        assert _ids(frame) == ALL, name
    assert pd.read_parquet(sweep).set_index("trial_id").loc["t1", "status"] == "ok"
    assert not list((_state(sweep) / "_rows").glob("*.parquet"))


def test_a_row_write_killed_before_its_rename_leaves_no_row(tmp_path: Path) -> None:
    sweep = _seeded(tmp_path)
    _kill_at(tmp_path, sweep, "row-written", "write")
    assert _ids(results.read(str(sweep))) == ALL  # the killed trial has no row: it reruns
    assert list((_state(sweep) / "_rows").glob(".*.tmp"))  # its half-written file is hidden
    results.compact(str(sweep))
    assert _ids(pd.read_parquet(sweep)) == ALL


# ---- older layouts and `sweeper compact` ---------------------------------------------------


def _old_layout(sweep: Path, n: int) -> None:
    """One file per row directly in the sweep folder, as earlier versions wrote them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweeper.schema import SCHEMA

    sweep.mkdir(parents=True)
    for i in range(n):
        pq.write_table(pa.Table.from_pylist([_row(f"o{i}", {"seed": i})], schema=SCHEMA),
                       sweep / f"o{i}.parquet")  # fmt: skip


def test_sweeper_compact_migrates_an_older_sweep_and_survives_a_kill_midway(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep = tmp_path / "s"
    _old_layout(sweep, 4)
    results.write_eval_row(str(sweep), _eval_row("o0"))
    _kill_at(tmp_path, sweep, "migrate-moved", "compact")  # one file moved into the log
    assert _ids(results.read(str(sweep))) == ["o0", "o1", "o2", "o3"]
    assert main(["compact", str(sweep)]) == 0
    assert "4 row file(s) folded" in capsys.readouterr().out
    assert sorted(p.name for p in sweep.glob("*.parquet")) == ["rows.parquet"]
    assert _ids(pd.read_parquet(sweep)) == ["o0", "o1", "o2", "o3"]
    evals = results.eval_table(str(sweep))
    assert len(pd.read_parquet(evals)) == 1 and len(results.read_evals(str(sweep))) == 1
    assert main(["compact", str(tmp_path / "nothing")]) == 2


def _eval_row(trial_id: str) -> dict[str, Any]:
    from sweeper.schema import EVAL_COLUMNS

    row: dict[str, Any] = dict.fromkeys(EVAL_COLUMNS)
    now = datetime.now(timezone.utc)
    row.update(sweep="s", trial_id=trial_id, eval_id="e1", status="ok", started_at=now,
               ended_at=now, evaluation=json.dumps({}))  # fmt: skip
    return row


# ---- one row per trial -------------------------------------------------------------------


def test_a_copied_row_is_refused_in_one_line_naming_both_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import pyarrow.parquet as pq

    sweep = tmp_path / "s"
    for i in range(2):
        results.write_row(str(sweep), _row(f"t{i}", {"seed": i}))
    results.compact(str(sweep))
    # the repro: a copy of a trial's row under another name, its sweep column changed
    copy = pq.read_table(sweep / "rows.parquet").slice(0, 1).to_pandas()
    trial = copy["trial_id"][0]
    copy["sweep"] = "elsewhere"
    copy.to_parquet(sweep / f"{trial}-copy.parquet")
    for command in ("status", "report"):
        assert main([command, str(sweep)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert f"{trial} of sweep s has 2 row files" in err
        assert "rows.parquet" in err and f"{trial}-copy.parquet" in err
    with pytest.raises(SweeperError, match="2 row files"):
        results.compact(str(sweep))
    # a row of another sweep alone (no second row of its trial) is refused too
    copy["trial_id"] = "stranger"
    (sweep / f"{trial}-copy.parquet").unlink()
    copy.to_parquet(sweep / "stranger.parquet")
    with pytest.raises(SweeperError, match="stranger.parquet: trial stranger is a row of sweep "
                                           "elsewhere, not of s"):  # fmt: skip
        results.status_by_id(str(sweep))
    # and a copy beside a row still in the log
    (sweep / "stranger.parquet").unlink()
    results.write_row(str(sweep), _row("t9"))
    pq.write_table(pq.read_table(_state(sweep) / "_rows" / "t9.parquet"),
                   sweep / "t9 (copy).parquet")  # fmt: skip
    with pytest.raises(SweeperError, match=r"t9 of sweep s has 2 row files \(t9 \(copy\)"):
        results.read(str(sweep))


# ---- links never followed ----------------------------------------------------------------


def test_links_out_of_the_sweep_are_neither_read_nor_cleaned_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sweeper.sweep.checkpoints import drop_finished, drop_other_runs, previous_checkpoint

    sweep = tmp_path / "r" / "s"
    for i in range(4):
        results.write_row(str(sweep), _row(f"t{i}", {"seed": i}))
    results.compact(str(sweep))
    elsewhere = tmp_path / "elsewhere"
    for i in range(4):  # another sweep's rows: a link to them must not add 4 trials
        results.write_row(str(elsewhere / "other"), _row(f"x{i}", {"seed": i}, sweep="other"))
    results.compact(str(elsewhere / "other"))
    precious = elsewhere / "run-evil" / "t0" / "checkpoint_000001"
    precious.mkdir(parents=True)
    (precious / "precious.txt").write_text("x")
    state = _state(sweep)
    (state / "_ray").mkdir()
    (state / "_ray" / "run-evil").symlink_to(elsewhere / "run-evil")
    (sweep / "more").symlink_to(elsewhere / "other")
    (state / "_rows").mkdir(exist_ok=True)
    (state / "_rows" / "x0.parquet").symlink_to(elsewhere / "other" / "rows.parquet")
    (state / "_ray" / "train").mkdir()
    (state / "_ray" / "train" / "t1").symlink_to(elsewhere / "run-evil" / "t0")

    with caplog.at_level(logging.WARNING):
        assert _ids(results.read(str(sweep))) == ["t0", "t1", "t2", "t3"]
        assert _ids(results.read(str(tmp_path / "r"))) == ["t0", "t1", "t2", "t3"]
        assert results.read_row(str(sweep), "x0") is None
        results.compact(str(sweep))
        drop_finished(str(sweep), {"t0", "t1"})
        drop_other_runs(str(sweep), "t0", "run-now")
        assert previous_checkpoint(str(sweep), "t0", str(tmp_path / "into")) is None
        from sweeper.sweep.workers import drop_train_checkpoints

        drop_train_checkpoints(str(sweep), "t1")
    assert (precious / "precious.txt").read_text() == "x"  # nothing deleted outside
    assert len(pd.read_parquet(elsewhere / "other")) == 4
    assert main(["status", str(sweep), "--json"]) == 0
    assert "run-evil is a symbolic link" in caplog.text and "more is a symbolic link" in caplog.text
    # each link is named once, however often it was met
    assert caplog.text.count("more is a symbolic link") == 1


# ---- the previous release's layout: state inside the table's folder ----------------------


def _previous_release(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A sweep as the previous release left it: its log, weights, evaluation table (and its
    log), Ray files, adaptive summary and a stale lease inside RESULTS/<sweep>/."""
    import shutil

    from helpers import dead_pid

    from sweeper.results.summary import write_summary

    sweep = tmp_path / "smoke"
    weights = tmp_path / "w" / "final.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"not really a state dict")
    for i in range(4):
        row = _row(f"t{i}", {"seed": i}, sweep="smoke")
        row["weights"] = results.store_weights(str(sweep), f"t{i}", weights)
        results.write_row(str(sweep), row)
        if i == 2:
            results.compact(str(sweep))  # t0-t2 in the table, t3 in the log
    results.write_eval_row(str(sweep), _eval_row("t0"))
    results.compact(results.eval_table(str(sweep)), results.EVALS)
    results.write_eval_row(str(sweep), {**_eval_row("t1"), "eval_id": "e2"})
    write_summary(str(sweep), {"best": 1})
    (_state(sweep) / "_ray" / "run-1" / "t3").mkdir(parents=True)
    (_state(sweep) / "_ray" / "run-1" / "t3" / "experiment_state.json").write_text("{}")
    (_state(sweep) / "_lease").mkdir()
    (_state(sweep) / "_lease" / "1.json").write_text(json.dumps(
        {"host": "h", "pid": dead_pid(), "started_at": "x", "renewed_at": 0.0, "ttl": 60.0,
         "token": "t"}))  # fmt: skip
    evals = _state(sweep) / "_eval"
    for item in (_state(evals)).iterdir():  # the evaluation table's log, inside its folder
        shutil.move(item, evals / item.name)
    shutil.rmtree(_state(evals).parent)
    for item in _state(sweep).iterdir():
        shutil.move(item, sweep / item.name)
    shutil.rmtree(_state(sweep).parent)
    files = {str(p.relative_to(sweep)): p.read_bytes() for p in sweep.rglob("*")
             if p.is_file() and "_lease" not in p.parts and p.parent != sweep}  # fmt: skip
    return sweep, {**files, "_adaptive.json": (sweep / "_adaptive.json").read_bytes()}


@pytest.mark.parametrize("nth", [1, 4])
def test_the_previous_release_layout_is_refused_until_sweeper_compact_moves_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, nth: int
) -> None:
    sweep, files = _previous_release(tmp_path)
    assert {"_rows/t3.parquet", "_weights/t0/final.pt", "_eval/rows.parquet",
            "_eval/_rows/t1.e2.parquet", "_adaptive.json"} <= set(files)  # fmt: skip
    for command in (["status", str(sweep)], ["run", "smoke", "--results", str(tmp_path)],
                    ["report", str(sweep)]):  # fmt: skip
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert f"run `sweeper compact {sweep}` once" in err, err
    assert (sweep / "_rows" / "t3.parquet").exists()  # nothing moved by them

    _kill_at(tmp_path, sweep, f"state-moved#{nth}", "migrate")  # killed after the nth rename
    assert main(["status", str(sweep)]) == 2  # half moved: still refused
    assert main(["compact", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "1 row file(s) folded" in out and "1 into" in out, out
    _only_the_table(sweep)
    _only_the_table(Path(results.eval_table(str(sweep))))
    state = _state(sweep)
    moved = {str(p.relative_to(state)): p.read_bytes() for p in state.rglob("*")
             if p.is_file() and "_lease" not in p.parts and p.parent != state}  # fmt: skip
    moved["_adaptive.json"] = (state / "_adaptive.json").read_bytes()
    folded = ("_rows/", "_eval/")  # logs folded into their tables: checked by reading them
    assert {k: v for k, v in moved.items() if not k.startswith(folded)} == {
        k: v for k, v in files.items() if not k.startswith(folded)}  # fmt: skip
    frame = results.read(str(sweep))
    assert _ids(frame) == ["t0", "t1", "t2", "t3"]
    for name, plain in _readers(sweep).items():
        assert _ids(plain) == ["t0", "t1", "t2", "t3"], name
    for weights in frame["weights"]:  # each row's `weights` names its file still
        assert Path(results.weights_uri(str(sweep), weights)).read_bytes() == b"not really a " \
            b"state dict"
    assert sorted(results.read_evals(str(sweep))["eval_id"]) == ["e1", "e2"]
    from sweeper.results.summary import read_summary

    assert read_summary(str(sweep)) == {"best": 1}
    assert main(["status", str(sweep)]) == 0


def test_sweeper_compact_leaves_a_sweep_an_older_driver_still_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep, _ = _previous_release(tmp_path)
    (sweep / "_lease" / "2.json").write_text(json.dumps(
        {"host": "elsewhere", "pid": 1, "started_at": "x", "renewed_at": time.time(),
         "ttl": 60.0, "token": "t"}))  # fmt: skip
    assert main(["compact", str(sweep)]) == 2
    assert "a driver of an older sweeper runs this sweep" in capsys.readouterr().err
    assert (sweep / "_rows" / "t3.parquet").exists() and (sweep / "_weights").is_dir()
