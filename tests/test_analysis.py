"""Tables (factors, means, CIs, baseline deltas) and the report, on generated rows only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.analysis import tables  # noqa: E402
from sweeper.analysis.report import write_report  # noqa: E402
from sweeper.analysis.synthetic import (  # noqa: E402
    SYNTHETIC_DEVICE,
    make_row,
    scaling_rows,
    study_rows,
    to_frame,
    write_results,
)
from sweeper.cli import main  # noqa: E402


def _activation_example() -> pd.DataFrame:
    """relu: 3 seeds at 50/52/54 %; silu: 2 seeds at 55/57 %; one failed gelu row."""
    rows = [
        make_row("act", s, arch={"activation": "relu"}, cw=c)
        for s, c in enumerate([0.50, 0.52, 0.54])
    ]
    rows += [
        make_row("act", s, arch={"activation": "silu"}, cw=c) for s, c in enumerate([0.55, 0.57])
    ]
    failed = make_row("act", 0, arch={"activation": "gelu"}, cw=0.0)
    failed.update(status="failed", error="RuntimeError: boom", cw_acc=None)
    return to_frame([*rows, failed])


def test_means_cis_and_deltas_by_hand() -> None:
    rows = _activation_example()
    assert tables.study_factors(rows) == ["activation"]  # gelu only failed: not a variant
    table = tables.variant_table(rows)
    assert list(table.index) == ["relu", "silu"]
    relu, silu = table.loc["relu"], table.loc["silu"]
    assert relu["n"] == 3 and relu["cw_acc"] == pytest.approx(0.52)
    # t(0.975, 2) * sd / sqrt(n) = 4.303 * 0.02 / sqrt(3) (quantiles as published: 4 digits)
    assert relu["cw_acc_ci"] == pytest.approx(4.303 * 0.02 / np.sqrt(3), rel=1e-4)
    sd = np.std([0.55, 0.57], ddof=1)
    assert silu["cw_acc_ci"] == pytest.approx(12.706 * sd / np.sqrt(2), rel=1e-4)
    assert bool(relu["baseline"]) and not bool(silu["baseline"])
    assert silu["cw_acc_delta"] == pytest.approx(0.56 - 0.52)
    assert relu["cw_acc_delta"] == 0
    assert silu["pgd_acc_delta"] == pytest.approx(silu["pgd_acc"] - relu["pgd_acc"])
    assert relu["params"] == rows["params"].iloc[0] and relu["macs"] > 5e9
    view = tables.percent_view(table)
    assert view.loc["activation=relu *", "cw"] == "52.00 ± 4.97"
    assert view.loc["activation=silu", "Δcw"] == "+4.00"


def test_single_seed_has_no_interval() -> None:
    norms = ("batchnorm", "groupnorm")
    rows = to_frame([make_row("a", 0, arch={"norm": n}, cw=0.5) for n in norms])
    table = tables.variant_table(rows)
    assert table["cw_acc_ci"].isna().all()
    assert "±" not in tables.to_markdown(tables.percent_view(table))


def test_baseline_is_the_wrn_default_else_the_most_common_variant() -> None:
    rows = study_rows("normalization", seeds=(0,))
    assert tables.variant_table(rows)["baseline"].idxmax() == "batchnorm"
    no_default = to_frame(
        [make_row("k", s, arch={"kernel_size": [5, 5, 7]}, cw=0.5) for s in range(2)]
        + [make_row("k", 0, arch={"kernel_size": [7, 7, 7]}, cw=0.5)]
    )
    table = tables.variant_table(no_default)
    assert table["baseline"].idxmax() == "5/5/7"  # two rows beat one


DEPTHS_WIDTHS = ["depth1", "depth2", "depth3", "width1", "width2", "width3"]


def test_factor_detection() -> None:
    assert tables.study_factors(study_rows("block_topology", seeds=(0,))) == [
        "block",
        "activation_order",
    ]
    assert tables.study_factors(study_rows("se", seeds=(0,))) == ["se", "se_reduction"]
    assert tables.study_factors(study_rows("depth")) == ["depth1", "depth2", "depth3"]
    assert tables.study_factors(study_rows("width")) == ["width1", "width2", "width3"]
    compound = scaling_rows((5, 10), np.arange(0.3, 0.91, 0.1))
    assert tables.study_factors(compound) == ["macs_target", "depth_share"]
    # widths matched to a budget (the config's macs_target says so) are consequences of the
    # block, not factors of their own
    matched = to_frame(
        [
            make_row("m", 0, arch={"block": "basic", "widths": [10, 10, 10]}, cw=0.5,
                     macs_target=5.0),
            make_row("m", 0, arch={"block": "bottleneck", "widths": [7.3, 7.3, 7.3]}, cw=0.5,
                     macs_target=5.0),
        ]
    )  # fmt: skip
    assert tables.study_factors(matched) == ["block"]
    assert tables.variant_table(matched).loc["bottleneck", "arch"] == "D 4/4/4, W 7.3/7.3/7.3"
    # a depth x width grid with a width below 1 is a grid: nothing derived from a budget
    grid = to_frame([make_row("g", seed, arch={"depths": [d] * 3, "widths": [w] * 3}, cw=0.5)
                     for d in (1, 2) for w in (0.5, 1.0) for seed in (0, 1)])  # fmt: skip
    assert tables.study_factors(grid) == DEPTHS_WIDTHS
    assert len(tables.variant_table(grid)) == 4
    # a depth sweep whose widths were fitted to one budget: the depths stay its factors
    fitted = to_frame([make_row("f", 0, arch={"depths": [d] * 3, "widths": [w] * 3}, cw=0.5,
                                macs_target=5.0) for d, w in ((2, 7.1), (4, 5.2))])  # fmt: skip
    assert tables.study_factors(fitted) == ["depth1", "depth2", "depth3"]
    # a setting that moves in lockstep with a column factor adds nothing
    lockstep = to_frame(
        [
            make_row("c", 0, arch={"conv_type": "standard", "cardinality": 1}, cw=0.5),
            make_row("c", 0, arch={"conv_type": "aggregated", "cardinality": 4}, cw=0.5),
        ]
    )
    assert tables.study_factors(lockstep) == ["conv_type"]


def test_load_reads_one_sweep_or_many_and_skips_checkpoints(tmp_path: Path) -> None:
    rows = pd.concat([study_rows("se", seeds=(0,)), study_rows("normalization", seeds=(0, 1))])
    write_results(rows, tmp_path)
    (tmp_path / "se" / "_checkpoints" / "x").mkdir(parents=True)
    (tmp_path / "se" / "_checkpoints" / "x" / "junk.parquet").write_text("not parquet")
    both = tables.load(tmp_path)
    assert len(both) == len(rows) and set(both["sweep"]) == {"se", "normalization"}
    assert len(tables.load(tmp_path / "se")) == 6
    summary = tables.summarize(both)
    assert list(summary["sweep"]) == ["normalization", "se"]
    assert summary.set_index("sweep").loc["normalization", "baseline"] == "norm=batchnorm"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    frames = [
        study_rows("block_topology", rng=rng),
        study_rows("depth", rng=rng),
        scaling_rows((5, 10, 20), np.arange(0.3, 0.91, 0.05), rng=rng),
    ]
    rows = pd.concat(frames, ignore_index=True)
    failed = rows.iloc[[0]].assign(
        status="failed", error="RuntimeError: diverged", cw_acc=np.nan, trial_id="f" * 16
    )
    write_results(pd.concat([rows, failed], ignore_index=True), root)
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(root), "--out", str(out), "--bootstrap", "50"]) == 0
    return out


def test_report_renders(report_dir: Path) -> None:
    text = (report_dir / "report.md").read_text()
    assert "SYNTHETIC" in text and SYNTHETIC_DEVICE in text
    for heading in (
        "## Overview",
        "## block_topology",
        "## depth",
        "## compound",
        "### Compound scaling",
    ):
        assert heading in text
    assert "| variant | n | clean | Δclean |" in text
    assert "block=basic, activation_order=pre *" in text
    assert "RuntimeError: diverged" in text
    for png in (
        "factor_effects",
        "acc_vs_macs",
        "block_topology_variants",
        "depth_depth",
        "compound_scaling",
    ):
        assert (report_dir / f"{png}.png").stat().st_size > 10_000
        assert f"({png}.png)" in text
    assert (report_dir / "depth_variants.csv").is_file()


def test_report_of_one_sweep_folder(tmp_path: Path) -> None:
    write_results(study_rows("normalization"), tmp_path / "res")
    out = write_report(tmp_path / "res" / "normalization", tmp_path / "out", bootstrap=0)
    text = out.read_text()
    assert "## normalization" in text and "norm=batchnorm *" in text
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2


def test_report_with_a_metric_that_was_not_measured(tmp_path: Path) -> None:
    rows = study_rows("depth").assign(aa_acc=np.nan, aa_n=0)
    out = write_report(rows, tmp_path, metric="aa_acc", bootstrap=0)
    assert "No aa_acc values" in out.read_text()
    assert not list(tmp_path.glob("*.png"))


def test_demo_without_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's --synthetic path (the real one runs the smoke sweep on Ray: minutes)."""
    from sweeper.analysis import demo

    assert demo.main(["--synthetic", "--out", str(tmp_path), "--bootstrap", "0"]) == 0
    assert "FAKE" in capsys.readouterr().out
    assert (tmp_path / "report" / "compound_scaling.png").is_file()


