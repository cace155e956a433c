"""Run a search space on Ray Tune: one trainable around run_trial, resumable by trial_id.

Ray is imported only inside sweeper.sweep (tests/test_layout.py checks it). The trainable
writes its trial's row from the worker as soon as the trial ends, so a killed driver
loses only the trials that were running; the next run skips every trial_id with a row.
Per-epoch checkpoints go through `tune.report` so that FailureConfig retries a
preempted trial from its last epoch. Rows land in the sweep's row log; the driver folds the
log into the sweep's table (`results.compact`) at the start of a run (healing one that was
killed), as trials end, and at the end. Ray's own experiment files live in
RESULTS/_state/<sweep>/_ray/<run-name>/. Around the run: one driver per
sweep (`sweeper.results.Lease`), a shared-storage check on multi-node clusters
(`sweeper.sweep.storage`), and the run's outcome (failed trials, trials left unfinished by
Ctrl+C) from the progress callback, for the CLI's exit code.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sweeper import results
from sweeper.config import TrialConfig
from sweeper.errors import StorageError, SweeperError, first_line, storage_error
from sweeper.space import METRICS, SearchSpace
from sweeper.sweep.plan import (
    PARAM,
    Plan,
    RunOptions,
    Select,
    config_of,
    make_plan,
    sweep_uri_of,
    trial_config,
)

TrialFn = Callable[..., dict[str, Any]]
STORAGE_FAULT = "storage_fault"  # a trial's report: the store is full or read-only


def failed_row(config: TrialConfig, error: str) -> dict[str, Any]:
    """A row for a trial that died without writing its own (worker lost, retries spent)."""
    from sweeper import trial

    return trial.failed_row(config, error)


def _store(sweep_uri: str, row: dict[str, Any], space: SearchSpace,
           varying: Sequence[str]) -> None:  # fmt: skip
    """Write a trial's row with the space's hash and a column per varying key; the weights
    it names go into the store first (`_weights/<trial_id>/`), so no row names a missing file."""
    row["space_sha256"] = space.sha256
    # a local file goes into the store; a multi-worker trial's rank 0 stored its own already
    if row.get("weights") and os.path.isabs(row["weights"]):
        row["weights"] = results.store_weights(sweep_uri, row["trial_id"], row["weights"])
    results.write_row(sweep_uri, row, varying=varying)


def _numbers(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool))}


def _stops_on_storage_fault(trainable: Callable[..., None]) -> Callable[..., None]:
    """A full or read-only store ends the trial with a report naming the fault, not an
    error: Ray would retry it (and every other trial) against the same full disk. The
    driver's stopper then stops the whole run (see `_lease_stopper`)."""

    @functools.wraps(trainable)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            trainable(*args, **kwargs)
        except StorageError as err:
            from ray import tune

            tune.report({STORAGE_FAULT: str(err)})

    return run


@_stops_on_storage_fault
def _trainable(params: dict[str, Any], *, sweep_uri: str, space: SearchSpace,
               trial_fn: TrialFn | None, varying: Sequence[str] = (),
               options: RunOptions | None = None,
               driver_dirs: tuple[str, str] | None = None) -> None:  # fmt: skip
    """Ray's view of one trial: resolve, restore, run, write the row, report.

    `driver_dirs`: the driver's (working folder, default data folder): a relative
    runtime.data_dir is the driver's, and so is the default unless the node set its own.
    """
    from ray import tune

    from sweeper.sweep import checkpoints, storage, workers

    search = space.doc.search
    worst = _worst(space)
    config = _config_to_run(params, sweep_uri=sweep_uri, space=space, driver_dirs=driver_dirs)
    if config is None:  # reported already: outside the constraints, or its ok row is kept
        return
    workdir = storage.make_scratch(config.trial_id)
    try:
        warning = checkpoints.restore(sweep_uri, config.trial_id, workdir)
        note = {"warning": warning} if warning else {}  # shown in the driver's log
        on_epoch, on_ready = _reporters(config, workdir, sweep_uri=sweep_uri, space=space,
                                        note=note)  # fmt: skip
        row = _train(config, trial_fn, workdir=workdir, sweep_uri=sweep_uri, options=options,
                     on_epoch=on_epoch, on_ready=on_ready)  # fmt: skip
        row = _keep_row(sweep_uri, config.trial_id, row, space, varying)
        workers.drop_train_checkpoints(sweep_uri, config.trial_id)
        checkpoints.drop_other_runs(
            sweep_uri, config.trial_id, tune.get_context().get_experiment_name()
        )
        tune.report({**_metrics(row, search.metric, worst), **note})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _worst(space: SearchSpace) -> float:
    """The metric a trial without one reports: the searcher ranks it last."""
    return 0.0 if space.doc.search.mode == "max" else 1.0


