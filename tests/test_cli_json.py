"""`sweeper --version`, and `--json` on the commands that print a result: init, report,
calibrate, version (run, status, export ... have their own tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sweeper
from sweeper.analysis.synthetic import study_rows, write_results
from sweeper.cli import main


def test_version_flag(capsys: pytest.CaptureFixture) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sweeper {sweeper.__version__}"
    assert main(["version", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sweeper"] == sweeper.__version__


def test_init_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["init", str(tmp_path / "mine"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "depth.yaml" in out["files"] and (tmp_path / "mine" / "depth.yaml").is_file()


def test_report_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = write_results(study_rows("activation", seeds=(0,)), tmp_path / "rows")
    assert main(["report", str(rows), "--out", str(tmp_path / "rep"), "--bootstrap", "20",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert Path(out["report"]).is_file() and out["figures"]
    assert all(Path(f).is_file() for f in out["figures"])


def test_calibrate_json_keeps_stdout_for_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "cal.json"
    args = ["calibrate", "--quick", "--device", "cpu", "--steps", "1", "--models",
            "tiny-w1", "--out", str(path), "--json"]  # fmt: skip
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["file"] == str(path) and out["device"] == json.loads(path.read_text())["device"]
