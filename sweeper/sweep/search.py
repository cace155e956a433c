"""The Optuna side of `sweeper run`: a search space's sample params as Ray Tune domains and an
OptunaSearch warm-started with the sweep's finished rows (so a rerun spends only the rest of
the budget and never replays its first suggestions)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sweeper import results
from sweeper.space import search_params

if TYPE_CHECKING:
    from sweeper.sweep.plan import Plan


def _known_points(plan: Plan) -> tuple[list[dict[str, Any]], list[float]]:
    """The sweep's finished rows as (Optuna point, metric) pairs, to warm-start the study."""
    params = search_params(plan.space)
    metric = plan.space.doc.search.metric
    points, rewards = [], []
    frame = results.read(plan.sweep_uri)
    for _, row in frame[frame["status"] == "ok"].iterrows():
        if row[metric] is None or row[metric] != row[metric]:
            continue
        config, point = json.loads(row["config"]), {}
        for key, dist in params.items():
            value = _lookup(config, key)
            if value is None:  # e.g. a derive.* param: not stored as such in the config
                break
            if dist.choice is not None:
                index = [i for i, c in enumerate(dist.choice) if _same(c, value)]
                if not index:
                    break
                value = index[0]
            else:
                if isinstance(value, list) and value and all(v == value[0] for v in value):
                    value = value[0]  # a per-stage scalar stored as 3 copies
                if not _inside(dist, value):  # e.g. a row of an earlier, wider range
                    break
            point[key] = value
        else:
            points.append(point)
            rewards.append(float(row[metric]))
    return points, rewards


def _lookup(config: dict[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def _inside(dist: Any, value: Any) -> bool:
    """A stored number lies in a numeric distribution (Optuna refuses a warm-start point
    outside its distribution, and a point outside the space would mislead the sampler)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if dist.randint is not None:
        low, high = dist.randint
        return isinstance(value, int) and low <= value < high
    low, high = dist.uniform or dist.loguniform
    return low <= value <= high


def _same(choice: Any, stored: Any) -> bool:
    """A YAML choice equals a stored value (per-stage scalars are stored as 3 copies)."""
    if isinstance(stored, list) and not isinstance(choice, list):
        return all(v == choice for v in stored)
    if isinstance(stored, list) and isinstance(choice, list):
        return len(stored) == len(choice) and all(_same(c, v) for c, v in zip(choice, stored))
    return choice == stored


def optuna_search(plan: Plan) -> tuple[dict[str, Any], Any]:
    """OptunaSearch over the sample params, warm-started with the sweep's finished rows."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    s = plan.space.doc.search
    dists = {}
    for key, d in search_params(plan.space).items():
        if d.choice is not None:  # Optuna's categoricals take scalars only: sample an index
            dists[key] = tune.choice(list(range(len(d.choice))))
        elif d.uniform is not None:
            dists[key] = tune.uniform(*d.uniform)
        elif d.loguniform is not None:
            dists[key] = tune.loguniform(*d.loguniform)
        else:
            assert d.randint is not None
            dists[key] = tune.randint(*d.randint)
    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "nsgaii": optuna.samplers.NSGAIISampler,
    }
    points, rewards = _known_points(plan)
    # offset by the points already known: a resumed study must not replay its first draws
    sampler = samplers[s.sampler](seed=s.seed + len(points))
    searcher = OptunaSearch(metric=s.metric, mode=s.mode, sampler=sampler,
                            points_to_evaluate=points or None,
                            evaluated_rewards=rewards or None)  # fmt: skip
    return dists, searcher
