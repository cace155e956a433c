"""A trial that died without writing its row (worker lost, retries spent) gets its failed
row from the same start as every row run_trial writes: same columns filled, same cap."""

from __future__ import annotations

from sweeper import trial
from sweeper.config import TrialConfig
from sweeper.schema import check_row


def test_a_failed_row_starts_as_run_trials_rows_do() -> None:
    config = TrialConfig(sweep="s", seed=2)
    row = trial.failed_row(config, "RayTaskError: worker died\n  Traceback ...")
    check_row(row)
    started = trial.started_row()
    assert {k for k, v in started.items() if v is not None} - {"started_at"} <= {
        k for k, v in row.items() if v is not None
    }
    assert row["status"] == "failed" and row["error"] == "RayTaskError: worker died"
    assert row["trial_id"] == config.trial_id and row["sweep"] == "s" and row["seed"] == 2
    assert row["ended_at"] == row["started_at"]


def test_a_failed_rows_error_is_capped_as_one_lines() -> None:
    long = "x" * (trial.MAX_ERROR_CHARS + 50)
    row = trial.failed_row(TrialConfig(), long)
    assert len(row["error"]) == trial.MAX_ERROR_CHARS and row["error"].endswith("...")
    assert trial.failed_row(TrialConfig(), "")["error"] == ""
