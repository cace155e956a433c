"""Experiment trackers (`sweeper run --log mlflow|wandb|tensorboard`) as Ray Tune's own
logger callbacks, so each trial is one tracked run with its per-epoch metrics as they come.

Two things Tune's callbacks cannot know are added here, on the driver: a trial's
hyperparameters reach Tune as one JSON string (`PARAM`), so each callback is shown the
trial's TrialConfig flattened to dotted keys (`arch.block`, `train.beta`) instead; and the
trial's final row (clean/PGD/CW/AA accuracy, MACs, parameters) is logged as its last result
before the run ends. Trackers are a run option: they never enter a trial's identity.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sweeper import results
from sweeper.errors import ConfigError
from sweeper.space.paths import flatten
from sweeper.sweep.plan import Plan, RunOptions, trial_config

TRACKERS = ("mlflow", "wandb", "tensorboard")
FINAL = ("clean_acc", "pgd_acc", "cw_acc", "aa_acc", "macs", "params", "train_seconds")
_PACKAGE = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}


def check_trackers(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The --log values, each once; an unknown one or a missing package is one line."""
    import importlib.util

    out: list[str] = []
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker {name!r}; choose from {', '.join(TRACKERS)}",
                              key="--log")  # fmt: skip
        if importlib.util.find_spec(_PACKAGE[name]) is None:
            raise ConfigError(f"{name} needs the {_PACKAGE[name]} package: "
                              "pip install 'robust-sweeper[tracking]'", key="--log")  # fmt: skip
        if name not in out:
            out.append(name)
    return tuple(out)


def flat_params(config: Any) -> dict[str, Any]:
    """A TrialConfig as tracker params: its trial_id, then dotted keys with scalar values."""
    flat = flatten(config.model_dump(mode="json"))
    return {"trial_id": config.trial_id, **{k: _shown(v) for k, v in sorted(flat.items())}}


def _shown(value: Any) -> str | int | float | bool:
    """["relu"] * 3 -> "relu" (as the rows' columns); [4, 4, 2] -> "4/4/2"; else JSON."""
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        if all(isinstance(v, str) for v in value) and len(set(value)) == 1:
            return value[0]
        return "/".join(str(v) for v in value)
    return json.dumps(value)


def default_log_uri(plan: Plan) -> str:
    """MLflow's file store in the sweep's state folder (`_mlflow`, beside `_rows/`) when the
    sweep is local; ./mlruns for a sweep in object storage."""
    if "://" in plan.sweep_uri and not plan.sweep_uri.startswith("file://"):
        return os.path.abspath("mlruns")
    local = plan.sweep_uri.removeprefix("file://")
    return os.path.abspath(os.path.join(results.state_dir(local), "_mlflow"))


def tracker_callbacks(plan: Plan, options: RunOptions) -> list[Any]:
    """One Tune callback per tracker in `options.log` (none: an empty list)."""
    made = []
    for name in check_trackers(options.log):
        made.append(_BUILDERS[name](plan, options))
    return made


class _Flattened:
    """Mixin for a Tune logger callback: shows it the flattened config, logs the final row."""

    def _bind(self, plan: Plan) -> None:
        self._space = plan.space
        self._sweep_uri = plan.sweep_uri

    @contextmanager
    def _flat(self, trial: Any) -> Iterator[None]:
        try:
            config = trial_config(self._space, trial.config)
        except Exception:  # noqa: BLE001 - params Ray never filled in: show them as they are
            config = None
        if config is None:
            yield
            return
        kept = trial.config, trial.evaluated_params
        trial.config = trial.evaluated_params = flat_params(config)
        try:
            yield
        finally:
            trial.config, trial.evaluated_params = kept

    def log_trial_start(self, trial: Any) -> None:
        with self._flat(trial):
            super().log_trial_start(trial)  # type: ignore[misc]

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        final = self._final(trial)
        if final:
            self.log_trial_result(final["training_iteration"], trial, final)  # type: ignore[attr-defined]
        with self._flat(trial):
            super().log_trial_end(trial, failed)  # type: ignore[misc]

    def _final(self, trial: Any) -> dict[str, Any]:
        """The trial's row's final numbers, at the trial's last step (empty: no row)."""
        try:
            config = trial_config(self._space, trial.config)
            row = results.read_row(self._sweep_uri, config.trial_id) if config else None
        except Exception:  # noqa: BLE001 - a tracker never stops the sweep
            row = None
        if row is None:
            return {}
        out: dict[str, Any] = {k: row[k] for k in FINAL if row.get(k) is not None}
        last = dict(trial.last_result or {})
        out["training_iteration"] = last.get("training_iteration") or 1
        out["trial_id"] = trial.trial_id
        return out


def _mlflow(plan: Plan, options: RunOptions) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MLflowCallback(_Flattened, MLflowLoggerCallback):
        pass

    uri = options.log_uri or default_log_uri(plan)
    if "://" not in uri and not uri.startswith(("file:", "sqlite:")):
        uri = "file:" + os.path.abspath(uri)
    if uri.startswith("file:"):  # MLflow 3 keeps its file store behind an opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    callback = MLflowCallback(tracking_uri=uri, experiment_name=plan.space.name,
                              tags={"sweep": plan.space.name})  # fmt: skip
    callback._bind(plan)
    return callback


def _wandb(plan: Plan, options: RunOptions) -> Any:
    """W&B's callback; WANDB_MODE=offline keeps runs on disk: in `--log-uri`/wandb/, else
    in each trial's Tune folder (RESULTS/_state/<sweep>/_ray/<run>/<trial_id>/wandb/)."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    class WandbCallback(_Flattened, WandbLoggerCallback):
        pass

    extra: dict[str, Any] = {}
    if os.environ.get("WANDB_MODE"):  # the logging actors' Ray workers may not inherit it
        extra["mode"] = os.environ["WANDB_MODE"]
    if options.log_uri:
        extra["dir"] = os.path.abspath(options.log_uri)
        os.makedirs(extra["dir"], exist_ok=True)
    callback = WandbCallback(project=os.environ.get("WANDB_PROJECT", plan.space.name),
                             group=plan.space.name, **extra)  # fmt: skip
    callback._bind(plan)
    return callback


def _tensorboard(plan: Plan, options: RunOptions) -> Any:
    """TensorBoard event files with an hparams entry per trial, in Tune's trial folders
    (RESULTS/_state/<sweep>/_ray/<run>/<trial_id>/)."""
    from ray.tune.logger import TBXLoggerCallback

    class TensorBoardCallback(_Flattened, TBXLoggerCallback):
        pass

    callback = TensorBoardCallback()
    callback._bind(plan)
    return callback


_BUILDERS = {"mlflow": _mlflow, "wandb": _wandb, "tensorboard": _tensorboard}
