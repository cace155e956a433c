"""Sweeps on a simulated two-node Ray cluster with fractional GPUs: every trial runs exactly
once, running the same command again runs nothing, and in a sweep that mixes trial sizes a big
trial never waits behind small trials that came after it (sweeper.sweep.admission says how Ray
places both kinds)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import log_dir

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from sweeper.config import TrialConfig  # noqa: E402
from sweeper.schema import empty_row  # noqa: E402
from sweeper.space import load  # noqa: E402
from sweeper.sweep.runner import RunOptions, run_sweep  # noqa: E402
from sweeper.sweep.workers import BACKEND_ENV  # noqa: E402

LOG = os.path.join(log_dir("sweeper-test-cluster-"), "runs.log")
STARTS = os.path.join(os.path.dirname(LOG), "starts.log")

SPACE = """
sweep: cluster
base:
  arch: {block: basic, depths: [1, 1, 1], widths: [0.25, 0.25, 0.25]}
  data: {dataset: synthetic, image_size: 8}
  train: {epochs: 1}
  eval: {aa_size: 0}
axes:
  - grid:
      arch.activation: [relu, gelu, silu]
seeds: [0, 1]
"""


def gpu_trial(config: TrialConfig, *, checkpoint_dir: str | None = None, on_epoch: Any = None,
              catch: bool = True, weights_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Records which node ran it and the GPU share Ray gave it; needs no real GPU."""
    from sweeper.trial import config_columns

    node = ray.get_runtime_context().get_node_id()
    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0)
    with open(LOG, "a") as handle:
        handle.write(f"{config.trial_id} {node} {gpus}\n")
    if on_epoch is not None:
        on_epoch({"epoch": 1})
    # The head holds two 0.5-GPU trials at once and the second node four: wait until all six
    # run together, which needs both nodes. Waiting for fewer raced: on a loaded machine the
    # second node's trials finished before the head's actors came up, and Tune gave the last
    # trials to those (reused) actors, so every trial ran on one node.
    deadline = time.monotonic() + 300
    while len(Path(LOG).read_text().splitlines()) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    row = empty_row()
    now = datetime.now(timezone.utc)
    row.update(config_columns(config), status="ok", clean_acc=0.5, started_at=now, ended_at=now,
               device=f"node {node[:8]}")  # fmt: skip
    return row


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # fake GPUs: multi-worker trials' Ray Train workers talk over gloo (their processes inherit
    # the environment of the nodes started here)
    os.environ[BACKEND_ENV] = "gloo"
    # the head holds two 0.5-GPU trials at once, so six trials must use the second node too
    # wait=False, then one generous wait: Cluster's own per-node wait is 30 s, too short for
    # a loaded machine
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False, "wait": False},
    )
    nodes.add_node(num_cpus=1, num_gpus=2, wait=False)
    nodes.wait_for_nodes(timeout=300)
    yield nodes
    ray.shutdown()
    nodes.shutdown()
    os.environ.pop(BACKEND_ENV, None)


def sweep(cluster: Cluster, tmp_path: Path, space: str, trial_fn: Any) -> Callable[[], Any]:
    """`sweeper run SPACE --address ... --gpus-per-trial 0.5` on the cluster, as a callable."""
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(space))
    opts = RunOptions(results=str(tmp_path / "r"), address=cluster.address, cpus_per_trial=0.25,
                      gpus_per_trial=0.5, progress=False)  # fmt: skip
    return lambda: run_sweep(load(path), opts, trial_fn=trial_fn)


def test_two_nodes_fractional_gpus_each_trial_once(cluster: Cluster, tmp_path: Path) -> None:
    run = sweep(cluster, tmp_path, SPACE, gpu_trial)
    summary = run()
    lines = Path(LOG).read_text().split("\n")[:-1]
    ids = [line.split()[0] for line in lines]
    assert summary.started == 6 and len(summary.rows) == 6
    assert sorted(ids) == sorted(summary.rows["trial_id"])  # each trial ran exactly once
    assert {float(line.split()[2]) for line in lines} == {0.5}
    assert len({line.split()[1] for line in lines}) == 2  # both nodes took trials

    again = run()
    assert again.started == 0
    assert len(Path(LOG).read_text().split("\n")[:-1]) == 6


# In plan order a small trial comes first. The big ones (elu, mish: two 1-GPU workers each)
# cannot both hold two of the cluster's three GPUs, so the second waits while small trials
# (half a GPU each) could take the GPU left and the shares freed after.
MIXED = """
sweep: mixed
base:
  arch: {block: basic, depths: [1, 1, 1], widths: [0.25, 0.25, 0.25]}
  data: {dataset: synthetic, image_size: 8}
  train: {epochs: 1, batch_size: 32}
  eval: {aa_size: 0}
axes:
  - zip:
      arch.activation: [relu, elu, gelu, mish, silu, softplus]
      runtime.workers: [1, 2, 1, 2, 1, 1]
"""


def timed_trial(config: TrialConfig, *, checkpoint_dir: str | None = None, on_epoch: Any = None,
                catch: bool = True, weights_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Logs when it started and the GPUs Ray gave it, holds them a while, returns an ok row.
    A big trial runs this on each of its Ray Train workers."""
    from sweeper.trial import config_columns

    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0)
    with open(STARTS, "a") as handle:
        handle.write(f"{config.arch.activation[0]} {config.runtime.workers} {gpus} {time.time()}\n")
    time.sleep(3.0 if config.runtime.workers > 1 else 1.5)
    row = empty_row()
    now = datetime.now(timezone.utc)
    row.update(config_columns(config), status="ok", clean_acc=0.5, started_at=now, ended_at=now)
    return row


def test_big_trials_start_before_later_small_ones(cluster: Cluster, tmp_path: Path) -> None:
    summary = sweep(cluster, tmp_path, MIXED, timed_trial)()
    rows = summary.rows.set_index("activation")
    assert set(rows["status"]) == {"ok"} and len(rows) == 6
    assert rows.loc[["elu", "mish"], "workers"].tolist() == [2, 2]
    starts: dict[str, list[tuple[float, float]]] = {}
    for line in Path(STARTS).read_text().splitlines():
        act, _, gpus, at = line.split()
        starts.setdefault(act, []).append((float(gpus), float(at)))
    assert all(len(starts[a]) == 2 and {g for g, _ in starts[a]} == {1.0} for a in ("elu", "mish"))
    assert all(starts[a] == [(0.5, starts[a][0][1])] for a in ("relu", "gelu", "silu", "softplus"))
    big_started = max(at for a in ("elu", "mish") for _, at in starts[a])
    first_small = min(at for a in ("relu", "gelu", "silu", "softplus") for _, at in starts[a])
    assert big_started < first_small  # no small trial went ahead of a waiting big one