def _config_to_run(params: dict[str, Any], *, sweep_uri: str, space: SearchSpace,
                   driver_dirs: tuple[str, str] | None) -> TrialConfig | None:  # fmt: skip
    """The trial's config, its data folders the driver's; None, reported to Tune, when there
    is nothing to train: outside the space's constraints, or its ok row is there already."""
    from ray import tune

    from sweeper.data import adopt_data_dir, anchor_data_dir

    search = space.doc.search
    worst = _worst(space)
    config = trial_config(space, params)
    if config is None:  # outside the space's constraints: nothing to train
        tune.report({search.metric: worst, "status": "constrained"})
        return None
    if driver_dirs is not None:
        cwd, default = driver_dirs
        adopt_data_dir(default)
        config = anchor_data_dir(config, cwd)
    # a grid cell is in the plan because it has no ok row; a search may suggest a point again
    previous = None if PARAM in params else results.read_row(sweep_uri, config.trial_id)
    if previous is not None and previous["status"] == "ok":
        tune.report(_metrics(previous, search.metric, worst))
        return None
    return config


def _reporters(config: TrialConfig, workdir: str, *, sweep_uri: str, space: SearchSpace,
               note: dict[str, Any]) -> tuple[Callable[[dict[str, Any]], None],
                                              Callable[[], None]]:  # fmt: skip
    """The trial's reports to Tune: each epoch's numbers with its checkpoint, and (a
    multi-worker trial's) that all its workers run."""
    from ray import tune

    from sweeper.sweep import workers

    search = space.doc.search
    worst = _worst(space)
    multi = config.runtime.workers > 1

    def on_epoch(record: dict[str, Any]) -> None:
        metric = record.get("holdout_pgd_acc", worst)
        # a multi-worker trial's checkpoint is Ray Train's (sweeper.sweep.workers)
        checkpoint = None if multi else tune.Checkpoint.from_directory(workdir)
        try:  # the checkpoint is copied into the store's _ray/ folder
            tune.report({**_numbers(record), search.metric: metric, **note},
                        checkpoint=checkpoint)  # fmt: skip
        except (OSError, RuntimeError) as err:
            raise storage_error(err, f"{results.state_dir(sweep_uri)}/_ray") or err from None

    def on_ready() -> None:  # a multi-worker trial's workers all run (sweep.admission)
        tune.report({search.metric: worst, workers.WORKERS_READY: config.runtime.workers})

    return on_epoch, on_ready


def _train(config: TrialConfig, trial_fn: TrialFn | None, *, workdir: str, sweep_uri: str,
           options: RunOptions | None, on_epoch: Callable[[dict[str, Any]], None],
           on_ready: Callable[[], None]) -> dict[str, Any]:  # fmt: skip
    """The trial's row: run_trial in this actor, or on Ray Train workers when it has more
    than one; a trial's own error is its failed row, a storage fault stops the run."""
    from sweeper.sweep import workers

    if trial_fn is None:
        from sweeper.trial import run_trial as trial_fn

    multi = config.runtime.workers > 1
    try:
        if multi:
            opts = options or RunOptions()
            row = workers.run_on_workers(
                config, on_epoch=on_epoch, on_ready=on_ready, sweep_uri=sweep_uri,
                resume_from=workdir, trial_fn=trial_fn, cpus_per_worker=opts.cpus_per_trial,
                max_failures=opts.max_failures, weights=workers.INTO_SWEEP,
            )  # fmt: skip
        else:
            row = trial_fn(config, checkpoint_dir=workdir, on_epoch=on_epoch, catch=True,
                           weights_dir=os.path.join(workdir, "weights"))  # fmt: skip
    except StorageError:
        raise  # no row can be written either: the run stops
    except Exception as err:  # noqa: BLE001 - a trial's bug is its row, not the sweep's end
        row = failed_row(config, f"{type(err).__name__}: {err}")
        if multi:  # rank 0 stored what it trained before failing
            row["weights"] = results.stored_weights(sweep_uri, config.trial_id,
                                                    config.eval.checkpoint)  # fmt: skip
    return row


