"""fit-scaling recovers planted depth-share optima and claims none where there is none.

The rows are generated (analysis.synthetic), never real results.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.analysis.scaling import (  # noqa: E402
    assign_budgets,
    depth_share,
    fit_scaling,
    prepare,
    share_ratio,
)
from sweeper.analysis.synthetic import (  # noqa: E402
    make_row,
    scaling_rows,
    study_rows,
    to_frame,
    write_results,
)
from sweeper.cli import main  # noqa: E402
from sweeper.errors import SweeperError  # noqa: E402

SHARES = np.arange(0.30, 0.901, 0.02)


def _planted(
    vertex: float | dict[float, float], budgets=(5, 10, 20, 40), seed: int = 0, **kw
) -> pd.DataFrame:
    kw = {"curvature": -0.3, "noise": 0.002, **kw}
    return scaling_rows(budgets, SHARES, vertex=vertex, rng=np.random.default_rng(seed), **kw)


@pytest.mark.parametrize("vertex", [0.7, 0.62])
def test_recovers_planted_optimum(vertex: float) -> None:
    fit = fit_scaling(_planted(vertex), n_boot=200, seed=1)
    for opt in [fit.pooled, *fit.budgets]:
        assert opt.interior, opt.reason
        assert abs(opt.depth_share - vertex) < 0.03, (opt.label, opt.depth_share)
        assert opt.ci_low <= opt.depth_share <= opt.ci_high
        assert opt.r2 > 0.5
    assert fit.pooled.ci_low < vertex < fit.pooled.ci_high
    assert fit.pooled.boot_interior > 0.95
    assert [b.macs_target for b in fit.budgets] == [5.0, 10.0, 20.0, 40.0]


def test_recovers_per_budget_optima_and_pools_them() -> None:
    planted = {5: 0.7, 10: 0.7, 20: 0.62, 40: 0.62}
    fit = fit_scaling(_planted(planted), n_boot=100)
    for opt in fit.budgets:
        assert abs(opt.depth_share - planted[int(opt.macs_target)]) < 0.03
    assert 0.62 - 0.03 < fit.pooled.depth_share < 0.7 + 0.03


def test_monotone_relation_claims_no_optimum() -> None:
    rng = np.random.default_rng(3)
    rows = _planted(0.7)
    share = depth_share(rows)
    rows["cw_acc"] = 0.45 + 0.08 * share + rng.normal(0, 0.002, len(rows))  # rises throughout
    fit = fit_scaling(rows, n_boot=100)
    for opt in [fit.pooled, *fit.budgets]:
        assert not opt.interior
        assert opt.depth_share is None and opt.ci_low is None and opt.ratio is None
        assert opt.reason
    assert fit.to_json()["pooled"]["depth_share"] is None


def test_vertex_beyond_the_data_and_upward_curve_are_not_optima() -> None:
    beyond = fit_scaling(_planted(1.1, budgets=(5, 10)), n_boot=50)
    assert not beyond.pooled.interior and "edge" in beyond.pooled.reason
    assert beyond.pooled.vertex > 0.9
    upward = _planted(0.6, budgets=(5, 10), curvature=0.0)
    upward["cw_acc"] = 0.5 + 0.3 * (depth_share(upward) - 0.6) ** 2
    fit = fit_scaling(upward, n_boot=50)
    assert not fit.pooled.interior and "upward" in fit.pooled.reason


def test_one_budget_pooled_equals_that_budget() -> None:
    fit = fit_scaling(_planted(0.7, budgets=(10,)), n_boot=50)
    assert len(fit.budgets) == 1
    assert fit.pooled.depth_share == pytest.approx(fit.budgets[0].depth_share)
    assert fit.pooled.n == fit.budgets[0].n == len(SHARES)


def test_too_few_points_is_a_clear_error() -> None:
    rows = _planted(0.7, budgets=(5,)).iloc[[0, 10, 20]]
    with pytest.raises(SweeperError, match="distinct depth share"):
        fit_scaling(rows)
    failed = _planted(0.7, budgets=(5,)).assign(status="failed")
    with pytest.raises(SweeperError, match="no ok rows"):
        fit_scaling(failed)


def test_a_sparse_budget_is_reported_not_fatal() -> None:
    rows = pd.concat([_planted(0.7, budgets=(5, 10)), _planted(0.7, budgets=(20,)).iloc[:2]])
    fit = fit_scaling(rows, n_boot=30)
    sparse = fit.budgets[-1]
    assert sparse.macs_target == 20 and not sparse.interior and "too few" in sparse.reason
    assert fit.pooled.interior


def test_rows_without_macs_target_are_binned_by_macs() -> None:
    rows = _planted(0.7, budgets=(5, 10)).assign(macs_target=np.nan)
    budgets = assign_budgets(rows, (5, 10, 20))
    assert set(budgets) == {5.0, 10.0}
    fit = fit_scaling(rows, budgets=(5, 10, 20), n_boot=30)
    assert [b.macs_target for b in fit.budgets] == [5.0, 10.0]


def test_seeds_of_one_network_are_one_bootstrap_unit() -> None:
    rows = _planted(0.7, budgets=(5,), seeds=(0, 1))
    pts = prepare(rows)
    assert pts["network"].nunique() <= len(SHARES) and len(pts) == 2 * len(SHARES)
    fit = fit_scaling(rows, n_boot=30)
    assert fit.pooled.networks == pts["network"].nunique()


def test_bootstrap_is_seeded() -> None:
    rows = _planted(0.7, budgets=(5, 10))
    a, b = (fit_scaling(rows, n_boot=50, seed=7).pooled for _ in range(2))
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)


def test_reports_the_macs_spread_it_fitted_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _planted(0.7, budgets=(5, 10))
    rows["macs"] = (rows["macs_target"] * 1e9 * np.linspace(0.99, 1.02, len(rows))).round()
    fit = fit_scaling(rows, n_boot=20)
    assert fit.pooled.macs_ratio == pytest.approx((0.99, 1.02))
    low, high = fit.budgets[0].macs_ratio  # 5 GMACs: the first half of the rows
    assert low == pytest.approx(0.99) and high < 1.006
    out = fit.to_json()
    assert (out["pooled"]["macs_ratio_min"], out["pooled"]["macs_ratio_max"]) == pytest.approx(
        (0.99, 1.02)
    )
    write_results(rows, tmp_path / "tight")
    assert main(["fit-scaling", str(tmp_path / "tight" / "compound"), "--bootstrap", "20"]) == 0
    text = capsys.readouterr().out
    assert "0.990-1.020" in text and "warning" not in text
    rows["macs"] = rows["macs"] * np.where(rows["depth1"] > 10, 1.15, 0.92)  # RobustScaling's
    write_results(rows, tmp_path / "loose")  # whole widening factors, not budget-matched
    assert main(["fit-scaling", str(tmp_path / "loose" / "compound"), "--bootstrap", "20"]) == 0
    assert "warning: the networks' MACs range" in capsys.readouterr().out


def test_share_and_ratio() -> None:
    wrn = to_frame([make_row("x", 0, cw=0.5)])
    assert depth_share(wrn).iloc[0] == pytest.approx(12 / 42)
    assert share_ratio(0.7) == "7.0 : 3.0"


def test_cli_json_plot_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_results(_planted(0.7, budgets=(5, 10)), tmp_path / "results")
    png = tmp_path / "fit.png"
    args = ["fit-scaling", str(tmp_path / "results" / "compound"), "--bootstrap", "50"]
    assert main([*args, "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["pooled"]) >= {
        "depth_share",
        "ci_low",
        "ci_high",
        "interior",
        "ratio",
        "r2",
        "n",
    }
    assert [b["macs_target"] for b in out["budgets"]] == [5.0, 10.0]
    assert set(out["budgets"][0]) >= {
        "macs_target",
        "depth_share",
        "ci_low",
        "ci_high",
        "interior",
        "n",
        "r2",
    }
    assert abs(out["pooled"]["depth_share"] - 0.7) < 0.03
    assert png.stat().st_size > 10_000
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "pooled" in text and "sweeper scale --target-gmacs 10 --depth-share 0.7" in text
    assert main(["fit-scaling", str(tmp_path / "nowhere")]) == 2
    assert main([*args, "--metric", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_picks_the_scaling_sweep_of_a_results_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = pd.concat([_planted(0.7, budgets=(5, 10)), study_rows("normalization", seeds=(0,))])
    write_results(rows, tmp_path)
    assert main(["fit-scaling", str(tmp_path), "--json", "--bootstrap", "20"]) == 0
    captured = capsys.readouterr()
    compound = rows.loc[rows["sweep"] == "compound", "trial_id"].nunique()  # one file per id
    assert json.loads(captured.out)["pooled"]["n"] == compound
    assert "compound" in captured.err
    assert main(["fit-scaling", str(tmp_path), "--sweep", "normalization"]) == 2
    assert "distinct depth share" in capsys.readouterr().err
    write_results(study_rows("se", seeds=(0,)), tmp_path)
    assert main(["fit-scaling", str(tmp_path), "--sweep", "nope"]) == 2


def test_noise_without_curvature_claims_no_optimum() -> None:
    """Noise alone bends a fitted quadratic down half the time; no vertex may be claimed
    unless the curvature's bootstrap interval excludes zero."""
    claims = 0
    for seed in range(10):
        rows = _planted(0.7, seed=seed, curvature=0.0, noise=0.003)
        fit = fit_scaling(rows, n_boot=100, seed=seed)
        claims += fit.pooled.interior
        if not fit.pooled.interior:
            assert fit.pooled.depth_share is None and fit.pooled.reason
    assert claims == 0


