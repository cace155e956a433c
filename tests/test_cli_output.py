"""What the CLI prints says what it is: result tables keep whole trial ids, failure lines stay
one line in a piped log, help texts name the choices."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console

from sweeper.cli import sweep_cmds

LONG_ID = "1759a3c2e4b6f801"


def _frame() -> pd.DataFrame:
    base = {"block": "basic", "activation": "relu", "depth1": 3, "depth2": 3, "depth3": 3,
            "width1": 1.0, "width2": 1.0, "width3": 1.0}  # fmt: skip
    return pd.DataFrame([
        {**base, "trial_id": LONG_ID, "status": "ok", "error": None, "clean_acc": 0.9,
         "pgd_acc": 0.4, "cw_acc": 0.35, "aa_acc": 0.3},
        {**base, "trial_id": "2" * 16, "status": "failed", "clean_acc": None, "pgd_acc": None,
         "cw_acc": None, "aa_acc": None,
         "error": "DataError: " + "the CIFAR-10 folder data/cifar-10-batches-py is missing " * 5},
    ])  # fmt: skip


def test_result_tables_keep_whole_trial_ids_at_80_columns(monkeypatch, capsys) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sweep_cmds, "_console",
                        lambda stderr=False: Console(file=out, width=80))  # fmt: skip
    sweep_cmds._print_rows(_frame(), "best by aa_acc")
    assert LONG_ID in out.getvalue()


def test_failure_lines_in_a_piped_log_are_never_wrapped(capsys) -> None:
    frame = _frame()
    sweep_cmds._print_rows(frame, "rows")
    err = capsys.readouterr().err
    line = f"failed {'2' * 16}: {frame['error'][1]}"
    assert len(line) > 200
    assert line in err.splitlines()


def test_status_and_run_rank_by_the_same_metric() -> None:
    from sweeper.schema import ranking_metric

    assert ranking_metric({"cw_acc", "aa_acc", "pgd_acc"}) == "aa_acc"
    assert ranking_metric({"cw_acc", "pgd_acc"}) == "cw_acc"
    assert ranking_metric(set()) == "clean_acc"


@pytest.fixture
def helptext(capsys, monkeypatch):
    from sweeper.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # one line per option: phrases stay whole

    def text(*command: str) -> str:
        main([*command, "--help"])
        out = capsys.readouterr().out.replace("\u2502", " ")  # rich's box and wrapping undone
        return " ".join(out.split())

    return text


def test_run_help_says_a_study_name_works_and_names_the_choices(helptext) -> None:
    text = helptext("run")
    assert "packaged study" in text
    assert "grid (" in text and "adaptive (" in text  # --order's choices
    cpus = text[text.index("--cpus-per-trial"):text.index("--gpus-per-trial")]
    assert "CPUs Ray reserves for each trial" in cpus


def test_fit_scaling_help_says_it_needs_a_compound_sweep(helptext) -> None:
    assert "Needs a compound-scaling sweep" in helptext("fit-scaling")


def test_a_typo_in_set_is_blamed_on_set_not_the_file(capsys) -> None:
    from sweeper.cli import main

    assert main(["run", "smoke", "--dry-run", "--set", "train.epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --set: train.epoch: unknown key"), err
    assert "smoke.yaml" not in err