def _keep_row(sweep_uri: str, trial_id: str, row: dict[str, Any], space: SearchSpace,
              varying: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """The row that stands for the trial: its own, stored, unless it failed and an ok row
    (a second driver's) is there already, which is never replaced."""
    kept = results.read_row(sweep_uri, trial_id) if row["status"] != "ok" else None
    if kept is not None and kept["status"] == "ok":
        return kept
    _store(sweep_uri, row, space, varying)
    return row


def _metrics(row: dict[str, Any], metric: str, worst: float) -> dict[str, Any]:
    out = {m: row[m] for m in METRICS if row.get(m) is not None}
    out["status"] = row["status"]
    if row.get("error"):
        out["error"] = row["error"].splitlines()[0][:300]
    if row["status"] != "ok" or out.get(metric) is None:
        out[metric] = worst  # the searcher needs a number; failures rank last
    return out


def _init_ray(options: RunOptions, **init_args: Any) -> bool:
    """Start (or join) Ray quietly; True when this call started it and must shut it down.

    `init_args` go to ray.init as they are (the tests' num_cpus).
    """
    import ray

    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR,
                                 log_to_driver=False, **init_args)  # fmt: skip
    if options.address:  # a cluster someone started: join it as it is
        _check_reachable(options.address)
        try:
            ray.init(address=options.address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:  # no cluster there
            raise SweeperError(f"--address {options.address}: cannot join a Ray cluster: "
                               f"{first_line(err)[:300]}") from None  # fmt: skip
        return True
    # "local": a private instance for this run, never a cluster found on the machine, and
    # reachable from this machine only. Ray's C++ servers (GCS, the raylet's node and object
    # managers, every worker's and the driver's core worker) listen on all interfaces unless
    # the node address is exactly 127.0.0.1, and so do the dashboard agent's servers when
    # ray[default] is installed. But ray.init(_node_ip_address="127.0.0.1") is rewritten to
    # the host's address (services.resolve_ip_for_localhost) except in Ray's single-machine
    # mode, the default on macOS and Windows (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). Ray reads
    # that variable once, at import, into ray_constants.ENABLE_RAY_CLUSTER, which the
    # rewrite reads at call time: set it for ray.init only, the driver may join a cluster
    # later. Measured on Ray 2.60: every listening socket on 127.0.0.1 (before: GCS,
    # raylet, core workers on [::], the runtime-env agent on the host's IP). No dashboard
    # and no client server are started.
    from ray._private import ray_constants

    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(address="local", _node_ip_address="127.0.0.1", **quiet)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
    gcs_host = ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]
    if gcs_host != "127.0.0.1":  # a Ray that no longer honours the single-machine mode
        logging.getLogger(__name__).warning(
            "the local Ray instance listens beyond localhost (node address %s)", gcs_host
        )
    return True


def _check_reachable(address: str, timeout: float = 20.0) -> None:
    """One line, within `timeout`, when the cluster's address has no listener: ray.init
    would retry for many minutes (a dead cluster's address left in /tmp/ray for `auto`).
    ray:// addresses are left to Ray."""
    import socket

    given = address
    if address == "auto":  # where ray.init would look: $RAY_ADDRESS, then the last ray start
        try:
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address(address) or address
        except Exception:  # noqa: BLE001 - none found: ray.init says so, in its own words
            return
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        shown = given if given == address else f"{given} ({address})"
        raise SweeperError(f"--address {shown}: no Ray cluster answers there ({err})") from None


def _gpus_per_trial(options: RunOptions) -> float:
    import ray

    if options.gpus_per_trial is not None:
        return options.gpus_per_trial
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _search_workers(space: SearchSpace) -> int:
    """runtime.workers of an Optuna search's trials (its base's; searches do not vary it)."""
    return int(space.doc.base.get("runtime", {}).get("workers", 1)) if space.is_search else 1


def _trial_resources(options: RunOptions, search_workers: int) -> Callable[[dict], Any]:
    """Per trial: a one-worker trial reserves its CPU and GPU share; a multi-worker trial's
    Tune trial only drives its Ray Train workers, which reserve their own."""
    from ray import tune

    from sweeper.sweep.workers import DRIVER_RESOURCES

    share = {"CPU": options.cpus_per_trial, "GPU": _gpus_per_trial(options)}
    one_worker = tune.PlacementGroupFactory([{k: v for k, v in share.items() if v}])
    driver = tune.PlacementGroupFactory([DRIVER_RESOURCES])

    def per_trial(params: dict[str, Any]) -> Any:
        workers = search_workers
        if PARAM in params:
            workers = config_of(params[PARAM]).runtime.workers
        return driver if workers > 1 else one_worker

    return per_trial