def test_t_quantile() -> None:
    # published two-sided 95% values: t(0.975, 1) = 12.706, 2 -> 4.303, 30 -> 2.042, 60 -> 2.000
    assert tables.t975(1) == pytest.approx(12.706, abs=5e-4)
    assert tables.t975(2) == pytest.approx(4.303, abs=5e-4)
    assert tables.t975(30) == pytest.approx(2.042, abs=5e-4)
    assert tables.t975(60) == pytest.approx(2.000, abs=5e-4)
    assert 1.96 < tables.t975(1000) < 1.963  # towards the normal's 1.960, from above
    assert math.isnan(tables.t975(0))


def test_no_baseline_deltas_across_budgets() -> None:
    """Compound scaling: a 40-GMACs network minus a 5-GMACs one is the budget, not a factor."""
    from sweeper.analysis import plots

    compound = scaling_rows((5, 40), np.arange(0.3, 0.91, 0.1))
    rows = pd.concat([compound, study_rows("normalization", seeds=(0, 1))])
    line = tables.summarize(rows).set_index("sweep").loc["compound"]
    assert line["baseline"] == "-" and pd.isna(line["best_delta"])
    fig = plots.factor_effects(rows)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(labels) == 1 and labels[0].startswith("normalization")


def test_scaling_figure_names_budgets_in_gmacs() -> None:
    from sweeper.analysis import plots
    from sweeper.analysis.scaling import fit_scaling

    fit = fit_scaling(scaling_rows((5, 10), np.arange(0.3, 0.91, 0.05)), n_boot=20)
    pooled = plots.scaling_figure(fit).axes[-1]
    assert [t.get_text() for t in pooled.get_legend().get_texts()] == ["5 GMACs", "10 GMACs"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--metric", "depth1"], "--metric: expected one of"), (["--out", "FILE"], "--out")],
)
def test_report_bad_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    write_results(study_rows("normalization"), tmp_path / "res")
    (tmp_path / "FILE").write_text("a file, not a folder")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "o")]
    assert main(["report", str(tmp_path / "res"), *out, *args]) == 2  # was a traceback
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err, err
