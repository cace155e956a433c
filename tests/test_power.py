"""The power figures of a dry run: what they say holds when experiments are simulated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sweeper.analysis.power import (
    ALPHA,
    DEFAULT_SEED_SD,
    Spread,
    cell_se,
    detectable_difference,
    spread_from_rows,
    study_power,
)
from sweeper.config import TrialConfig
from sweeper.space import expand, load

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def _detected(diff: float, *, n: int, seeds: int, seed_sd: float, p: float,
              trials: int, rng: np.random.Generator) -> float:  # fmt: skip
    """Share of simulated two-cell experiments whose z-test (alpha 0.05, two-sided) finds
    the planted difference: every trial draws a seed effect, then scores n images."""
    means = []
    for true in (p, p + diff / 100):
        effect = rng.normal(0.0, seed_sd / 100, size=(trials, seeds))
        acc = rng.binomial(n, np.clip(true + effect, 0, 1)) / n
        means.append(100 * acc.mean(axis=1))
    z = (means[1] - means[0]) / (math.sqrt(2) * cell_se(n, seeds, seed_sd, p))
    return float(np.mean(np.abs(z) > stats.norm.ppf(1 - ALPHA / 2)))


@pytest.mark.parametrize(("n", "seeds", "seed_sd"), [(1000, 1, 0.5), (10_000, 3, 0.5),
                                                      (1000, 3, 2.0)])  # fmt: skip
def test_planted_differences_of_the_detectable_size_are_found_80_percent_of_the_time(
    n: int, seeds: int, seed_sd: float
) -> None:
    """4000 simulated experiments per case (seeded): the rate's own standard error is 0.6
    points, so 0.75-0.85 holds unless the figure is wrong; no difference: ~5%."""
    rng = np.random.default_rng(20)
    d = detectable_difference(n, seeds, seed_sd, 0.5)
    assert d is not None
    assert 0.75 < _detected(d, n=n, seeds=seeds, seed_sd=seed_sd, p=0.5, trials=4000,
                            rng=rng) < 0.85  # fmt: skip
    assert _detected(0.0, n=n, seeds=seeds, seed_sd=seed_sd, p=0.5, trials=4000, rng=rng) < 0.08
    # half the difference is found far less often: the figure is the smallest, not a bound
    assert _detected(d / 2, n=n, seeds=seeds, seed_sd=seed_sd, p=0.5, trials=4000,
                     rng=rng) < 0.4  # fmt: skip


def test_ten_times_the_autoattack_images_shrinks_its_figure_by_about_sqrt_10() -> None:
    """Assumption stated: the seed spread (0.1 points here) is small beside the binomial
    spread of AutoAttack at both sizes (1.6 points on 1000 images, 0.5 on 10000), so the
    images dominate; with no seed spread at all the ratio is exactly sqrt(10). With the
    0.5-point default the seed spread matters at 10000 images and the ratio is smaller.
    Clean/PGD/CW (the whole test split) do not move."""
    quiet = Spread(seed_sd=dict.fromkeys(("clean_acc", "pgd_acc", "cw_acc", "aa_acc"), 0.1))
    small_study = expand(load(SPACES / "normalization.yaml"))
    big_study = expand(load(SPACES / "normalization.yaml", ("eval.aa_size=10000",)))
    small = study_power(small_study, quiet)["detectable_difference"]
    big = study_power(big_study, quiet)["detectable_difference"]
    assert abs(small["aa_acc"] / big["aa_acc"] / math.sqrt(10) - 1) < 0.03
    assert small["cw_acc"] == big["cw_acc"]
    exact = detectable_difference(1000, 3, 0.0, 0.5), detectable_difference(10_000, 3, 0.0, 0.5)
    assert exact[0] / exact[1] == pytest.approx(math.sqrt(10))
    default = [study_power(c)["detectable_difference"]["aa_acc"] for c in (small_study,
                                                                           big_study)]  # fmt: skip
    assert 2.0 < default[0] / default[1] < math.sqrt(10)


def test_the_figures_follow_the_study_sizes() -> None:
    """One seed (depth) resolves less than three (normalization); no AutoAttack: no figure."""
    configs = expand(load(SPACES / "normalization.yaml"))
    three = study_power(configs)
    one = study_power([c for c in configs if c.seed == 0])
    assert three["power"]["seeds_per_cell"] == 3 and one["power"]["seeds_per_cell"] == 1
    for m, d in three["detectable_difference"].items():
        assert one["detectable_difference"][m] == pytest.approx(d * math.sqrt(3), rel=0.01)
    none = study_power(expand(load(SPACES / "normalization.yaml", ("eval.aa_size=0",))))
    assert none["detectable_difference"]["aa_acc"] is None


def test_seed_spread_is_read_from_earlier_rows() -> None:
    """Rows with a planted 1.5-point seed spread (plus binomial noise of their 10000 test
    images) give back about 1.5 points; one seed per cell cannot say: the default."""
    rng = np.random.default_rng(3)
    rows = []
    for cell in range(30):
        for seed in range(3):
            cfg = TrialConfig(arch={"preset": "wrn-28-10", "depths": [1 + cell % 5] * 3},
                              train={"beta": 1.0 + cell}, seed=seed)  # fmt: skip
            p = 0.5 + rng.normal(0, 0.015)
            acc = rng.binomial(10_000, p) / 10_000
            rows.append({"config": cfg.model_dump_json(), "status": "ok", "cw_acc": acc})
    frame = pd.DataFrame(rows)
    spread = spread_from_rows(frame)
    assert 1.1 < spread.seed_sd["cw_acc"] < 1.9 and spread.source["cw_acc"].startswith("rows")
    assert spread.seed_sd["aa_acc"] == DEFAULT_SEED_SD  # no aa_acc column: the default
    first = frame.iloc[::3]
    assert spread_from_rows(first).source["cw_acc"] == "default"
    stated = study_power(expand(load(SPACES / "normalization.yaml")), spread)
    assert stated["power"]["seed_sd_from"]["cw_acc"].startswith("rows")
    default = study_power(expand(load(SPACES / "normalization.yaml")), Spread())
    assert stated["detectable_difference"]["cw_acc"] > default["detectable_difference"]["cw_acc"]


def test_dry_run_json_holds_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sweeper.cli import main

    args = ["run", str(SPACES / "normalization.yaml"), "--dry-run", "--json"]
    assert main([*args, "--results", str(tmp_path)]) == 0
    listing = json.loads(capsys.readouterr().out)
    figures = listing["detectable_difference"]
    assert set(figures) == {"clean_acc", "pgd_acc", "cw_acc", "aa_acc"}
    assert figures["aa_acc"] > figures["cw_acc"] > 0  # 1000 AutoAttack images, 10000 for CW
    assert listing["power"]["seeds_per_cell"] == 3


def test_report_marks_the_contrasts_the_sweep_resolves(tmp_path: Path) -> None:
    """Synthetic normalization rows (planted effects of a few points, 0.3-point noise): the
    report says which variants' difference from the baseline reaches the figure."""
    from sweeper.analysis.report import write_report
    from sweeper.analysis.synthetic import study_rows, write_results

    rows = study_rows("normalization")
    write_results(rows, tmp_path / "res")
    text = write_report(tmp_path / "res", tmp_path / "out", bootstrap=0).read_text()
    assert "Resolved: a variant whose Δcw_acc from the baseline is at least" in text
    header = next(line for line in text.splitlines() if line.startswith("| variant"))
    assert header.rstrip(" |").endswith("resolved")
    table = [line for line in text.splitlines() if line.startswith("| norm=")]
    marks = [line.rstrip(" |").rsplit("|", 1)[1].strip() for line in table]
    assert set(marks) <= {"baseline", "no", "yes"} and marks.count("baseline") == 1
    assert "yes" in marks  # the planted norm effects are several points


def test_dry_run_from_an_earlier_sweep_uses_its_seed_spread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --dry-run --from RESULTS/SWEEP` (no --subsample): the figures rest on that
    sweep's seed spread; a missing sweep is a one-line error."""
    from sweeper.analysis.synthetic import study_rows, write_results
    from sweeper.cli import main

    write_results(study_rows("normalization", noise=0.02), tmp_path / "old")
    args = ["run", str(SPACES / "normalization.yaml"), "--dry-run", "--json",
            "--results", str(tmp_path / "new")]  # fmt: skip
    assert main([*args, "--from", str(tmp_path / "old" / "normalization")]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["power"]["seed_sd_from"]["cw_acc"].startswith("rows")
    assert listing["power"]["seed_sd"]["cw_acc"] > 1.0  # the planted 2-point noise
    assert main([*args]) == 0
    default = json.loads(capsys.readouterr().out)
    assert default["detectable_difference"]["cw_acc"] < listing["detectable_difference"]["cw_acc"]
    assert main([*args, "--from", str(tmp_path / "nowhere")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