def _fits_at_once(workers: int, options: RunOptions) -> int:
    """How many trials of `workers` workers the cluster holds at once; refuses a trial that
    could never start (its placement group would wait for ever)."""
    import ray

    have = ray.cluster_resources()
    gpus = have.get("GPU", 0)
    slots = int(gpus) if gpus > 0 else int(have.get("CPU", 0) // max(options.cpus_per_trial, 1e-9))
    if workers > slots:
        unit = "GPUs" if gpus > 0 else f"worker slots of {options.cpus_per_trial:g} CPU"
        raise SweeperError(
            f"runtime.workers: {workers} workers per trial, but the Ray cluster has {slots} "
            f"{unit}; start more nodes or ask for fewer workers"
        )
    return max(1, slots // workers)


def run_trial_on_workers(
    config: TrialConfig,
    *,
    checkpoint_dir: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    weights: str | None = None,
    **init_args: Any,
) -> dict[str, Any]:
    """`sweeper trial` with runtime.workers > 1: the trial on Ray Train workers of a private
    local Ray instance (every worker on this machine, so they share `checkpoint_dir`; rank 0
    keeps the trained weights in the folder `weights`)."""
    from sweeper.sweep.workers import run_on_workers

    options = RunOptions()
    owned = _init_ray(options, **init_args)
    try:
        _fits_at_once(config.runtime.workers, options)
        try:
            return run_on_workers(config, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir,
                                  weights=weights)  # fmt: skip
        except Exception as err:  # noqa: BLE001 - as run_trial(catch=True): a failed row
            return failed_row(config, f"{type(err).__name__}: {err}")
    finally:
        if owned:
            import ray

            ray.shutdown()


@dataclass
class RunSummary:
    plan: Plan
    started: int  # trials this run set out to run
    seconds: float
    rows: Any  # pandas.DataFrame of this space's trials
    failed: list[tuple[str, str]] = field(default_factory=list)  # (trial_id, error), this run
    finished: int = 0  # trials of this run that ended (ok, failed or outside constraints)
    terminated: bool = False  # SIGTERM stopped the run (scancel, a time limit): exit 143

    @property
    def unfinished(self) -> int:
        """Trials left running or pending when the run was interrupted (Ctrl+C)."""
        return max(0, self.started - self.finished)


def run_sweep(space: SearchSpace, options: RunOptions, trial_fn: TrialFn | None = None,
              *, select: Select | None = None) -> RunSummary:  # fmt: skip
    """Run every trial of `space` that has no row yet (no ok row, with --retry-failed);
    `select` keeps some of its cells only (`--subsample`).

    Raises LeaseHeld (a SweeperError) at once when another driver runs the same sweep.
    """
    from sweeper.sweep.signals import handle_sigterm

    t0 = time.monotonic()
    sweep_uri = sweep_uri_of(space, options.results)
    with results.Lease(sweep_uri) as lease, handle_sigterm(_give_up(lease)) as term:
        results.compact(sweep_uri)  # what a killed run left in the row log
        plan = make_plan(space, options.results, retry_failed=options.retry_failed, select=select)
        results.remove_stale_temps(plan.sweep_uri, older_than=lease.ttl)  # killed writers'
        from sweeper.sweep.checkpoints import drop_finished

        drop_finished(plan.sweep_uri, set(plan.existing) - {c.trial_id for c in plan.to_run})
        if plan.budget == 0:
            return RunSummary(plan, 0, 0.0, _rows_of(plan))
        term.plan = plan
        data = _check_before_ray(plan, options)
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no json/csv/tbx
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        owned = _init_ray(options)
        term.install()  # over Ray's own SIGTERM handler
        try:
            from sweeper.sweep.storage import check_shared_store

            _check_cluster(plan, options)
            check_shared_store(plan.sweep_uri, data=data)
            progress = _fit(plan, options, trial_fn, lease=lease, term=term)
        except Exception:
            if not term.received:
                raise
            progress = term.progress  # Ray went down with the SIGTERM (SLURM stops it too)
        finally:
            if owned:
                import ray

                ray.shutdown()
        results.compact(plan.sweep_uri)
    if lease.lost:
        holder = lease.taken_by.describe() if lease.taken_by else "unknown"
        raise SweeperError(f"{plan.sweep_uri}: another driver took this sweep over ({holder}); "
                           "this one stopped")  # fmt: skip
    return RunSummary(plan, plan.budget, time.monotonic() - t0, _rows_of(plan),
                      failed=progress.failures() if progress else [],
                      finished=len(progress.finished) if progress else 0,
                      terminated=term.received)  # fmt: skip


def _give_up(lease: results.Lease) -> Callable[[Any], None]:
    """What the SIGTERM watchdog does when Ray did not let the run end in time: the
    interrupted line, then the lease released (sweeper.sweep.signals)."""
    from sweeper.sweep.signals import interrupted_line

    def give_up(term: Any) -> None:
        progress, plan = term.progress, term.plan
        budget = plan.budget if plan is not None else 0
        left = max(0, budget - len(progress.finished)) if progress is not None else budget
        print(interrupted_line(left, "SIGTERM"), file=sys.stderr, flush=True)
        lease.release()

    return give_up


def _check_before_ray(plan: Plan, options: RunOptions) -> tuple[list, str]:
    """Before Ray starts (seconds): the data every trial reads is there, and a private local
    instance could hold one trial (sweeper.sweep.preflight). Returns what the nodes check
    again: (data needs, the driver's default data folder)."""
    from sweeper.data import default_data_dir
    from sweeper.sweep import preflight

    needs = preflight.data_needs(plan)
    default = str(default_data_dir().resolve())
    preflight.check_data(needs, default)
    node = preflight.local_node() if not options.address else None
    if node is not None:
        gpus = options.gpus_per_trial
        bundle = preflight.trial_bundle(plan, options, gpus if gpus is not None else
                                        float(node["GPU"] > 0))  # fmt: skip
        if bundle and not preflight.fits(bundle, [node]):
            raise preflight.refusal(bundle, [node], options, "this machine")
    return needs, default


def _check_cluster(plan: Plan, options: RunOptions) -> None:
    """Ray started: some node can ever hold one trial (or an autoscaler adds one in time)."""
    from sweeper.sweep import preflight

    bundle = preflight.trial_bundle(plan, options, _gpus_per_trial(options))
    if bundle:
        preflight.check_cluster(bundle, options)


def _fit(plan: Plan, options: RunOptions, trial_fn: TrialFn | None, *,
         lease: results.Lease | None = None, term: Any = None) -> Any:  # fmt: skip
    """Run the plan's trials on Tune; return the SweepProgress that saw them. `term`: the
    run's SIGTERM state (sweeper.sweep.signals), which learns of the progress."""
    from ray import tune

    from sweeper.sweep.checkpoints import drop_checkpoints
    from sweeper.sweep.progress import SweepProgress

    fs, base, storage = _tune_storage(plan)
    trainable, most_workers, at_once = _tune_trainable(plan, options, trial_fn)
    param_space, tune_config = _tune_search(plan, options, most_workers, at_once)
    search = plan.space.doc.search
    progress = SweepProgress(plan, metric=search.metric, enabled=options.progress)
    stopper = _lease_stopper(lease)
    run_config = _tune_run_config(plan, options, progress, stopper, storage)
    tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config,
                       run_config=run_config)  # fmt: skip
    if term is not None:
        term.progress = progress
    faults = _tune_storage_faults(stopper, storage["storage_path"])
    with progress, _tune_stop_signal_restored(), faults:
        try:
            tuner.fit()
        except Exception as err:  # Tune's own files in _ray/ could not be written
            raise storage_error(err, storage["storage_path"]) or err from None
    _raise_storage_fault(stopper, lease)
    if term is None or not term.received:  # SIGTERM kills trials too: theirs are no failures
        _record_lost_trials(plan, progress.lost.values())
    # Ctrl+C (SIGINT) or SIGUSR1 ends tuner.fit() normally, its running trials marked
    # TERMINATED: keep the checkpoints unless every trial made its final report (or errored)
    if len(progress.finished) >= plan.budget:
        drop_checkpoints(fs, f"{base}/_ray/{run_config.name}")
    return progress


def _tune_storage(plan: Plan) -> tuple[Any, str, dict[str, Any]]:
    """Where Tune keeps its experiment files (the sweep's _ray/ folder, created here):
    (filesystem, base path, RunConfig's storage arguments)."""
    fs, base = results.location(results.state_dir(plan.sweep_uri))
    try:
        fs.create_dir(f"{base}/_ray", recursive=True)
    except OSError as err:  # e.g. --results names a file, or a read-only location
        raise SweeperError(f"{plan.sweep_uri}: cannot create the results folder: {err}") from None
    storage: dict[str, Any] = {"storage_path": f"{base}/_ray"}
    if "://" in plan.sweep_uri:
        storage["storage_filesystem"] = fs
    return fs, base, storage


def _tune_trainable(plan: Plan, options: RunOptions,
                    trial_fn: TrialFn | None) -> tuple[Any, int, int | None]:  # fmt: skip
    """`_trainable` with the run's arguments and each trial's resources: (trainable, the
    most workers a trial runs on, how many such trials fit at once when that is over one)."""
    from ray import tune

    from sweeper.data import default_data_dir

    space = plan.space
    # Data folders are the driver's ($SWEEPER_DATA or ./data, and a relative runtime.data_dir,
    # made absolute here): Tune runs each trial in a working folder of its own
    driver_dirs = (os.getcwd(), str(default_data_dir().resolve()))
    trainable = tune.with_parameters(_trainable, sweep_uri=plan.sweep_uri, space=space,
                                     trial_fn=trial_fn, varying=plan.varying, options=options,
                                     driver_dirs=driver_dirs)  # fmt: skip
    resources: Any = {"cpu": options.cpus_per_trial, "gpu": _gpus_per_trial(options)}
    at_once = None
    most_workers = max((c.runtime.workers for c in plan.to_run), default=_search_workers(space))
    if most_workers > 1:  # trials on several workers: see sweeper.sweep.admission
        resources = _trial_resources(options, _search_workers(space))
        at_once = _fits_at_once(most_workers, options)
    trainable = tune.with_resources(trainable, resources)
    return trainable, most_workers, at_once


def _tune_search(plan: Plan, options: RunOptions, most_workers: int,
                 at_once: int | None) -> tuple[dict[str, Any], Any]:  # fmt: skip
    """What picks the next trial, as (param_space, TuneConfig): Optuna for a search, the
    surrogate for --order adaptive, the biggest trials first when some run on several
    workers, else Tune's grid over the plan's configs."""
    from ray import tune

    from sweeper.sweep.search import optuna_search

    space = plan.space
    search = space.doc.search
    reuse = most_workers == 1  # a multi-worker trial's actor only drives its workers
    named = {"trial_dirname_creator": _dirname, "trial_name_creator": _dirname}
    if space.is_search:
        param_space, searcher = optuna_search(plan)
        tune_config = tune.TuneConfig(search_alg=searcher, num_samples=plan.budget,
                                      max_concurrent_trials=options.max_concurrent or at_once,
                                      reuse_actors=reuse)  # fmt: skip
    elif options.order == "adaptive":  # cells one by one, chosen by a surrogate
        from sweeper.sweep.adaptive_search import AdaptiveSearcher

        # The surrogate picks every next cell, so it also takes the admission gate's place;
        # a grid's cells usually share one worker count, which cannot starve.
        param_space = {}
        searcher = AdaptiveSearcher(plan, metric=search.metric, mode=search.mode)
        tune_config = tune.TuneConfig(search_alg=searcher, num_samples=plan.budget,
                                      max_concurrent_trials=options.max_concurrent or at_once,
                                      reuse_actors=reuse, **named)  # fmt: skip
    elif most_workers > 1:
        from sweeper.sweep.admission import BigFirst

        param_space = {}
        searcher = BigFirst(plan.to_run, metric=search.metric, mode=search.mode)
        tune_config = tune.TuneConfig(search_alg=searcher, num_samples=len(plan.to_run),
                                      max_concurrent_trials=options.max_concurrent,
                                      reuse_actors=reuse, **named)  # fmt: skip
    else:
        param_space = {PARAM: tune.grid_search([c.model_dump_json() for c in plan.to_run])}
        tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=options.max_concurrent,
                                      reuse_actors=reuse, **named)  # fmt: skip
    return param_space, tune_config