def test_ci_keeps_resampled_maxima_beyond_the_shares() -> None:
    """A weak curve whose resampled maxima often fall past the data: the interval says so
    instead of being cut off at the largest sampled share."""
    fit = fit_scaling(
        _planted(0.7, budgets=(10,), seed=4, curvature=-0.05, noise=0.003), n_boot=200
    )
    opt = fit.budgets[0]
    assert opt.interior and opt.boot_interior < 0.95
    assert opt.ci_high > opt.share_range[1]


def test_pathological_metrics_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _planted(0.7, budgets=(5, 10))
    inf = base.copy()
    inf.loc[inf.index[0], "cw_acc"] = np.inf  # dropped like NaN, not a nan vertex
    assert fit_scaling(inf, n_boot=20).budgets[0].n == (base["macs_target"] == 5).sum() - 1
    flat = base.assign(cw_acc=0.5)  # no variation: no (rounding-error) optimum
    fit = fit_scaling(flat, n_boot=20)
    assert not any(o.interior for o in [fit.pooled, *fit.budgets])
    assert "does not vary" in fit.pooled.reason
    exact = pd.concat(
        [
            base[base["macs_target"] == 5].iloc[[0, 5]],
            base[base["macs_target"] == 10].iloc[[20, 25]],
        ]
    )
    with pytest.raises(SweeperError, match="no residual"):  # 4 points, 4 coefficients
        fit_scaling(exact)
    cases = {
        "nullcol": base.assign(cw_acc=None),
        "nobudget": base.assign(macs_target=np.nan, macs=None),
        "nodepth": base.assign(depth1=None),
    }
    for name, rows in cases.items():
        write_results(rows, tmp_path / name)
        assert main(["fit-scaling", str(tmp_path / name / "compound")]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert main(["fit-scaling", str(tmp_path / "nullcol" / "compound"), "--metric", "block"]) == 2
    assert "not a numeric column" in capsys.readouterr().err


def test_cli_unwritable_plot_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_results(_planted(0.7, budgets=(5, 10)), tmp_path / "results")
    (tmp_path / "file").write_text("not a folder")
    args = ["fit-scaling", str(tmp_path / "results" / "compound"), "--bootstrap", "0"]
    assert main([*args, "--plot", str(tmp_path / "file" / "fit.png")]) == 2  # was a traceback
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --plot") and "\n" not in err, err
