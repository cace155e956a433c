"""sweeper.trial and `sweeper trial`: rows match the schema, resume, failures, digits end to end.

Tiny networks on tiny synthetic data (8x8 images) on one CPU thread, except the digits test.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from sweeper.cli import main
from sweeper.config import TrialConfig
from sweeper.errors import ConfigError
from sweeper.schema import COLUMNS
from sweeper.space.overrides import apply_overrides
from sweeper.trial import per_stage, run_trial

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "trial_digits.yaml"
METRICS = ["clean_acc", "pgd_acc", "cw_acc", "aa_acc", "clean_n", "pgd_n", "cw_n", "aa_n"]


def tiny(**sections: dict[str, Any]) -> dict[str, Any]:
    """A trial that runs in about a second: 8x8 synthetic images, a WRN with 1 block a stage."""
    cfg: dict[str, Any] = {
        "sweep": "tests",
        "seed": 3,
        "arch": {"depths": 1, "widths": 0.5, "stem_channels": 8, "kernel_size": [3, 3, 5]},
        "data": {"dataset": "synthetic", "image_size": 8, "synthetic_train": 300,
                 "synthetic_test": 60, "holdout_size": 50, "augment": True},
        "train": {"method": "trades", "epochs": 3, "batch_size": 50, "lr": 0.05, "steps": 2,
                  "step_size": 4.0},
        "eval": {"pgd_steps": 3, "cw_steps": 3, "aa_size": 8, "aa_version": "custom",
                 "aa_attacks": ["apgd-ce"], "history_pgd_steps": 2, "batch_size": 100},
    }  # fmt: skip
    for name, fields in sections.items():
        cfg[name] = {**cfg.get(name, {}), **fields} if isinstance(fields, dict) else fields
    return cfg


def assert_schema(row: dict[str, Any]) -> None:
    assert list(row) == COLUMNS
    assert row["status"] in ("ok", "failed")
    for col in ("started_at", "ended_at"):
        assert isinstance(row[col], datetime) and row[col].tzinfo is not None
    assert isinstance(json.loads(row["history"]), list)
    if row["status"] == "failed":
        assert row["error"] and "\n" not in row["error"]
    else:
        assert row["error"] is None


def test_ok_row_has_every_column() -> None:
    cfg = TrialConfig.model_validate(tiny())
    row = run_trial(cfg, catch=False)
    assert_schema(row)
    assert row["status"] == "ok" and row["trial_id"] == cfg.trial_id and row["sweep"] == "tests"
    assert row["config"] == cfg.canonical_json()
    assert (row["block"], row["kernel_size"], row["activation"], row["norm"]) == (
        "basic", "3/3/5", "relu", "batchnorm",
    )  # fmt: skip
    assert (row["depth1"], row["width3"], row["seed"], row["eps"]) == (1, 0.5, 3, 8.0)
    assert row["params"] > 0 and row["macs"] > 0 and row["device"] == "cpu"
    assert (row["dataset"], row["train_method"], row["epochs"]) == ("synthetic", "trades", 3)
    for name in ("clean", "pgd", "cw", "aa"):
        assert 0.0 <= row[f"{name}_acc"] <= 1.0
    assert (row["clean_n"], row["pgd_n"], row["cw_n"], row["aa_n"]) == (60, 60, 60, 8)
    assert row["train_seconds"] > 0 and row["eval_seconds"] > 0
    assert row["ended_at"] >= row["started_at"] and row["started_at"].tzinfo == timezone.utc
    history = json.loads(row["history"])
    assert [r["epoch"] for r in history] == [1, 2, 3]
    # what the metrics were measured with
    assert (row["stop_epoch"], row["cw_kappa"], row["checkpoint"]) == (3, 0.0, "last")
    assert (row["precision"], row["eval_precision"]) == ("fp32", "fp32")  # CPU: no autocast
    accs = [r["holdout_pgd_acc"] for r in history]
    assert row["best_epoch"] == accs.index(max(accs)) + 1


def test_best_checkpoint_and_stop_epoch_reach_the_row(tmp_path: Path) -> None:
    """Scoring the best of 2 epochs of a 4-epoch schedule, interrupted after epoch 1."""
    cfg = tiny(train={"epochs": 4, "stop_epoch": 2}, eval={"checkpoint": "best", "cw_kappa": 5})
    whole = run_trial(cfg, checkpoint_dir=tmp_path / "whole")
    assert whole["status"] == "ok", whole["error"]
    assert (whole["epochs"], whole["stop_epoch"], whole["checkpoint"]) == (4, 2, "best")
    assert whole["cw_kappa"] == 5.0 and whole["best_epoch"] in (1, 2)
    assert len(json.loads(whole["history"])) == 2

    def preempt(record: dict[str, Any]) -> None:
        raise RuntimeError("preempted")

    assert run_trial(cfg, checkpoint_dir=tmp_path / "cut", on_epoch=preempt)["status"] == "failed"
    resumed = run_trial(cfg, checkpoint_dir=tmp_path / "cut")
    assert [whole[m] for m in [*METRICS, "best_epoch"]] == [
        resumed[m] for m in [*METRICS, "best_epoch"]
    ]
    bad = run_trial(tiny(data={"holdout_size": 0}, eval={"checkpoint": "best"}))
    assert bad["status"] == "failed" and "eval.checkpoint: 'best'" in bad["error"]


def test_skipped_attacks_are_null() -> None:
    row = run_trial(tiny(train={"epochs": 1, "method": "clean"},
                         eval={"pgd_steps": 0, "cw_steps": 0, "aa_size": 0}))  # fmt: skip
    assert row["status"] == "ok", row["error"]
    assert row["clean_acc"] is not None and row["clean_n"] == 60
    assert all(row[c] is None for c in ("pgd_acc", "cw_acc", "aa_acc", "pgd_n", "cw_n", "aa_n"))


def test_interrupted_trial_resumes_to_the_same_metrics(tmp_path: Path) -> None:
    cfg = tiny(train={"ema": 0.8})
    whole = run_trial(cfg, checkpoint_dir=tmp_path / "whole")

    def preempt(record: dict[str, Any]) -> None:
        if record["epoch"] == 1:
            raise RuntimeError("preempted")

    cut = run_trial(cfg, checkpoint_dir=tmp_path / "cut", on_epoch=preempt)
    assert cut["status"] == "failed" and cut["error"] == "RuntimeError: preempted"
    assert [r["epoch"] for r in json.loads(cut["history"])] == [1]
    epochs: list[int] = []
    resumed = run_trial(cfg, checkpoint_dir=tmp_path / "cut",
                        on_epoch=lambda r: epochs.append(r["epoch"]))  # fmt: skip
    assert epochs == [2, 3]
    assert whole["status"] == resumed["status"] == "ok"
    assert [whole[m] for m in METRICS] == [resumed[m] for m in METRICS]

    def drop_seconds(history: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in json.loads(history)]

    assert drop_seconds(whole["history"]) == drop_seconds(resumed["history"])


@pytest.mark.parametrize("catch", [True, False])
def test_divergence_gives_a_failed_row(catch: bool) -> None:
    row = run_trial(tiny(train={"lr": 1e6, "method": "clean"}), catch=catch)
    assert_schema(row)
    assert row["status"] == "failed"
    assert re.fullmatch(r"TrialFailed: diverged: non-finite loss at epoch \d+", row["error"])
    assert row["block"] == "basic" and row["params"] > 0  # what was known is kept
    assert row["clean_acc"] is None


def test_invalid_architecture_gives_a_failed_row() -> None:
    bad = tiny(arch={"block": "no-such-block"})
    row = run_trial(bad)
    assert_schema(row)
    assert row["status"] == "failed" and "arch" in row["error"] and "no-such-block" in row["error"]
    assert row["error"].startswith("ConfigError: ")
    assert len(row["trial_id"]) == 16 and row["trial_id"] == run_trial(bad)["trial_id"]
    assert json.loads(row["config"]) == bad and row["sweep"] == "tests" and row["seed"] == 3
    with pytest.raises(ConfigError, match="no-such-block"):
        run_trial(bad, catch=False)
    with pytest.raises(ConfigError, match="no trial_id"):
        run_trial({"seed": object()})


@pytest.mark.parametrize(
    "aa",
    [
        {"aa_version": "custom", "aa_attacks": None},  # custom without a list
        {"aa_version": "custom", "aa_attacks": ["apgd_ce"]},  # misspelt name
        {"aa_version": "standard", "aa_attacks": ["apgd-ce"]},  # list the version ignores
    ],
)
def test_autoattack_settings_fail_before_training(aa: dict[str, Any]) -> None:
    """A bad AutoAttack setting is a config error up front, not a failure after training."""
    row = run_trial(tiny(eval=aa))
    assert_schema(row)
    assert row["status"] == "failed" and row["error"].startswith("ConfigError: ")
    assert "aa_attacks" in row["error"] and row["train_seconds"] is None
    assert json.loads(row["history"]) == []
    with pytest.raises(ConfigError, match="aa_attacks"):
        run_trial(tiny(eval=aa), catch=False)


def test_class_count_must_match_the_data() -> None:
    row = run_trial(tiny(arch={"num_classes": 7}))
    assert_schema(row)
    assert row["status"] == "failed"
    assert "arch.num_classes" in row["error"] and "10 classes" in row["error"]


def test_per_stage_columns() -> None:
    assert per_stage((3, 3, 3)) == "3" and per_stage((3, 5, 7)) == "3/5/7"
    assert per_stage(("relu", "silu", "silu")) == "relu/silu/silu"


def test_overrides() -> None:
    base = {"arch": {"depths": [1, 2, 3]}, "train": {"lr": 0.1}}
    out = apply_overrides(
        base, ["arch.depths.0=5", "train.lr=0.05", "train.ema=null", "eval.aa_size=0",
               "arch.activation=[relu, silu, gelu]", "sweep=depth"],
    )  # fmt: skip
    assert out == {
        "arch": {"depths": [5, 2, 3], "activation": ["relu", "silu", "gelu"]},
        "train": {"lr": 0.05, "ema": None},
        "eval": {"aa_size": 0},
        "sweep": "depth",
    }
    assert base["arch"]["depths"] == [1, 2, 3]  # a copy
    for bad, key in [
        ("novalue", None),
        ("arch.depths.x=1", "arch.depths.x"),
        ("arch.depths.9=1", "arch.depths.9"),
        ("train.lr.a=1", "train.lr.a"),
    ]:
        with pytest.raises(ConfigError) as err:  # fmt: skip
            apply_overrides(base, [bad])
        assert err.value.key == key


def test_digits_trains_a_robust_model_in_a_minute() -> None:
    """The shipped example, with lighter final attacks: measured ~35 s train on a loaded CPU
    (no wall-clock assertion: 186 s was seen under a heavy load; speed belongs in bench/)."""
    import yaml

    cfg = apply_overrides(yaml.safe_load(DIGITS.read_text()),
                          ["eval.cw_steps=10", "eval.aa_size=0"])  # fmt: skip
    row = run_trial(cfg, catch=False)
    assert row["status"] == "ok"
    assert row["clean_acc"] > 0.8  # chance is 0.1
    assert row["pgd_acc"] > 0.5 and row["cw_acc"] > 0.5  # robust at 8/255


def test_cli_trial_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["trial", str(DIGITS), "--set", "train.epochs=1", "--set", "eval.aa_size=0",
                 "--set", "eval.cw_steps=2", "--set", "eval.pgd_steps=2",
                 "--checkpoint-dir", str(tmp_path), "--json"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    row = json.loads(out)
    assert list(row) == COLUMNS and row["status"] == "ok" and row["epochs"] == 1
    assert datetime.fromisoformat(row["started_at"]).tzinfo is not None
    assert (tmp_path / "last.pt").is_file()


def test_cli_trial_prints_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["trial", str(DIGITS), "--set", "train.epochs=1", "--set", "eval.aa_size=0",
                 "--set", "eval.cw_steps=0", "--set", "eval.pgd_steps=0",
                 "--set", "data.test_size=50"])  # fmt: skip
    assert code == 0
    assert "clean" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "args", "needle"),
    [
        ("train: {epochs: [", [], "line"),
        ("train:\n  epoch: 3\n", [], "train.epoch"),
        ("train: {epochs: 3}\n", ["train.lr=-1"], "train.lr"),
        ("train: {epochs: 3}\n", ["train.lr"], "KEY.PATH=VALUE"),
        ("- 1\n- 2\n", [], "mapping"),
    ],
)
def test_cli_bad_config_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, args: list[str], needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    sets = [a for arg in args for a in ("--set", arg)]
    assert main(["trial", str(path), *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and needle in err, err


def test_cli_failed_trial_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"data: {{dataset: cifar10}}\nruntime: {{data_dir: '{tmp_path}'}}\n")
    assert main(["trial", str(path)]) == 1  # no CIFAR there: a failed row, not success
    assert "error: DataError" in capsys.readouterr().err


def test_cli_trial_file_not_utf8_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00")
    assert main(["trial", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(path) in err, err


def test_trial_set_indexes_a_preset_list_as_run_does(tmp_path: Path) -> None:
    from sweeper.cli.trial_cmds import load_trial_config

    path = tmp_path / "t.yaml"
    path.write_text("arch: {preset: wrn-28-10}\n")
    cfg = load_trial_config(path, ["arch.depths.0=2"])
    assert cfg.arch.depths == (2, 4, 4)
    cfg = load_trial_config(path, ["arch=wrn-34-10", "arch.widths.2=1"])
    assert cfg.arch.depths == (5, 5, 5) and cfg.arch.widths == (10, 10, 1)