def _tune_run_config(plan: Plan, options: RunOptions, progress: Any, stopper: Any,
                     storage: dict[str, Any]) -> Any:  # fmt: skip
    """Tune's RunConfig: a run name of its own, the driver's callbacks and stopper, one kept
    checkpoint per trial, the retries, and where its files go."""
    from ray import tune

    from sweeper.sweep.trackers import tracker_callbacks

    return tune.RunConfig(
        name=f"run-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{os.getpid()}",
        verbose=0,
        progress_reporter=None,
        callbacks=[progress, _compactor(plan.sweep_uri), *tracker_callbacks(plan, options)],
        stop=stopper,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        **storage,
    )


@contextmanager
def _tune_stop_signal_restored() -> Iterator[None]:
    """Tune takes SIGUSR1 for its run and keeps it after; give it back, so a SIGTERM after
    the run unwinds at once (sweeper.sweep.signals) instead of stopping a finished run."""
    import signal

    previous = signal.getsignal(signal.SIGUSR1)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread() and previous is not None:
            signal.signal(signal.SIGUSR1, previous)


def _compactor(sweep_uri: str) -> Any:
    """A Tune callback that folds the row log into the sweep's table as trials end, so that
    plain readers of a running sweep see its finished trials (spaced as
    `results.compaction.Compactor` says)."""
    from ray import tune

    from sweeper.results.compaction import Compactor

    class CompactAsTrialsEnd(tune.Callback):
        def __init__(self) -> None:
            self.compactor = Compactor(sweep_uri)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.compactor.maybe()

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.compactor.maybe()

    return CompactAsTrialsEnd()


