"""The Python API, for notebooks and scripts; the CLI's `run` and `export` call the same code.

    import sweeper
    summary = sweeper.run("search_spaces/smoke.yaml", results="results")
    summary.rows                          # a pandas DataFrame, one row per trial
    rows = sweeper.read("results/smoke")  # the rows of a sweep (or of a results folder)
    model, info = sweeper.load_model("t.pt")  # a file of `sweeper export`

`import sweeper` stays light: these functions import torch and Ray when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from sweeper.space import SearchSpace
    from sweeper.sweep.plan import Select
    from sweeper.sweep.runner import RunSummary


def run(
    space: str | Path | SearchSpace,
    results: str | Path = "results",
    *,
    overrides: list[str] | tuple[str, ...] = (),
    sweep: str | None = None,
    log: list[str] | tuple[str, ...] = (),
    log_uri: str | None = None,
    progress: bool = False,
    select: Select | None = None,
    **options: Any,
) -> RunSummary:
    """Run every trial of a search space that has no result row yet, as `sweeper run`.

    `space`: a YAML file, a packaged study's name (`"smoke"`, `"depth"`) or a loaded
    SearchSpace. `results`: the results folder or a pyarrow URI; rows go to
    RESULTS/<sweep>/. `overrides`: `--set` values (`["train.epochs=2"]`); `sweep`: the
    results folder's name (default: the space's). `log`: trackers (`["mlflow"]`, also
    `"wandb"`, `"tensorboard"`), `log_uri` their location. Other keyword `options` are
    RunOptions fields: `address`, `cpus_per_trial`, `gpus_per_trial`, `max_concurrent`,
    `max_failures`, `retry_failed`, `order`.

    Returns a RunSummary: `.rows` (DataFrame of the space's trials), `.failed`
    [(trial_id, error)], `.started`, `.finished`, `.seconds`. Bad input raises
    sweeper.errors.SweeperError (one line naming the file and key).
    """
    from sweeper.space import SearchSpace, load
    from sweeper.sweep.plan import RunOptions
    from sweeper.sweep.runner import run_sweep
    from sweeper.sweep.trackers import check_trackers

    loaded = space if isinstance(space, SearchSpace) else load(space, list(overrides), sweep=sweep)
    opts = RunOptions(results=str(results), progress=progress, log=check_trackers(list(log)),
                      log_uri=log_uri, **options)  # fmt: skip
    return run_sweep(loaded, opts, select=select)


def read(path: str | Path) -> pd.DataFrame:
    """The result rows under `path` (one sweep's folder RESULTS/<sweep>, a results folder of
    several sweeps, or an s3:// / pyarrow URI) as a DataFrame: one row per trial, the columns
    of sweeper.schema, then one column per config key that varies (`train.beta`)."""
    from sweeper import results

    return results.read(str(path))


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network of a `sweeper export` file (eval mode, on the CPU) and its other entries:
    trial_id, sweep, config (JSON), metrics. For a network without sweeper, export with
    `--format export` and load it with `torch.export.load(path).module()`."""
    from sweeper.models import load_model as load

    return load(path)
