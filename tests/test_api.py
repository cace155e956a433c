"""The Python API's promises that need no sweep: `import sweeper` loads neither torch nor
Ray, and run / read / load_model are there, documented, on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sweeper
from sweeper.analysis.synthetic import study_rows, write_results

ROOT = Path(__file__).resolve().parents[1]


def test_import_sweeper_is_light() -> None:
    code = ("import sys, sweeper; heavy = {'torch', 'ray', 'pandas'} & set(sys.modules); "
            "assert not heavy, heavy; assert callable(sweeper.run)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_api_is_documented_and_read_gives_the_rows(tmp_path: Path) -> None:
    for name in ("run", "read", "load_model"):
        assert getattr(sweeper, name).__doc__, name
        assert name in dir(sweeper)
    frame = study_rows("se", seeds=(0,))
    write_results(frame, tmp_path)
    rows = sweeper.read(tmp_path / "se")
    assert sorted(rows["trial_id"]) == sorted(frame["trial_id"]) and "cw_acc" in rows
