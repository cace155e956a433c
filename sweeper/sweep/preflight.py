"""Checks a sweep makes before its first trial: that its data is there, and that the cluster
can ever place one trial. Either problem would otherwise cost the whole sweep: every trial
failing on the same missing folder (a failed row each), or every trial pending for ever while
the allocation burns. Both end the run at once with one line and exit code 2; no row is
written for them. A cluster that is still growing (an autoscaler launching nodes) gets a
bounded wait, announced on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from sweeper.errors import SweeperError
from sweeper.sweep.plan import Plan, RunOptions

# How long a joined cluster may take to show that its autoscaler launches a node for a trial
# it cannot place yet, and how long the run then waits for that node (seconds).
SCALE_PROBE_S = float(os.environ.get("SWEEPER_SCALE_PROBE_S", 20))
SCALE_WAIT_S = float(os.environ.get("SWEEPER_SCALE_WAIT_S", 600))

DataNeed = tuple[str, str | None, bool]  # (dataset, runtime.data_dir made absolute, download)


def data_needs(plan: Plan) -> list[DataNeed]:
    """The datasets the plan's trials read, with the folder each names (None: the default)."""
    from sweeper.data import anchor_data_dir

    cwd = os.getcwd()
    if plan.space.is_search:  # a search's trials share its base's data settings
        base = plan.space.doc.base
        data_dir = base.get("runtime", {}).get("data_dir")
        if data_dir and not os.path.isabs(data_dir):
            data_dir = os.path.abspath(os.path.join(cwd, data_dir))
        return [(base.get("data", {}).get("dataset", "cifar10"), data_dir,
                 bool(base.get("runtime", {}).get("download", False)))]  # fmt: skip
    needs: dict[DataNeed, None] = {}
    for config in plan.to_run:
        config = anchor_data_dir(config, cwd)
        needs[(config.data.dataset, config.runtime.data_dir, config.runtime.download)] = None
    return list(needs)


def check_data(needs: list[DataNeed], default: str) -> None:
    """Raise DataError (one line naming the folder and its expected layout) for the first
    dataset that cannot be read here; `default` is the folder a trial without
    runtime.data_dir reads."""
    from sweeper.data import check_dataset

    for dataset, data_dir, download in needs:
        check_dataset(dataset, data_dir or default, download=download)


def trial_bundle(plan: Plan, options: RunOptions, gpus: float) -> dict[str, float] | None:
    """What a one-worker trial reserves on one node (None when every trial has several
    workers: their count is checked by the runner's `_fits_at_once`)."""
    workers = [c.runtime.workers for c in plan.to_run]
    if plan.space.is_search:
        workers = [int(plan.space.doc.base.get("runtime", {}).get("workers", 1))]
    if workers and min(workers) > 1:
        return None
    return {k: v for k, v in (("CPU", options.cpus_per_trial), ("GPU", gpus)) if v}


def local_node() -> dict[str, float] | None:
    """What a private local Ray instance will have, as Ray itself detects it (no Ray
    started: seconds); None when Ray's detection cannot be asked."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource
        from ray._private.utils import get_num_cpus

        manager = get_accelerator_manager_for_resource("GPU")
        gpus = manager.get_current_node_num_accelerators() or 0
        visible = manager.get_current_process_visible_accelerator_ids()  # CUDA_VISIBLE_DEVICES
        if visible is not None:
            gpus = min(gpus, len(visible))
        return {"CPU": float(get_num_cpus()), "GPU": float(gpus)}
    except Exception:  # noqa: BLE001 - a Ray without these: the check after ray.init stands
        return None


def fits(bundle: dict[str, float], nodes: list[dict[str, float]]) -> bool:
    return any(all(node.get(k, 0.0) >= v for k, v in bundle.items()) for node in nodes)


def refusal(bundle: dict[str, float], nodes: list[dict[str, float]], options: RunOptions,
            where: str) -> SweeperError:  # fmt: skip
    """The one line that says no node can ever hold a trial, and what to change."""
    most = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in ("CPU", "GPU")}
    want = ", ".join(f"{v:g} {k}" for k, v in bundle.items())
    hint = ("; Ray sees no GPU (CUDA_VISIBLE_DEVICES, the job's GPU request), or leave "
            "--gpus-per-trial out" if bundle.get("GPU") and not most["GPU"] else "")  # fmt: skip
    gpus = options.gpus_per_trial
    asked = f"--gpus-per-trial {gpus:g}, " if gpus is not None else ""
    return SweeperError(
        f"{asked}--cpus-per-trial {options.cpus_per_trial:g}: no node of {where} can ever "
        f"hold one trial ({want}); its largest has {most['CPU']:g} CPU and {most['GPU']:g} "
        f"GPU{hint}"
    )


def cluster_nodes() -> list[dict[str, float]]:
    """Each alive node's total resources (what it could hold once idle)."""
    import ray

    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def check_cluster(bundle: dict[str, float], options: RunOptions) -> None:
    """On a started or joined Ray cluster: return once some node can hold `bundle`; raise
    at once when none can and no autoscaler is adding one, else after SCALE_WAIT_S."""
    nodes = cluster_nodes()
    if fits(bundle, nodes):
        return
    where = "the Ray cluster" if options.address else "this machine"
    if not options.address or _autoscaling_report() is None:
        raise refusal(bundle, nodes, options, where)
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[bundle])  # ask the autoscaler for such a node
    try:
        _wait_for_node(bundle, options, where)
    finally:
        request_resources(bundles=[])


def _wait_for_node(bundle: dict[str, float], options: RunOptions, where: str) -> None:
    t0 = time.monotonic()
    deadline, announced = t0 + SCALE_PROBE_S, False
    while time.monotonic() < deadline:
        time.sleep(5)
        nodes = cluster_nodes()
        if fits(bundle, nodes):
            return
        if not announced and _launching(_autoscaling_report()):
            announced, deadline = True, t0 + SCALE_WAIT_S
            want = ", ".join(f"{v:g} {k}" for k, v in bundle.items())
            print(f"waiting up to {SCALE_WAIT_S:.0f}s for the autoscaler to add a node that "
                  f"holds one trial ({want})", file=sys.stderr, flush=True)  # fmt: skip
    error = refusal(bundle, cluster_nodes(), options, where)
    waited = f" (waited {time.monotonic() - t0:.0f}s for the autoscaler)"
    raise SweeperError(f"{error}{waited}")


def _autoscaling_report() -> dict[str, Any] | None:
    """The autoscaler's last status report in the GCS; None when no autoscaler writes one."""
    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        return json.loads(raw) if raw else None
    except Exception:  # noqa: BLE001 - no report readable: treat as a fixed cluster
        return None


def _launching(report: dict[str, Any] | None) -> bool:
    """Whether the autoscaler reports nodes being launched or set up."""
    inner = (report or {}).get("autoscaler_report") or {}
    return bool(inner.get("pending_launches") or inner.get("pending_nodes"))

