"""Columns that say what they are: one MACs definition, the training and the evaluation
radius apart, the attacks' steps, no duplicated config columns, a model file's config as a
dict, and a flag where AutoAttack on a small subset reads above PGD."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console

from sweeper import results
from sweeper.config import TrialConfig
from sweeper.models import build, count_macs, load_model, save_model
from sweeper.results.columns import held_by_fixed_column, varying_keys
from sweeper.schema import empty_row
from sweeper.space import macs_of
from sweeper.space.paths import flatten
from sweeper.trial import config_columns, run_trial

TINY = {
    "sweep": "cols",
    "arch": {"depths": 1, "widths": 0.5, "stem_channels": 8},
    "data": {"dataset": "synthetic", "image_size": 8, "synthetic_train": 100,
             "synthetic_test": 20, "holdout_size": 0},
    "train": {"method": "clean", "epochs": 1, "batch_size": 50, "eps": 4.0},
    "eval": {"eps": 2.0, "pgd_steps": 3, "cw_steps": 0, "aa_size": 0},
}  # fmt: skip


def test_a_rows_macs_is_the_dry_runs_and_its_radii_and_steps_are_apart() -> None:
    cfg = TrialConfig.model_validate(TINY)
    row = run_trial(cfg, catch=False)
    assert row["status"] == "ok"
    # 8x8 data, but MACs of one 32x32 image: what the dry run and macs_target count
    assert row["macs"] == macs_of(cfg.arch) == count_macs(cfg.arch, image_size=32)
    assert (row["eps"], row["eval_eps"]) == (4.0, 2.0)  # training, evaluation
    assert (row["pgd_steps"], row["cw_steps"]) == (3, 0)
    assert row["cw_acc"] is None


def _row(trial_id: str, config: dict) -> dict:
    row = empty_row()
    cfg = TrialConfig.model_validate({**config, "sweep": "v"})
    now = datetime.now(timezone.utc)
    row.update(config_columns(cfg), trial_id=trial_id, status="ok", started_at=now, ended_at=now)
    return row


def test_no_dotted_copy_of_a_fixed_column() -> None:
    configs = [TrialConfig.model_validate({"sweep": "v", "arch": {"kernel_size": ks,
                                                                  "activation": a},
                                           "eval": {"pgd_steps": k}, "train": {"beta": beta}})
               for ks, a, k, beta in ((3, "relu", 10, 6.0), (5, "silu", 20, 3.0))]  # fmt: skip
    assert varying_keys(flatten(c.identity()) for c in configs) == ["train.beta"]
    assert held_by_fixed_column("arch.depths.0") and held_by_fixed_column("eval.eps")
    assert not held_by_fixed_column("arch.se_reduction")


def test_an_older_sweeps_dotted_copies_read_as_the_fixed_columns(tmp_path: Path) -> None:
    sweep = str(tmp_path / "v")
    cfgs = [{"arch": {"activation": "silu"}, "eval": {"cw_steps": 5}},
            {"arch": {"activation": ["relu", "silu", "gelu"]},
             "eval": {"cw_steps": 7}}]  # fmt: skip
    for i, cfg in enumerate(cfgs):  # as older versions wrote them: copies, no cw_steps column
        row = {**_row(f"b{i}", cfg), "cw_steps": None, "eval_eps": None, "pgd_steps": None}
        results.write_row(sweep, row, varying=["eval.cw_steps", "arch.activation"])
    frame = results.read(sweep).set_index("trial_id")
    assert not [c for c in frame.columns if c.startswith(("arch.", "eval."))]
    assert list(frame.loc[["b0", "b1"], "activation"]) == ["silu", "relu/silu/gelu"]
    assert list(frame.loc[["b0", "b1"], "cw_steps"]) == [5, 7]  # filled from the config
    assert list(frame["eval_eps"]) == [8.0, 8.0] and list(frame["pgd_steps"]) == [20, 20]


def test_load_model_gives_the_config_as_a_dict(tmp_path: Path) -> None:
    cfg = TrialConfig.model_validate(TINY)
    path = save_model(tmp_path / "m.pt", cfg.arch, build(cfg.arch).state_dict(),
                      config=cfg.canonical_json(), trial_id=cfg.trial_id)  # fmt: skip
    _, info = load_model(path)
    assert isinstance(info["config"], dict)
    assert TrialConfig.model_validate(info["config"]).trial_id == cfg.trial_id
    assert json.loads(torch.load(path, weights_only=True)["config"]) == info["config"]


def test_status_tables_name_the_attack_steps_and_flag_aa_above_pgd(monkeypatch) -> None:
    from sweeper.cli import sweep_cmds

    base = {"status": "ok", "error": None, "block": "basic", "activation": "relu",
            "depth1": 1, "depth2": 1, "depth3": 1, "width1": 1.0, "width2": 1.0, "width3": 1.0,
            "clean_acc": 0.8, "cw_acc": 0.3, "pgd_steps": 10, "cw_steps": 30,
            "pgd_n": 1000}  # fmt: skip
    frame = pd.DataFrame([
        {**base, "trial_id": "a" * 16, "pgd_acc": 0.40, "aa_acc": 0.45, "aa_n": 16},
        {**base, "trial_id": "b" * 16, "pgd_acc": 0.40, "aa_acc": 0.35, "aa_n": 1000},
    ])  # fmt: skip
    out = io.StringIO()
    monkeypatch.setattr(sweep_cmds, "_console",
                        lambda stderr=False: Console(file=out, width=200))  # fmt: skip
    sweep_cmds._print_rows(frame, "rows")
    text = out.getvalue()
    assert "PGD-10" in text and "CW-30" in text
    assert "45.0*" in text and "35.0*" not in text
    assert "AutoAttack ran on the first aa_n test points only" in text
