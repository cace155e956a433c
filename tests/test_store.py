"""The results store beyond one row: weights kept per trial, `sweeper eval` and `export`,
a column per varying config key, provenance, and refusing a trial counted twice.

No Ray here: rows are made by run_trial and stored by the runner's own `_store` (what the
Ray trainable calls), so the plain-Python and the Ray path are checked on the same code.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import torch

from sweeper import results
from sweeper.cli import main
from sweeper.config import TrialConfig
from sweeper.results.columns import column_type, varying_keys, with_varying
from sweeper.schema import empty_row
from sweeper.space import expand, load
from sweeper.sweep.plan import varying_columns
from sweeper.sweep.runner import _store
from sweeper.trial import config_columns, run_trial

SPACE = """
sweep: store
base:
  arch: {depths: 1, widths: 0.5, stem_channels: 8}
  data: {dataset: synthetic, image_size: 8, synthetic_train: 200, synthetic_test: 60,
         holdout_size: 20}
  train: {method: trades, epochs: 2, batch_size: 50, lr: 0.05, steps: 2, step_size: 4.0}
  eval: {pgd_steps: 3, cw_steps: 3, aa_size: 8, aa_version: custom, aa_attacks: [apgd-ce],
         history_pgd_steps: 0, batch_size: 100}
axes:
  - grid: {train.beta: [1.0, 6.0]}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    """A two-trial space run by run_trial and stored by the runner's own store step."""
    root = tmp_path_factory.mktemp("store")
    path = root / "store.yaml"
    path.write_text(SPACE)
    space = load(path)
    configs = expand(space)
    sweep = results.sweep_dir(str(root / "r"), space.name)
    rows = []
    for config in configs:
        row = run_trial(config, weights_dir=root / "work" / config.trial_id)
        _store(sweep, row, space, varying_columns(space, configs))
        rows.append(row)
    results.compact(sweep)  # as the driver does while trials end and at the run's end
    return sweep, rows


def test_every_ok_row_names_weights_that_load_as_a_plain_state_dict(trained: Any) -> None:
    sweep, rows = trained
    frame = pd.read_parquet(sweep)  # no weights file or evaluation table read as rows
    assert len(frame) == 2 and set(frame["status"]) == {"ok"}
    for _, row in frame.iterrows():
        assert row["weights"] == f"_weights/{row['trial_id']}/final.pt"
        state = torch.load(Path(results.state_dir(sweep)) / row["weights"], weights_only=True)
        config = TrialConfig.model_validate_json(row["config"])
        from sweeper.models import build

        build(config.arch).load_state_dict(state)  # the exact network of the row
        assert all(t.device.type == "cpu" for t in state.values())


