"""What a run would do: the space's resolved trials, those already done, and how to run them.

Planning needs no Ray: `--dry-run`, the progress view and the Optuna warm start read a Plan,
and only `sweeper.sweep.runner` turns it into Ray Tune trials.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sweeper import results
from sweeper.config import TrialConfig
from sweeper.results.columns import held_by_fixed_column, varying_keys
from sweeper.space import SearchSpace, expand, resolve_point, search_params
from sweeper.space.paths import flatten

PARAM = "trial"  # a grid trial's one Tune param: its TrialConfig as JSON

Select = Callable[[list[TrialConfig]], list[TrialConfig]]


@dataclass(frozen=True)
class RunOptions:
    """How to run a sweep (not what: that is the space)."""

    results: str = "results"  # local folder or any pyarrow filesystem URI
    address: str | None = None  # None: a local Ray instance for this run; "auto" or host:port
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    max_concurrent: int | None = None
    retry_failed: bool = False
    max_failures: int = 2  # Ray-level retries of a trial (preemption, dead worker)
    progress: bool = True
    order: Literal["grid", "adaptive"] = "grid"  # adaptive: a surrogate orders cells (economics)
    log: tuple[str, ...] = ()  # experiment trackers: mlflow, wandb, tensorboard (sweep.trackers)
    log_uri: str | None = None  # MLflow tracking URI / W&B folder (default: see sweep.trackers)


@dataclass
class Plan:
    """What a run would do: every resolved trial and the ones still to run."""

    space: SearchSpace
    sweep_uri: str
    configs: list[TrialConfig]
    to_run: list[TrialConfig]
    existing: dict[str, str] = field(default_factory=dict)  # trial_id -> status
    varying: list[str] = field(default_factory=list)  # config keys written as columns

    @property
    def budget(self) -> int:
        """Trials to start: cells to run, or the Optuna samples not yet spent."""
        if self.space.is_search:
            spent = sum(1 for s in self.existing.values() if s == "ok")
            return max(0, (self.space.doc.search.num_samples or 0) - spent)
        return len(self.to_run)


def sweep_uri_of(space: SearchSpace, results_uri: str) -> str:
    """Where the space's rows go: RESULTS/<sweep>, absolute (workers may run elsewhere)."""
    if "://" not in results_uri:
        results_uri = os.path.abspath(os.path.expanduser(results_uri))
    return results.sweep_dir(results_uri, space.name)


def make_plan(space: SearchSpace, results_uri: str, *, retry_failed: bool = False,
              select: Select | None = None) -> Plan:  # fmt: skip
    """Expand the space and find what is already done (no Ray). `select` keeps only some
    of the space's cells (`--subsample`); the plan then holds those alone."""
    sweep_uri = sweep_uri_of(space, results_uri)
    existing = results.status_by_id(sweep_uri)
    skip = {"ok"} if retry_failed else {"ok", "failed"}
    configs = expand(space)
    if select is not None:
        configs = select(configs)
    to_run = [c for c in configs if existing.get(c.trial_id) not in skip]
    return Plan(space, sweep_uri, configs, to_run, existing, varying_columns(space, configs))


def varying_columns(space: SearchSpace, configs: list[TrialConfig]) -> list[str]:
    """The config keys this space varies, each a column of its rows (`train.beta`): those
    that differ between its trials, or an Optuna search's sampled keys."""
    if space.is_search:
        return [k for k in search_params(space)
                if not k.startswith("derive.") and not held_by_fixed_column(k)]  # fmt: skip
    return varying_keys(flatten(c.identity()) for c in configs)


@functools.lru_cache(maxsize=1024)
def config_of(text: str) -> TrialConfig:
    """A grid cell's TrialConfig from its JSON param. The driver asks for each trial's
    several times (its folder name, its Tune name, the progress view) and validation builds
    model blocks: remembered, since a TrialConfig is frozen."""
    return TrialConfig.model_validate_json(text)


def trial_config(space: SearchSpace, params: dict[str, Any]) -> TrialConfig | None:
    """The trial a Tune trial's params stand for: a grid cell's JSON, or an Optuna point
    resolved in the space (None when it falls outside the space's constraints)."""
    if PARAM in params:
        return config_of(params[PARAM])
    dists = search_params(space)
    point = {k: dists[k].choice[v] if dists[k].choice is not None else v
             for k, v in params.items() if k in dists}  # fmt: skip
    return resolve_point(space, point)
