"""Result files: one atomic Parquet row per trial in the sweep's log, compacted into one table,
read back as one DataFrame per sweep."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pytest

from sweeper import results
from sweeper.schema import COLUMNS, empty_row


def row(trial_id: str, status: str = "ok", sweep: str = "s", acc: float = 0.5) -> dict[str, Any]:
    r = empty_row()
    now = datetime.now(timezone.utc)
    r.update(sweep=sweep, trial_id=trial_id, status=status, seed=0, clean_acc=acc,
             error=None if status == "ok" else "boom", started_at=now, ended_at=now,
             depth1=1, width1=0.5)  # fmt: skip
    return r


def test_write_read_one_row_per_trial_and_readers_skip_private_names(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    for i in range(3):
        results.write_row(str(sweep), row(f"t{i}"))
    # someone's private folders and half-written temp files must not show up as rows
    for private in ("_scratch/run-1/t0", "_checkpoints/t0"):
        (sweep / private).mkdir(parents=True)
        results.write_row(str(sweep / private), row("t0"))
    (sweep / ".t9.abcd.tmp").write_bytes(b"PAR1 half a file")
    assert sorted(p.name for p in sweep.iterdir() if p.name.startswith(".")) == [".t9.abcd.tmp"]
    assert len(results.read(str(sweep))) == 3  # the log read before any compaction
    assert results.compact(str(sweep)) == 3  # as a run does while trials end and at its end
    assert not list((tmp_path / "_state" / "s" / "_rows").iterdir())

    frame = pd.read_parquet(sweep)  # the researcher's one call
    assert sorted(frame["trial_id"]) == ["t0", "t1", "t2"]
    ours = results.read(str(sweep))
    assert list(ours.columns) == COLUMNS and len(ours) == 3
    assert str(ours["started_at"].dtype).startswith("datetime64")
    assert len(results.read(str(tmp_path))) == 3  # a results root reads every sweep


def test_rewrite_replaces_and_done_ids_filters_by_status(tmp_path: Path) -> None:
    sweep = str(tmp_path / "s")
    results.write_row(sweep, row("a", "failed"))
    results.write_row(sweep, row("b"))
    assert results.done_ids(sweep) == {"b"}
    assert results.done_ids(sweep, statuses=("ok", "failed")) == {"a", "b"}
    results.write_row(sweep, row("a", "ok", acc=0.7))  # --retry-failed replaces the row
    assert results.done_ids(sweep) == {"a", "b"}
    assert results.read_row(sweep, "a")["clean_acc"] == 0.7
    assert len(list(Path(tmp_path, "_state", "s", "_rows").iterdir())) == 2  # no temp files
    results.compact(sweep)
    assert results.read_row(sweep, "a")["clean_acc"] == 0.7  # now from the table
    results.write_row(sweep, row("a", "failed", acc=0.1))  # a log row replaces the table's
    assert results.done_ids(sweep) == {"b"} and results.read_row(sweep, "a")["clean_acc"] == 0.1
    results.compact(sweep)
    assert len(pd.read_parquet(sweep)) == 2 and results.done_ids(sweep) == {"b"}
    assert results.done_ids(str(tmp_path / "missing")) == set()
    assert results.read(str(tmp_path / "missing")).empty


def test_uri_and_non_local_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = (tmp_path / "r").as_uri()  # file:///... goes through FileSystem.from_uri
    results.write_row(results.sweep_dir(uri, "s"), row("u"))
    assert results.done_ids(results.sweep_dir(uri, "s")) == {"u"}

    # a filesystem that is not LocalFileSystem takes the open_output_stream + move path
    (tmp_path / "sub").mkdir()
    sub = pafs.SubTreeFileSystem(str(tmp_path / "sub"), pafs.LocalFileSystem())
    monkeypatch.setattr(results.rows, "location", lambda uri: (sub, uri.removeprefix("mem://")))
    results.write_row("mem://s", row("v"))
    log = tmp_path / "sub" / "_state" / "s" / "_rows"
    assert sorted(p.name for p in log.iterdir()) == ["v.parquet"]
    assert results.done_ids("mem://s") == {"v"}
    monkeypatch.setattr(results.compaction, "location", results.rows.location)
    assert results.compact("mem://s") == 1
    assert sorted(p.name for p in (tmp_path / "sub" / "s").iterdir()) == ["rows.parquet"]
    assert results.done_ids("mem://s") == {"v"} and results.read_row("mem://s", "v") is not None


def test_a_row_off_schema_is_refused(tmp_path: Path) -> None:
    bad = row("x")
    bad["extra"] = 1
    with pytest.raises(KeyError):
        results.write_row(str(tmp_path), bad)


def test_status_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from sweeper.cli import main

    results.write_row(str(tmp_path / "s"), row("a", acc=0.4))
    results.write_row(str(tmp_path / "s"), row("b", acc=0.6))
    results.write_row(str(tmp_path / "s"), row("c", "failed"))
    assert main(["status", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["s"]
    assert report["counts"] == {"ok": 2, "failed": 1}
    assert [r["trial_id"] for r in report["best"]] == ["b", "a"]
    assert main(["status", str(tmp_path / "s")]) == 0
    assert "s: 3 trials" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "nothing")]) == 2


def test_damaged_or_foreign_files_are_one_line_errors_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from sweeper.cli import main
    from sweeper.errors import SweeperError

    sweep = tmp_path / "s"
    results.write_row(str(sweep), row("a"))
    (sweep / "b.parquet").write_bytes(b"not parquet")  # e.g. a copy cut short
    with pytest.raises(SweeperError, match="b.parquet"):
        results.status_by_id(str(sweep))
    with pytest.raises(SweeperError, match="b.parquet"):
        results.read_row(str(sweep), "b")
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "b.parquet" in err, err
    (sweep / "b.parquet").unlink()
    pd.DataFrame({"x": [1, 2]}).to_parquet(sweep / "summary.parquet")  # not a result row
    for command in ("status", "report"):
        assert main([command, str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "summary.parquet" in err and "\n" not in err, err


def test_rows_of_an_older_schema_read_with_missing_columns_null(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweeper.schema import SCHEMA

    sweep = tmp_path / "s"
    sweep.mkdir()
    old = pa.Table.from_pylist([row("old")], schema=SCHEMA).drop(["aa_n", "history"])
    pq.write_table(old, sweep / "old.parquet")
    results.write_row(str(sweep), row("new"))
    assert results.done_ids(str(sweep)) == {"old", "new"}  # still skipped by a rerun
    frame = results.read(str(sweep))
    assert list(frame.columns) == COLUMNS and frame["aa_n"].isna().all()
    assert results.read_row(str(sweep), "old")["history"] is None


def test_status_best_rows_stay_within_their_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from sweeper.cli import main

    # the same config in two studies has the same trial_id (the sweep name is not hashed)
    results.write_row(str(tmp_path / "depth"), row("base", sweep="depth", acc=0.4))
    results.write_row(str(tmp_path / "width"), row("base", sweep="width", acc=0.6))
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("│ base") == 2, out  # one best row per sweep, not two


def test_a_tables_state_folder_lies_beside_it_on_the_same_filesystem(tmp_path: Path) -> None:
    assert results.state_dir("s3://bucket/x/smoke") == "s3://bucket/x/_state/smoke"
    assert results.state_dir("results/smoke/") == "results/_state/smoke"
    assert results.state_dir(str(tmp_path / "s")) == str(tmp_path / "_state" / "s")
    assert results.eval_table("s3://b/smoke") == "s3://b/_state/smoke/_eval"
    assert results.state_dir(results.eval_table("s3://b/smoke")) == "s3://b/_state/smoke/_state/_eval"