def _lease_stopper(lease: results.Lease | None) -> Any:
    """A Tune stopper that ends the whole run once another driver took the sweep over, or
    once the store is full or read-only (a trial's report, or the lease's renewal)."""
    from ray import tune

    class LeaseStopper(tune.Stopper):
        def __init__(self, lease: results.Lease | None) -> None:
            self.lease = lease
            self.fault: str | None = None

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            if result.get(STORAGE_FAULT):
                self.fault = self.fault or str(result[STORAGE_FAULT])
                return True
            return False

        def stop_all(self) -> bool:
            if self.fault is not None:
                return True
            return self.lease is not None and (self.lease.lost or self.lease.fault is not None)

        def __getstate__(self) -> dict[str, Any]:  # Tune saves its run config: not the lease
            return {"lease": None, "fault": None}

    return LeaseStopper(lease)


@contextlib.contextmanager
def _tune_storage_faults(stopper: Any, path: str) -> Iterator[None]:
    """Tune logs (with a traceback) and goes on when it cannot save its experiment state in
    `path`; a full or read-only store there becomes the stopper's fault instead, which stops
    the run (its one line is the CLI's)."""

    def catch(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        fault = storage_error(error, path) if error is not None else None
        if fault is None:
            return True
        stopper.fault = stopper.fault or str(fault)
        return False

    logger = logging.getLogger("ray.tune.execution.experiment_state")
    logger.addFilter(catch)
    try:
        yield
    finally:
        logger.removeFilter(catch)


def _raise_storage_fault(stopper: Any, lease: results.Lease | None) -> None:
    """After the run: the first storage fault a trial or the lease met, as one StorageError
    (exit 2; rows already written are intact, trials left unfinished resume next run)."""
    if stopper.fault is not None:
        raise StorageError(stopper.fault)
    if lease is not None and lease.fault is not None:
        raise lease.fault


def _dirname(trial: Any) -> str:
    config = trial.config.get(PARAM)
    if isinstance(config, str):
        return config_of(config).trial_id
    return f"trial-{trial.trial_id}"


def _record_lost_trials(plan: Plan, lost: Iterable[tuple[dict[str, Any], str]]) -> None:
    """A trial whose worker died for good wrote no row: write a failed one for it.

    `lost` holds (Tune params, error line) pairs from the progress callback: Tune's
    ResultGrid has no config for a trial that died before its first report.
    """
    for params, error in lost:
        try:
            config = trial_config(plan.space, params)
        except Exception:  # noqa: BLE001 - params Ray never filled in: nothing to name
            config = None
        if config is not None and results.read_row(plan.sweep_uri, config.trial_id) is None:
            _store(plan.sweep_uri, failed_row(config, error), plan.space, plan.varying)


def _rows_of(plan: Plan) -> Any:
    """This space's rows (a sweep dir may hold rows of earlier, different spaces)."""
    frame = results.read(plan.sweep_uri)
    if plan.space.is_search:
        return frame
    ids = {c.trial_id for c in plan.configs}
    return frame[frame["trial_id"].isin(ids)].reset_index(drop=True)
