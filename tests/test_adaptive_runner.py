"""Study economics on a local Ray instance: `--order adaptive` (the Tune Searcher) runs every
cell once in the surrogate's order and leaves a summary for `sweeper status`; `--subsample`
runs exactly K cells of a cheap sweep at another fidelity and reruns nothing done. Trials are
stand-ins (planted accuracies, no training)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import log_dir, tiny_space

ray = pytest.importorskip("ray")

from test_subsample import AXES  # noqa: E402  (a 12-cell grid of tiny networks)

from sweeper import results  # noqa: E402
from sweeper.cli import main  # noqa: E402
from sweeper.config import TrialConfig  # noqa: E402
from sweeper.economics.subsample import subsample_selector  # noqa: E402
from sweeper.schema import empty_row  # noqa: E402
from sweeper.space import expand, load  # noqa: E402
from sweeper.sweep.runner import RunOptions, _init_ray, run_sweep  # noqa: E402

LOG_DIR = log_dir("sweeper-test-economics-")  # captured by value in the workers


def planted_trial(config: TrialConfig, *, checkpoint_dir: str | None = None,
                  on_epoch: Any = None, catch: bool = True,
                  weights_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Looks like run_trial: best at depth1 3 with SiLU, a little better with more epochs."""
    from sweeper.trial import config_columns

    with open(os.path.join(LOG_DIR, f"{config.sweep}.log"), "a") as handle:
        handle.write(f"{config.trial_id}\n")
    effect = {"relu": 0.0, "silu": 0.03, "gelu": -0.02}[config.arch.activation[0]]
    cw = 0.5 - 0.02 * (config.arch.depths[0] - 3) ** 2 + effect + 0.001 * config.train.epochs
    row = empty_row()
    now = datetime.now(timezone.utc)
    row.update(config_columns(config), status="ok", clean_acc=cw + 0.3, pgd_acc=cw + 0.02,
               cw_acc=cw, started_at=now, ended_at=now)  # fmt: skip
    return row


def started(sweep: str) -> list[str]:
    path = Path(LOG_DIR) / f"{sweep}.log"
    return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[None]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    assert _init_ray(RunOptions(), num_cpus=2)
    yield
    ray.shutdown()


def space_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(tiny_space(name, AXES))
    return path


def test_adaptive_order_runs_every_cell_once_and_leaves_a_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "r"
    opts = RunOptions(results=str(root), progress=False, order="adaptive", max_concurrent=2)
    summary = run_sweep(load(space_file(tmp_path, "adapt")), opts, trial_fn=planted_trial)
    assert summary.started == 12 and len(summary.rows) == 12
    assert sorted(started("adapt")) == sorted(summary.rows["trial_id"])  # each cell once
    assert run_sweep(load(space_file(tmp_path, "adapt")), opts, trial_fn=planted_trial).started == 0
    assert main(["status", str(root / "adapt"), "--json"]) == 0
    adaptive = json.loads(capsys.readouterr().out)["adapt"]["adaptive"]
    assert adaptive["finished"] == adaptive["cells"] == 12
    assert adaptive["best"]["cell"] == "activation=silu, depth1=3" and adaptive["cv_spearman"] > 0.5
    assert main(["status", str(root)]) == 0
    text = capsys.readouterr().out
    assert "adaptive order" in text and "predicted best: activation=silu, depth1=3" in text


def test_subsample_runs_k_cells_at_the_new_fidelity_once(tmp_path: Path) -> None:
    root = tmp_path / "r"
    opts = RunOptions(results=str(root), progress=False)
    for config in expand(load(space_file(tmp_path, "sub"))):  # the cheap sweep, already run
        results.write_row(str(root / "sub"), planted_trial(config))
    high = load(space_file(tmp_path, "sub"), ["train.epochs=3"], sweep="sub-e3")
    select = subsample_selector(str(root / "sub"), 4, metric="cw_acc", seed=0, study="sub")
    first = run_sweep(high, opts, trial_fn=planted_trial, select=select)
    assert first.started == 4 and len(first.rows) == 4 and len(started("sub-e3")) == 4
    assert set(first.rows["epochs"]) == {3} and set(first.rows["study"]) == {"sub"}
    again = run_sweep(high, opts, trial_fn=planted_trial, select=select)
    assert again.started == 0 and len(started("sub-e3")) == 4
    assert main(["fidelity", str(root / "sub"), str(root / "sub-e3"), "--bootstrap", "100"]) == 0
