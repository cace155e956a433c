"""A sweep on a simulated two-node Ray cluster with fractional GPUs: every trial runs exactly
once, and running the same command again runs nothing."""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from sweeper.config import TrialConfig  # noqa: E402
from sweeper.schema import empty_row  # noqa: E402
from sweeper.space import load  # noqa: E402
from sweeper.sweep.runner import RunOptions, run_sweep  # noqa: E402

LOG = os.path.join(tempfile.mkdtemp(prefix="sweeper-test-cluster-"), "runs.log")

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
    # The head holds two 0.5-GPU trials at once: wait until three run together, which proves
    # the second node took one (a fixed sleep let a loaded machine run them all on the head).
    deadline = time.monotonic() + 300
    while len(Path(LOG).read_text().splitlines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    row = empty_row()
    now = datetime.now(timezone.utc)
    row.update(config_columns(config), status="ok", clean_acc=0.5, started_at=now, ended_at=now,
               device=f"node {node[:8]}")  # fmt: skip
    return row


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
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


def test_two_nodes_fractional_gpus_each_trial_once(cluster: Cluster, tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(textwrap.dedent(SPACE))
    opts = RunOptions(results=str(tmp_path / "r"), address=cluster.address, cpus_per_trial=0.25,
                      gpus_per_trial=0.5, progress=False)  # fmt: skip
    summary = run_sweep(load(path), opts, trial_fn=gpu_trial)
    lines = Path(LOG).read_text().split("\n")[:-1]
    ids = [line.split()[0] for line in lines]
    assert summary.started == 6 and len(summary.rows) == 6
    assert sorted(ids) == sorted(summary.rows["trial_id"])  # each trial ran exactly once
    assert {float(line.split()[2]) for line in lines} == {0.5}
    assert len({line.split()[1] for line in lines}) == 2  # both nodes took trials

    again = run_sweep(load(path), opts, trial_fn=gpu_trial)
    assert again.started == 0
    assert len(Path(LOG).read_text().split("\n")[:-1]) == 6
