"""`sweeper fidelity`: matching trials of one study at two fidelities, rank correlations with
bootstrap intervals that cover planted values, conclusions, bad input, the report section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.analysis import fidelity, synthetic
from sweeper.analysis.report import write_report
from sweeper.cli import main
from sweeper.errors import SweeperError


@pytest.mark.parametrize("tau", [0.6, 0.95])
def test_kendall_interval_covers_the_planted_tau(tau: float) -> None:
    """Networks whose two metrics are bivariate normal with correlation sin(pi tau / 2) have
    population Kendall tau = tau; the reported 95% interval must hold it in >= 9 of 10 seeds."""
    hits = 0
    for seed in range(10):
        low, high = synthetic.fidelity_pair(40, tau, seed=seed)
        check = fidelity.compare(low, high, resamples=1000, seed=seed)
        assert check.n == 40 and check.kendall_ci[0] <= check.kendall_tau <= check.kendall_ci[1]
        hits += check.kendall_ci[0] <= tau <= check.kendall_ci[1]
    assert hits >= 9


def test_matching_ignores_fidelity_keys_and_counts_the_unmatched() -> None:
    low, high = synthetic.fidelity_pair(12, 0.9, seed=1)
    high = high.iloc[:8]  # a subsample: 8 of the 12 networks rerun
    check = fidelity.compare(low, high, resamples=200)
    assert (check.n, check.trials, check.low_only, check.high_only) == (8, 8, 4, 0)
    assert check.changes == {"train.epochs": (10, 100)}
    assert set(check.pairs["label"]) == {
        f"depth1={a}, depth2={b}, depth3={c}"
        for a, b, c in high[["depth1", "depth2", "depth3"]].to_numpy()
    }


def test_a_varying_train_value_is_a_factor_not_a_fidelity() -> None:
    """In a learning-rate study train.lr varies within each side: it must match, so two
    networks that differ only by lr are never paired with each other."""
    rows = []
    for epochs in (10, 100):
        for lr, cw in ((0.05, 0.50), (0.1, 0.52), (0.2, 0.47)):
            row = synthetic.make_row(f"lr-e{epochs}", 0, cw=cw + epochs / 1000, epochs=epochs,
                                     study="lr")  # fmt: skip
            cfg = json.loads(row["config"])
            cfg["train"]["lr"] = lr
            row.update(config=json.dumps(cfg), trial_id=f"{epochs}-{lr}")
            rows.append(row)
    frame = synthetic.to_frame(rows)
    check = fidelity.compare(frame[frame.epochs == 10], frame[frame.epochs == 100], resamples=200)
    assert check.n == 3 and check.kendall_tau == pytest.approx(1.0)
    assert sorted(check.pairs["label"]) == ["train.lr=0.05", "train.lr=0.1", "train.lr=0.2"]
    assert check.changes == {"train.epochs": (10, 100)}


def _rerun(rows: pd.DataFrame, epochs: int) -> pd.DataFrame:
    """The same trials as if run again at another number of epochs, as another sweep."""
    out = rows.copy()
    cfgs = [json.loads(c) for c in out["config"]]
    for c in cfgs:
        c["train"]["epochs"] = epochs
    out["config"] = [json.dumps(c) for c in cfgs]
    out["sweep"] = out["sweep"] + f"-e{epochs}"
    out["epochs"], out["trial_id"] = epochs, out["trial_id"] + f"-e{epochs}"
    return out


def test_conclusions_same_when_ranks_agree_and_flipped_when_reversed() -> None:
    low = synthetic.study_rows("block_topology", seeds=(0, 1), noise=0.0)
    high = _rerun(low, 100)
    high["cw_acc"] = low["cw_acc"] + 0.05
    same = fidelity.compare(low, high, resamples=200)
    assert same.n == 6 and same.trials == 12  # seeds averaged per network
    assert all(c.same for c in same.conclusions)
    names = [c.name for c in same.conclusions]
    assert names[:4] == ["best network", "best block", "worst block", "effect signs of block"]
    assert "effect signs of activation_order" in names
    high["cw_acc"] = 1 - low["cw_acc"]
    flipped = {c.name: c for c in fidelity.compare(low, high, resamples=200).conclusions}
    assert flipped["best block"].low == flipped["worst block"].high == "bottleneck"
    assert not flipped["effect signs of block"].same


def test_compound_study_compares_the_fitted_depth_share() -> None:
    rng = np.random.default_rng(0)
    low = synthetic.scaling_rows(vertex=0.7, noise=0.001, rng=rng)
    high = _rerun(low, 100)
    high["cw_acc"] = high["cw_acc"] + rng.normal(0, 0.001, len(high)) + 0.04
    check = fidelity.compare(low, high, resamples=200)
    share = [c for c in check.conclusions if c.name.startswith("depth share")]
    assert len(share) == 1 and share[0].same
    assert share[0].low.startswith("0.7") and "[" in share[0].high
    assert not any("macs_target" in c.name for c in check.conclusions)


def test_topk_overlap() -> None:
    low = np.array([5, 4, 3, 2, 1.0])
    assert fidelity.topk_overlap(low, low, 2) == 2
    assert fidelity.topk_overlap(low, -low, 2) == 0
    assert fidelity.topk_overlap(low, np.array([5, 1, 4, 2, 3.0]), 3) == 2


def test_bad_input_is_one_error(tmp_path: Path) -> None:
    low, high = synthetic.fidelity_pair(6, 0.9, seed=0)
    se = synthetic.study_rows("se")
    with pytest.raises(SweeperError, match="study 'depth' and .* study 'se'"):
        fidelity.compare(low, se)
    with pytest.raises(SweeperError, match=r"several sweeps \(depth-e10, se\)"):
        fidelity.compare(pd.concat([low, se]), high)
    other, _ = synthetic.fidelity_pair(6, 0.9, seed=5)  # other depth networks
    disjoint = other[~other["depth1"].astype(str).add(other["depth2"].astype(str)).isin(
        low["depth1"].astype(str).add(low["depth2"].astype(str)))]  # fmt: skip
    with pytest.raises(SweeperError, match="nothing to compare"):
        fidelity.compare(disjoint, high)
    with pytest.raises(SweeperError, match="only 2 network"):
        fidelity.compare(low, high.iloc[:2])
    with pytest.raises(SweeperError, match="several sweeps"):  # a root with both fidelities
        fidelity.compare(pd.concat([low, high]), high)
    with pytest.raises(SweeperError, match="share 6 trial"):
        fidelity.compare(high, high)
    twice = pd.concat([low, low.assign(trial_id=low["trial_id"] + "x")])
    with pytest.raises(SweeperError, match="repeat a network and seed"):
        fidelity.compare(twice, high)
    failed = low.assign(status="failed")
    with pytest.raises(SweeperError, match="no ok rows"):
        fidelity.compare(failed, high)


def _write(frames: list[pd.DataFrame], root: Path) -> Path:
    for frame in frames:
        synthetic.write_results(frame, root)
    return root


def test_cli_json_table_plot_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:  # fmt: skip
    low, high = synthetic.fidelity_pair(10, 0.8, seed=2)
    root = _write([low, high, synthetic.study_rows("se")], tmp_path / "r")
    lo, hi = str(root / "depth-e10"), str(root / "depth-e100")
    plot = tmp_path / "fid.png"
    assert main(["fidelity", lo, hi, "--json", "--bootstrap", "200", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("n", "kendall_tau", "kendall_ci", "spearman_rho", "spearman_ci", "topk",
                "conclusions"):  # fmt: skip
        assert key in out
    assert out["n"] == 10 and len(out["kendall_ci"]) == 2 and plot.stat().st_size > 0
    assert [t["k"] for t in out["topk"]] == [5, 1]
    assert all({"low", "high", "same"} <= set(c) for c in out["conclusions"])
    assert main(["fidelity", lo, hi, "--bootstrap", "200"]) == 0
    text = capsys.readouterr().out
    assert "Kendall tau" in text and "best network" in text and "`train.epochs` 10 -> 100" in text
    for args, why in (
        ([lo, str(root / "se")], "not the same study"),
        ([lo, str(tmp_path / "missing")], "no result rows"),
        ([str(root), hi], "several sweeps"),
        ([lo, hi, "--metric", "params"], "--metric"),
    ):
        assert main(["fidelity", *args]) == 2, why
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and len(err) < 400


def test_report_has_a_fidelity_section_for_sweeps_of_one_study(tmp_path: Path) -> None:
    low, high = synthetic.fidelity_pair(8, 0.9, seed=4)
    root = _write([low, high.iloc[:6], synthetic.study_rows("se")], tmp_path / "r")
    path = write_report(root, tmp_path / "report", bootstrap=50)
    text = path.read_text()
    assert "## Fidelity" in text and "### depth-e10 (LOW) vs depth-e100 (HIGH)" in text
    assert "6 (6 trials; 2 only in depth-e10, 0 only in depth-e100)" in text
    assert (tmp_path / "report" / "fidelity_depth-e10_depth-e100.png").exists()
    alone = write_report(root / "se", tmp_path / "report2", bootstrap=50).read_text()
    assert "## Fidelity" not in alone


def test_fidelity_of_real_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rows from run_trial itself (tiny digits networks, 1 vs 3 epochs): the matching reads
    real stored configs. The recorded run on a 12-network digits study is in bench/RESULTS.md."""
    from sweeper import results, space
    from sweeper.trial import run_trial

    path = tmp_path / "real.yaml"
    path.write_text(
        "sweep: real\n"
        "base:\n"
        "  arch: {block: basic, depths: [1, 1, 1], widths: [0.25, 0.25, 0.25]}\n"
        "  data: {dataset: digits, image_size: 8, holdout_size: 0, train_size: 400,\n"
        "         test_size: 120}\n"
        "  train: {method: clean, epochs: 1, batch_size: 64}\n"
        "  eval: {eps: 2.0, pgd_steps: 1, cw_steps: 2, aa_size: 0, history_pgd_steps: 0}\n"
        "axes:\n  - grid: {arch.activation: [relu, silu, gelu, elu]}\n"
    )
    for epochs in (1, 3):
        loaded = space.load(path, [f"train.epochs={epochs}"], sweep=f"real-e{epochs}")
        for config in space.expand(loaded):
            row = run_trial(config, catch=False)
            results.write_row(str(tmp_path / "r" / loaded.name), row)
    assert main(["fidelity", str(tmp_path / "r" / "real-e1"), str(tmp_path / "r" / "real-e3"),
                 "--json", "--bootstrap", "200"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 4 and out["study"] == "real"
    assert out["fidelity"] == {"train.epochs": {"low": 1, "high": 3}}
    assert {c["conclusion"] for c in out["conclusions"]} >= {"best network", "best activation"}