def test_eval_reproduces_the_rows_metrics_into_its_own_table(
    trained: Any, capsys: pytest.CaptureFixture
) -> None:
    sweep, _ = trained
    before = results.read(sweep)
    assert main(["eval", sweep, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["rows"]) == 2
    for ev in out["rows"]:
        row = before.set_index("trial_id").loc[ev["trial_id"]]
        assert ev["status"] == "ok" and not ev["reused"]
        for metric in ("clean_acc", "pgd_acc", "cw_acc", "aa_acc", "clean_n", "aa_n"):
            assert ev[metric] == row[metric], metric  # same data, same weights: exactly
    # its own table; the training rows are untouched and read without it
    table = results.read_evals(sweep)
    assert len(table) == 2 and set(table["status"]) == {"ok"}
    import polars as pl

    evals = results.eval_table(sweep)  # its folder holds that table only: any reader, whole
    assert len(pd.read_parquet(evals)) == 2 and len(pl.read_parquet(evals)) == 2
    assert sorted(os.listdir(evals)) == [results.TABLE_FILE]
    after = results.read(sweep)
    pd.testing.assert_frame_equal(before, after)
    assert len(pd.read_parquet(sweep)) == 2
    # the same evaluation is not repeated; other settings are a row of their own
    assert main(["eval", sweep, "--json", "--trial", ev["trial_id"][:6]]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["reused"]
    args = ["eval", sweep, "--json", "--trial", ev["trial_id"], "--set", "eval.aa_size=16"]
    assert main(args) == 0
    [bigger] = json.loads(capsys.readouterr().out)["rows"]
    assert bigger["aa_n"] == 16 and bigger["clean_acc"] == ev["clean_acc"]
    assert len(results.read_evals(sweep)) == 3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "train.beta=2"], "--set train.beta: only eval.*, runtime.*"),
        (["--trial", "zzz"], "--trial zzz: no trial"),
        (["--set", "eval.aa_size=-1"], "eval.aa_size"),
    ],
)
def test_eval_refuses_bad_input_in_one_line(
    trained: Any, capsys: pytest.CaptureFixture, args: list[str], expected: str
) -> None:
    sweep, _ = trained
    assert main(["eval", sweep, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err, err


def test_export_writes_a_model_that_loads_without_the_sweep(trained: Any, tmp_path: Path) -> None:
    from sweeper.data import load_dataset
    from sweeper.models import ArchSpec, build, load_model

    sweep, rows = trained
    target = tmp_path / "model.pt"
    assert main(["export", sweep, rows[0]["trial_id"], "--out", str(target)]) == 0
    model, info = load_model(target)
    assert info["trial_id"] == rows[0]["trial_id"]
    assert info["metrics"]["clean_acc"] == rows[0]["clean_acc"]
    # the torch-only recipe of the docstring gives the same network
    blob = torch.load(target, weights_only=True)
    again = build(ArchSpec(**blob["arch"]))
    again.load_state_dict(blob["state_dict"])
    config = TrialConfig.model_validate(info["config"])  # a dict, not JSON text
    data = load_dataset(config.data, device="cpu", seed=config.seed)
    x = data.test_x.float() / 255
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
        assert torch.equal(pred, again.eval()(x).argmax(1))
    assert (pred == data.test_y).float().mean().item() == pytest.approx(rows[0]["clean_acc"])


def test_with_the_best_checkpoint_both_weights_are_kept_and_the_row_names_best(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "store.yaml"
    path.write_text(SPACE.replace("history_pgd_steps: 0", "history_pgd_steps: 2"))
    space = load(path)
    config = expand(space)[0]
    best = TrialConfig.model_validate({**config.model_dump(), "eval": {
        **config.eval.model_dump(), "checkpoint": "best"}})  # fmt: skip
    row = run_trial(best, weights_dir=tmp_path / "best")
    assert row["status"] == "ok" and row["weights"] == str(tmp_path / "best" / "best.pt")
    assert row["best_epoch"] < row["epochs"]  # so best.pt and final.pt differ
    last = run_trial(config, weights_dir=tmp_path / "last")
    assert last["weights"] == str(tmp_path / "last" / "final.pt")
    final = torch.load(tmp_path / "best" / "final.pt", weights_only=True)
    same = torch.load(last["weights"], weights_only=True)
    assert all(torch.equal(final[k], same[k]) for k in same)  # the end of the same training
    sweep = str(tmp_path / "r" / "store")
    _store(sweep, row, space, [])
    assert results.read_row(sweep, row["trial_id"])["weights"].endswith("/best.pt")
    assert main(["eval", sweep, "--json"]) == 0
    [ev] = json.loads(capsys.readouterr().out)["rows"]
    assert ev["weights"].endswith("/best.pt")
    assert (ev["clean_acc"], ev["pgd_acc"]) == (row["clean_acc"], row["pgd_acc"])


def test_sweeper_trial_keeps_the_weights_where_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import yaml

    space = yaml.safe_load(SPACE)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({**space["base"], "sweep": "one"}))
    args = ["trial", str(tmp_path / "t.yaml"), "--set", "train.epochs=1", "--json"]
    assert main([*args, "--weights-dir", str(tmp_path / "w")]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["weights"] == str(tmp_path / "w" / "final.pt")
    assert row["space_sha256"] is None and row["host"]  # no space here; provenance is
    torch.load(row["weights"], weights_only=True)


def test_rows_carry_provenance_and_the_space_hash(trained: Any) -> None:
    from sweeper.provenance import git_commit

    sweep, rows = trained
    frame = results.read(sweep)
    for col in ("host", "python_version", "numpy_version", "ray_version", "autoattack_version"):
        assert frame[col].notna().all(), col
    assert frame["space_sha256"].nunique() == 1 and len(frame["space_sha256"][0]) == 64
    assert rows[0]["space_sha256"] == load(Path(sweep).parents[1] / "store.yaml").sha256
    # --set is part of the space as loaded; comments are not
    path = Path(sweep).parents[1] / "store.yaml"
    assert load(path, ["train.epochs=3"]).sha256 != load(path).sha256
    commented = path.with_name("commented.yaml")
    commented.write_text("# a comment\n" + path.read_text())
    assert load(commented).sha256 == load(path).sha256
    assert set(frame["git_commit"]) == {git_commit()}


def test_git_commit_is_none_outside_a_checkout(tmp_path: Path) -> None:
    from sweeper.provenance import git_commit

    copy = tmp_path / "sweeper"
    copy.mkdir()
    assert git_commit(copy) is None
    if shutil.which("git") and (Path(__file__).parents[1] / ".git").exists():
        here = git_commit()
        assert here is not None and len(here.removesuffix("-dirty")) == 40


# ---- a column per varying key ------------------------------------------------------------


def _row(trial_id: str, config: dict[str, Any], sweep: str = "v") -> dict[str, Any]:
    row = empty_row()
    cfg = TrialConfig.model_validate({**config, "sweep": sweep})
    now = datetime.now(timezone.utc)
    row.update(config_columns(cfg), trial_id=trial_id, status="ok", started_at=now, ended_at=now)
    return row


def test_varying_keys_become_typed_columns_and_runs_with_other_keys_still_read_as_one(
    tmp_path: Path,
) -> None:
    sweep = str(tmp_path / "v")
    # a first run varied train.beta ...
    for i, beta in enumerate((1.0, 6.0)):
        results.write_row(sweep, _row(f"a{i}", {"train": {"beta": beta}}), varying=["train.beta"])
    results.compact(sweep)  # as the run does
    frame = pd.read_parquet(sweep)  # plain pandas sees the column
    assert sorted(frame["train.beta"]) == [1.0, 6.0]
    # ... a later run of the same sweep varies the CW margin and the activation instead
    later = [
        {"eval": {"cw_steps": 5}, "arch": {"activation": "silu"}},
        {"eval": {"cw_steps": 7}, "arch": {"activation": ["relu", "silu", "gelu"]}},
    ]
    for i, cfg in enumerate(later):
        results.write_row(sweep, _row(f"b{i}", cfg), varying=["eval.cw_steps", "arch.activation"])
    frame = results.read(sweep).set_index("trial_id")
    assert frame.loc["b0", "train.beta"] == 6.0  # recomputed from the config, not null
    assert frame.loc["a0", "train.beta"] == 1.0
    # keys a fixed column holds read as that column (no dotted copy: cw_steps, activation)
    assert list(frame.loc[["a0", "b0", "b1"], "cw_steps"]) == [40, 5, 7]
    assert frame.loc["b1", "activation"] == "relu/silu/gelu"
    assert frame.loc["b0", "activation"] == "silu"
    assert str(frame["cw_steps"].dtype) == "int64"
    assert "eval.cw_steps" not in frame and "arch.activation" not in frame
    # sweeper status shows what varies
    assert main(["status", sweep, "--json"]) == 0


def test_column_types_follow_the_config_fields() -> None:
    assert column_type("train.beta") == pa.float64()
    assert column_type("eval.cw_steps") == pa.int64()
    assert column_type("arch.depths") == pa.string()  # per-stage: "4" or "2/4/6"
    assert column_type("arch.depths.0") == pa.int64()
    assert column_type("arch.expansion") == pa.int64()  # int | None
    assert column_type("train.nesterov") == pa.bool_()
    assert column_type("arch.se") == pa.string()  # a Literal of strings
    assert column_type("no.such.key") == pa.string()
    assert varying_keys([{"a": 1, "seed": 0}, {"a": 1, "seed": 1}, {"a": 1, "b": 2}]) == ["b"]


def test_a_config_that_failed_validation_reads_with_null_columns(tmp_path: Path) -> None:
    sweep = str(tmp_path / "v")
    good = _row("ok1", {"train": {"beta": 2.0}})
    bad = _row("bad", {"train": {"beta": 3.0}})
    bad["config"] = json.dumps({"train": {"beta": "lots"}, "sweep": "v"})
    for row in (good, bad):
        results.write_row(sweep, row, varying=["train.beta"])
    table = with_varying(results.read_table(sweep))
    values = dict(zip(table["trial_id"].to_pylist(), table["train.beta"].to_pylist()))
    assert values == {"ok1": 2.0, "bad": None}


def test_optuna_plans_name_their_sampled_keys_as_columns(tmp_path: Path) -> None:
    from sweeper.sweep.plan import make_plan

    path = tmp_path / "o.yaml"
    path.write_text(
        "sweep: o\naxes:\n  - sample:\n      params:\n"
        "        train.lr: {loguniform: [0.01, 0.2]}\n"
        "        arch.depths.0: {randint: [1, 4]}\n"
        "        derive.match_gmacs: {uniform: [0.1, 0.2]}\n"
        "search: {method: optuna, num_samples: 4}\n"
    )
    # arch.depths.0 is the fixed column depth1: no dotted copy of it
    assert make_plan(load(path), str(tmp_path)).varying == ["train.lr"]


# ---- a trial counted twice ----------------------------------------------------------------


def test_report_and_status_refuse_a_trial_with_two_row_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep = tmp_path / "v"
    for i in range(2):
        results.write_row(str(sweep), _row(f"t{i}", {"seed": i}))
    shutil.copy(tmp_path / "_state" / "v" / "_rows" / "t0.parquet", sweep / "t0 (copy).parquet")
    for command in ("status", "report"):
        assert main([command, str(sweep)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        assert "t0 of sweep v has 2 row files" in err and "t0 (copy).parquet" in err
    # the same trial in two different sweeps is fine (the sweep name is not hashed)
    (sweep / "t0 (copy).parquet").unlink()
    results.write_row(str(tmp_path / "w"), _row("t0", {"seed": 0}, sweep="w"))
    assert main(["status", str(tmp_path), "--json"]) == 0
