"""`run --subsample K --from SWEEP --stratify METRIC --sweep NAME`: K cells of a finished cheap
sweep spread over the metric, rerun at another fidelity under another name (no Ray here:
the selection and the plan; tests/test_adaptive_runner.py runs it on Ray)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_space

from sweeper import results, space
from sweeper.cli import main
from sweeper.economics.subsample import stratified, subsample_cells, subsample_selector
from sweeper.errors import ConfigError, SweeperError
from sweeper.schema import empty_row
from sweeper.sweep.plan import make_plan
from sweeper.trial import config_columns

AXES = """axes:
  - grid:
      arch.depths.0: [1, 2, 3, 4]
      arch.activation: [relu, silu, gelu]
"""
SPACE = tiny_space("tiny", AXES)


def ok_row(config: object, cw: float) -> dict:
    row = empty_row()
    now = datetime.now(timezone.utc)
    row.update(config_columns(config), status="ok", clean_acc=cw + 0.2, pgd_acc=cw + 0.02,
               cw_acc=cw, started_at=now, ended_at=now)  # fmt: skip
    return row


@pytest.fixture
def cheap(tmp_path: Path) -> tuple[Path, Path]:
    """The space file and a results root holding its 12 cells run at 1 epoch."""
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    root = tmp_path / "results"
    for i, config in enumerate(space.expand(space.load(path))):
        results.write_row(str(root / "tiny"), ok_row(config, 0.1 + 0.05 * i))
    return path, root


def test_stratified_spreads_over_the_range_and_is_deterministic() -> None:
    values = np.linspace(0, 1, 101)
    picks = stratified(values, 5, seed=0)
    assert len(set(picks)) == 5 and picks == stratified(values, 5, seed=0)
    assert sorted(np.floor(values[picks] * 5).clip(max=4)) == [0, 1, 2, 3, 4]  # one per fifth
    assert picks != stratified(values, 5, seed=1)
    skewed = np.array([0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 1.0])  # 4 of 5 bins empty
    chosen = stratified(skewed, 4, seed=3)
    assert 6 in chosen and 0 in chosen and len(set(chosen)) == 4  # both ends, then the gaps
    assert stratified(np.ones(4), 2, seed=0) == stratified(np.ones(4), 2, seed=0)
    for k in (0, 8):
        with pytest.raises(ValueError):
            stratified(skewed, k)


def test_subsample_picks_k_cells_of_the_space_at_the_new_fidelity(cheap: tuple[Path, Path]) -> None:
    path, root = cheap
    high = space.load(path, ["train.epochs=3"], sweep="tiny-e3")
    configs = space.expand(high)
    source = results.read(str(root / "tiny"))
    chosen = subsample_cells(configs, source, 4, study="tiny")
    assert len({c.trial_id for c in chosen}) == 4
    assert all(c.train.epochs == 3 and c.sweep == "tiny-e3" and c.study == "tiny" for c in chosen)
    ids = {c.trial_id for c in configs}
    assert {c.trial_id for c in chosen} <= ids
    # the same networks and seeds as the cheap rows picked, spread over cw_acc
    cheap_by_net = {
        json.dumps({**json.loads(r.config), "train": None, "sweep": None, "study": None},
                   sort_keys=True): r.cw_acc
        for r in source.itertuples()
    }  # fmt: skip
    picked = sorted(
        cheap_by_net[json.dumps({**json.loads(c.canonical_json()), "train": None, "sweep": None,
                                 "study": None}, sort_keys=True)]
        for c in chosen
    )  # fmt: skip
    bins = [int(min(3, (v - 0.1) / (0.55 / 4))) for v in picked]  # quarters of 0.10..0.65
    assert bins == [0, 1, 2, 3]
    assert chosen == subsample_cells(configs, source, 4, study="tiny")  # deterministic


def test_subsample_bad_input(cheap: tuple[Path, Path]) -> None:
    path, root = cheap
    configs = space.expand(space.load(path, ["train.epochs=3"]))
    source = results.read(str(root / "tiny"))
    with pytest.raises(SweeperError, match="only 12 finished"):
        subsample_cells(configs, source, 13)
    with pytest.raises(SweeperError, match="not 'depth'"):
        subsample_cells(configs, source, 2, study="depth")
    other = space.expand(space.load(path, ["arch.widths=[0.5, 0.5, 0.5]"]))
    with pytest.raises(SweeperError, match="none of its 12 finished trials"):
        subsample_cells(other, source, 2)
    with pytest.raises(SweeperError, match="no finished trial"):
        subsample_cells(configs, source.assign(status="failed"), 2)
    with pytest.raises(SweeperError, match="no result rows"):
        subsample_selector(str(root / "nothing"), 2, metric="cw_acc", seed=0, study="tiny")


def test_plan_of_a_subsample_runs_k_cells_and_skips_done_ones(cheap: tuple[Path, Path]) -> None:
    path, root = cheap
    high = space.load(path, ["train.epochs=3"], sweep="tiny-e3")
    select = subsample_selector(str(root / "tiny"), 5, metric="cw_acc", seed=0, study="tiny")
    plan = make_plan(high, str(root), select=select)
    assert len(plan.configs) == len(plan.to_run) == 5
    results.write_row(plan.sweep_uri, ok_row(plan.configs[0], 0.3))
    again = make_plan(high, str(root), select=select)
    assert len(again.configs) == 5 and len(again.to_run) == 4
    assert again.configs[0].trial_id not in {c.trial_id for c in again.to_run}


def test_cli_dry_run_and_errors(cheap: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
                                ) -> None:  # fmt: skip
    path, root = cheap
    args = ["run", str(path), "--results", str(root), "--set", "train.epochs=3", "--dry-run",
            "--json", "--subsample", "3", "--from", str(root / "tiny")]  # fmt: skip
    assert main([*args, "--sweep", "tiny-e3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sweep"] == "tiny-e3" and out["trials"] == 3 and out["to_run"] == 3
    for extra, why in (
        ([], "is the sweep being written"),  # no --sweep: it would write into the cheap sweep
        (["--sweep", "x", "--subsample", "99"], "only 12 finished"),
        (["--sweep", "x", "--stratify", "params"], "--stratify"),
        (["--sweep", "bad/name"], "--sweep"),
        (["--sweep", "x", "--order", "sideways"], "--order"),
    ):
        assert main([*args, *extra]) == 2, why
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and why in err and "\n" not in err
    assert main(["run", str(path), "--results", str(root), "--dry-run", "--subsample", "2"]) == 2
    assert "--from" in capsys.readouterr().err


def test_sweep_renames_the_run_and_set_sweep_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    renamed = space.load(path, sweep="tiny-long")
    config = space.expand(renamed)[0]
    assert (renamed.name, renamed.study, config.sweep, config.study) == (
        "tiny-long", "tiny", "tiny-long", "tiny")  # fmt: skip
    assert config.trial_id == space.expand(space.load(path))[0].trial_id  # names are not identity
    assert config_columns(config)["study"] == "tiny"
    with pytest.raises(ConfigError, match="--set sweep: not a base value; set it with --sweep"):
        space.load(path, ["sweep=other"])
    with pytest.raises(ConfigError, match="--sweep"):
        space.load(path, sweep="../escape")
