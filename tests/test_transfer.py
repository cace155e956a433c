"""`sweeper transfer`: rankings of a study's networks under two threat models."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import marked_env

from sweeper import results
from sweeper.cli import main
from sweeper.config import TrialConfig
from sweeper.schema import EVAL_COLUMNS, empty_row
from sweeper.trial import config_columns

BLOCKS = ("basic", "bottleneck", "robust")
ORDERS = ("pre", "post")


def _planted(folder: Path) -> None:
    """Six networks x two seeds. Under L-inf: robust > bottleneck > basic and post beats pre;
    under L2 the block ranking holds but pre beats post (a planted sign change). The L2
    numbers of seed 1 come from a `sweeper eval` row, as after an evaluation of new threats."""
    now = datetime.now(timezone.utc)
    for b, block in enumerate(BLOCKS):
        for o, order in enumerate(ORDERS):
            for seed in (0, 1):
                cfg = TrialConfig(sweep="planted", study="planted", seed=seed,
                                  arch={"block": block, "activation_order": order})  # fmt: skip
                row = empty_row()
                linf = 0.40 + 0.05 * b + 0.01 * o + 0.002 * seed
                l2 = 0.55 + 0.06 * b - 0.02 * o + 0.002 * seed
                row.update(config_columns(cfg), status="ok", clean_acc=0.8, aa_acc=linf,
                           started_at=now, ended_at=now)  # fmt: skip
                if seed == 0:
                    row["l2_aa_acc"] = l2
                results.write_row(str(folder), row)
                if seed == 1:
                    ev = dict.fromkeys(EVAL_COLUMNS)
                    ev.update(sweep="planted", trial_id=cfg.trial_id, eval_id="e" + str(b * 2 + o),
                              status="ok", weights="_weights/x/final.pt", l2_aa_acc=l2,
                              started_at=now, ended_at=now)  # fmt: skip
                    results.write_eval_row(str(folder), ev)


def test_transfer_reports_tau_with_ci_the_plot_and_the_sign_changes(tmp_path, capsys) -> None:
    folder = tmp_path / "planted"
    _planted(folder)
    plot = tmp_path / "scatter.png"
    args = ["transfer", str(folder), "--from", "linf", "--to", "l2", "--plot", str(plot),
            "--bootstrap", "300"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["networks"] == 6 and out["metrics"] == ["aa_acc", "l2_aa_acc"]
    lo, hi = out["kendall_ci"]
    assert lo <= out["kendall_tau"] <= hi and 0 < out["kendall_tau"] < 1
    assert out["sign_changes"] == ["activation_order=post"]
    assert plot.stat().st_size > 1000
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Kendall tau" in text and "95% CI" in text and "SIGN CHANGES" in text
    # a threat no row was evaluated under: one line, exit 2
    assert main(["transfer", str(folder), "--to", "corruptions", "--plot", str(plot)]) == 2
    assert main(["transfer", str(folder), "--to", "l3"]) == 2


TINY_DIGITS = """
sweep: tiny_threats
base:
  arch: {block: basic, depths: [1, 1, 1], widths: [0.25, 0.25, 0.25]}
  data: {dataset: digits, image_size: 8, holdout_size: 0, test_size: 48, augment: false}
  train: {method: trades, epochs: 2, batch_size: 64, lr: 0.05, steps: 2, step_size: 4.0}
  eval: {threats: [linf, l2, corruptions], pgd_steps: 5, cw_steps: 0, aa_size: 24,
         aa_version: custom, aa_attacks: [apgd-ce], l2_pgd_steps: 5, l2_pgd_step_size: 0.2,
         corruption_size: 12, history_pgd_steps: 0}
axes:
  - grid:
      arch.activation_order: [pre, post]
      arch.activation: [relu, silu]
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="ends its Ray processes via /proc")
def test_a_cpu_digits_study_then_transfer(tmp_path: Path) -> None:
    """A tiny digits version of threat_models.yaml run for real (Ray, CPU), then
    `sweeper transfer` to L2 and to corruptions."""
    space = tmp_path / "tiny_threats.yaml"
    space.write_text(textwrap.dedent(TINY_DIGITS))
    out = tmp_path / "r"
    run = [sys.executable, "-m", "sweeper", "run", str(space), "--results", str(out),
           "--max-concurrent", "2"]  # fmt: skip
    with marked_env() as env:
        done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = results.read(str(out / "tiny_threats"))
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}
    for col in ("aa_acc", "l2_aa_acc", "l2_pgd_acc", "corruption_acc"):
        assert rows[col].between(0, 1).all(), col
    for target in ("l2", "corruptions"):
        plot = tmp_path / f"{target}.png"
        cmd = [sys.executable, "-m", "sweeper", "transfer", str(out / "tiny_threats"),
               "--to", target, "--plot", str(plot), "--bootstrap", "200"]  # fmt: skip
        shown = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert "Kendall tau" in shown.stdout and "95% CI [" in shown.stdout
        assert plot.stat().st_size > 1000


def test_report_has_a_threat_model_section(tmp_path) -> None:
    from sweeper.analysis.report import write_report
    from sweeper.analysis.tables import load
    from sweeper.analysis.transfer import with_evaluations

    folder = tmp_path / "planted"
    _planted(folder)
    rows = with_evaluations(load(folder), results.read_evals(str(folder)))
    text = write_report(rows, tmp_path / "report", bootstrap=100).read_text()
    assert "## Threat models" in text and "### planted: linf -> l2" in text
    assert "Kendall tau" in text and (tmp_path / "report" / "transfer_planted_linf_l2.png").exists()
