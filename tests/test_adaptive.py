"""`run --order adaptive` without Ray: the surrogate, the choice rule and the status summary,
on planted depth studies (sweeper.analysis.synthetic) whose best cell is known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sweeper.analysis import synthetic
from sweeper.economics.adaptive import AdaptiveOrder
from sweeper.economics.match import identity_leaves
from sweeper.economics.surrogate import (
    Surrogate,
    cells_from_leaves,
    conclusion,
    cv_rank_correlation,
)
from sweeper.results.summary import read_summary, write_summary

VALUES = (2, 3, 5, 9, 11)  # 125 cells: a small depth study


@pytest.fixture(scope="module")
def grid() -> tuple[list[dict], np.ndarray, int]:
    rows = synthetic.depth_grid_rows(VALUES, seed=0)
    truth = [synthetic.planted_depth_cw(d) for d in rows[["depth1", "depth2", "depth3"]].values]
    return (
        [identity_leaves(c) for c in rows["config"]],
        rows["cw_acc"].to_numpy(),
        int(np.argmax(truth)),
    )


def test_features_and_factors_are_the_varying_architecture(grid: tuple) -> None:
    leaves, _, _ = grid
    cells = cells_from_leaves(leaves)
    assert list(cells.factors) == ["depth1", "depth2", "depth3"] and cells.features == list(
        cells.factors
    )
    assert cells.x.shape == (125, 3) and np.allclose(cells.x.mean(axis=0), 0)
    assert cells.labels[0] == "depth1=2, depth2=2, depth3=2"
    mixed = cells_from_leaves(
        [{"seed": s, "arch.activation.0": a, "arch.activation.1": a, "train.lr": lr}
         for s, a, lr in [(0, "relu", 0.1), (1, "silu", 0.1), (0, "gelu", 0.2)]]
    )  # fmt: skip
    assert list(mixed.factors) == ["activation", "train.lr"]  # seed dropped, stages merged
    assert mixed.features == ["activation='gelu'", "activation='relu'", "activation='silu'",
                              "train.lr"]  # fmt: skip


def test_adaptive_order_reaches_the_planted_best_early(grid: tuple) -> None:
    """125 cells; a random order needs 63 on median to reach one given cell."""
    leaves, y, best = grid
    order = AdaptiveOrder(leaves, seed=0)
    started = []
    while best not in started and len(started) < 40:
        started.append(order.next())
        order.observe(started[-1], y[started[-1]])
    assert best in started and len(started) <= 31  # at most a quarter of the grid


def test_every_cell_runs_once_unless_stopped(grid: tuple) -> None:
    leaves, y, _ = grid
    order = AdaptiveOrder(leaves[:20], initial=14, seed=0)
    seen = []
    first, second = order.next(), order.next()
    assert first != second and order.running == {first, second}  # running cells not repeated
    order.drop(first)  # a failed trial: no data point, never suggested again
    order.observe(second, y[second])
    seen += [first, second]
    while (cell := order.next()) is not None:
        seen.append(cell)
        order.observe(cell, y[cell])
    assert sorted(seen) == list(range(20)) and order.next() is None
    assert len(order.observed) == 19


def test_start_is_space_filling(grid: tuple) -> None:
    leaves, _, _ = grid
    order = AdaptiveOrder(leaves, seed=0)
    start = [order.next() for _ in range(order.initial)]
    depths = {leaves[c]["arch.depths.0"] for c in start}
    assert leaves[start[0]]["arch.depths.0"] == 5  # the centre first
    assert {2, 11} <= depths  # then the extremes
    fresh = AdaptiveOrder(leaves, seed=0)
    assert [fresh.next() for _ in range(fresh.initial)] == start  # the same seed, the same start


def test_surrogate_ranks_and_concludes(grid: tuple) -> None:
    leaves, y, best = grid
    cells = cells_from_leaves(leaves)
    index = sorted(np.random.default_rng(0).choice(125, 30, replace=False))
    rho = cv_rank_correlation(cells, index, y[index])
    assert rho is not None and rho > 0.8
    mu, sd = Surrogate(cells).fit(index, y[index]).predict()
    assert np.corrcoef(mu, y)[0, 1] > 0.9 and (sd > 0).all()
    found = conclusion(cells, index, y[index], samples=200, bags=2)
    assert 0 <= found["best"]["probability"] <= found["top5_probability"] <= 1
    assert [f["factor"] for f in found["factors"]] == ["depth1", "depth2", "depth3"]
    worst = conclusion(cells, index, y[index], mode="min", samples=200, bags=2)
    assert worst["best"]["cell"] != found["best"]["cell"] and worst["best"]["predicted"] < 0.48


def test_summary_round_trip(grid: tuple, tmp_path: Path) -> None:
    leaves, y, _ = grid
    order = AdaptiveOrder(leaves, seed=0)
    assert order.summary()["cv_spearman"] is None  # nothing finished: counts only
    for _ in range(order.initial):  # the space-filling start: no GP fitted yet
        cell = order.next()
        order.observe(cell, y[cell])
    summary = order.summary(samples=100, bags=2)
    assert summary["finished"] == order.initial and summary["cells"] == 125
    assert summary["risk"] == pytest.approx(1 - summary["best"]["probability"])
    write_summary(str(tmp_path / "depth"), {"sweep": "depth", **summary})
    assert read_summary(str(tmp_path / "depth"))["best"] == json.loads(json.dumps(summary["best"]))
    assert read_summary(str(tmp_path / "other")) is None


def test_bench_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import adaptive_order

    argv = ["--seeds", "1", "--values", "2,11", "--every", "4", "--json"]  # 8 cells
    assert adaptive_order.main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["cells"] == 8 and record["best_cell"] == [11, 11, 2]
    assert 1 <= record["adaptive_best"] <= 8 and 1 <= record["random_best"] <= 8
