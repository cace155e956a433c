"""Adaptive vs random order on a depth study with a known answer (`run --order adaptive`).

The table is `sweeper.analysis.synthetic.depth_grid_rows`: every cell of the depth study's
D1 x D2 x D3 grid (7^3 = 343 cells by default) with a planted optimum at 9 : 9 : 4.3 blocks
(the paper's 2:2:1 split; best cell D = 9/9/4) plus Gaussian seed noise of 0.3 points.
For each seed the same noisy table is run in two orders, `concurrency` trials at a time:
- adaptive: `sweeper.economics.adaptive.AdaptiveOrder`, the rule `run --order adaptive` uses;
- random: a seeded shuffle (what a grid run in arbitrary order gives).
Recorded per order: `best`, the cells started up to and including the planted best cell,
and `ratio`, the cells finished when the surrogate's predicted best cell first has the
planted stage split (each stage's share of the blocks within 0.05 of 9:9:4.3's), checked
every `--every` cells (the same GP for both orders; only the order differs).

    python bench/adaptive_order.py                     # 10 seeds, the full depth grid
    python bench/adaptive_order.py --seeds 2 --values 2,5,11 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from sweeper.analysis.synthetic import (
    DEPTH_OPTIMUM,
    DEPTH_VALUES,
    depth_grid_rows,
    planted_depth_cw,
)
from sweeper.economics.adaptive import AdaptiveOrder
from sweeper.economics.match import identity_leaves
from sweeper.economics.surrogate import Surrogate

RATIO_TOLERANCE = 0.05


def _split(depths: np.ndarray) -> np.ndarray:
    return depths / depths.sum(axis=-1, keepdims=True)


def simulate(
    next_cell: Callable[[], int | None],
    observe: Callable[[int, float], None],
    y: np.ndarray,
    best: int,
    concurrency: int,
    ratio_ok: Callable[[list[int]], bool],
    every: int,
) -> dict[str, int | None]:
    """Run cells `concurrency` at a time (first started, first finished) until the planted
    best has started and the ratio is recovered (or the grid is done)."""
    running: deque[int] = deque()
    started = finished = 0
    found: dict[str, int | None] = {"best": None, "ratio": None}
    done: list[int] = []
    while found["best"] is None or found["ratio"] is None:
        while len(running) < concurrency:
            cell = next_cell()
            if cell is None:
                break
            running.append(cell)
            started += 1
            if cell == best and found["best"] is None:
                found["best"] = started
        if not running:
            break
        cell = running.popleft()
        observe(cell, float(y[cell]))
        done.append(cell)
        finished += 1
        if found["ratio"] is None and finished % every == 0 and ratio_ok(done):
            found["ratio"] = finished
    return found


def run_seed(seed: int, values: tuple[int, ...], concurrency: int, every: int
             ) -> dict[str, object]:  # fmt: skip
    rows = depth_grid_rows(values, seed=seed)
    y = rows["cw_acc"].to_numpy(float)
    depths = rows[["depth1", "depth2", "depth3"]].to_numpy(float)
    truth = np.array([planted_depth_cw(d) for d in depths])
    best = int(truth.argmax())
    target = _split(np.asarray(DEPTH_OPTIMUM))
    leaves = [identity_leaves(c) for c in rows["config"]]
    out: dict[str, object] = {"seed": seed, "cells": len(y), "best_cell": depths[best].tolist()}

    def ratio_ok_for(cells: object) -> Callable[[list[int]], bool]:
        def ratio_ok(done: list[int]) -> bool:
            if len(done) < 3:
                return False
            model = Surrogate(cells, seed).fit(done, y[done])  # type: ignore[arg-type]
            predicted = int(np.argmax(model.predict()[0]))
            return bool(np.abs(_split(depths[predicted]) - target).max() <= RATIO_TOLERANCE)

        return ratio_ok

    order = AdaptiveOrder(leaves, seed=seed)
    t0 = time.perf_counter()
    adaptive = simulate(order.next, order.observe, y, best, concurrency,
                        ratio_ok_for(order.cells), every)  # fmt: skip
    out["adaptive_seconds"] = round(time.perf_counter() - t0, 1)
    shuffled = iter(np.random.default_rng(1000 + seed).permutation(len(y)).tolist())
    random = simulate(lambda: next(shuffled, None), lambda c, v: None, y, best, concurrency,
                      ratio_ok_for(order.cells), every)  # fmt: skip
    out.update({f"adaptive_{k}": v for k, v in adaptive.items()})
    out.update({f"random_{k}": v for k, v in random.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--values", default=",".join(map(str, DEPTH_VALUES)))
    parser.add_argument("--concurrency", type=int, default=4, help="trials running at once")
    parser.add_argument("--every", type=int, default=5, help="cells between ratio checks")
    parser.add_argument("--json", action="store_true", help="one JSON record per seed")
    args = parser.parse_args(argv)
    values = tuple(int(v) for v in args.values.split(","))
    records = []
    for seed in range(args.seeds):
        record = run_seed(seed, values, args.concurrency, args.every)
        records.append(record)
        if args.json:
            print(json.dumps(record), flush=True)
    if args.json:
        return 0
    print(f"grid {len(values)}^3 = {records[0]['cells']} cells, planted best cell "
          f"D = {'/'.join(f'{v:g}' for v in records[0]['best_cell'])}, "
          f"{args.concurrency} trials at a time\n")  # fmt: skip
    print("| seed | adaptive: best reached | random: best reached | adaptive: ratio | "
          "random: ratio |")  # fmt: skip
    print("|---|---|---|---|---|")
    for r in records:
        print(f"| {r['seed']} | {r['adaptive_best']} | {r['random_best']} | "
              f"{r['adaptive_ratio']} | {r['random_ratio']} |")  # fmt: skip

    def median(key: str) -> float:
        return float(np.median([r[key] if r[key] is not None else np.inf for r in records]))

    print(f"| median | {median('adaptive_best'):g} | {median('random_best'):g} | "
          f"{median('adaptive_ratio'):g} | {median('random_ratio'):g} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
