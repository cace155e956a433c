"""`python -m sweeper.analysis.demo` without --synthetic: it finds the packaged smoke sweep
from any folder (it once looked under sweeper/search_spaces/ and always failed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.analysis import demo, synthetic


def test_the_smoke_sweep_it_runs_exists_and_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.SMOKE.is_file()
    monkeypatch.chdir(tmp_path)  # not the repository root
    demo.run_smoke(tmp_path / "results", ["--dry-run"])  # the real command, nothing trained
    assert "smoke" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_the_demo_reports_what_the_smoke_run_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[Path] = []

    def trained_in_no_time(results: Path, extra: list[str]) -> None:
        ran.append(results)
        synthetic.fake_results(results, studies=("normalization",))  # small: a quick report

    monkeypatch.setattr(demo, "run_smoke", trained_in_no_time)
    assert demo.main(["--out", str(tmp_path), "--bootstrap", "0", "--", "--set", "x=1"]) == 0
    assert ran == [tmp_path.resolve() / "results"]
    assert (tmp_path / "report" / "report.md").is_file()
    assert "report:" in capsys.readouterr().out
