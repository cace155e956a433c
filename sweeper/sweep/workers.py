"""One trial on several data-parallel workers: Ray Train's TorchTrainer around run_trial.

    driver: a Tune trial (sweeper run) or `sweeper trial`      Ray Train workers, one GPU each
    run_on_workers(config) -- TorchTrainer.fit() ---------->   _worker: the same run_trial, in a
        on_ready()            <- report: all workers up ---      torch.distributed process group
        on_epoch(record)      <- report + checkpoint -------     (NCCL on GPUs, gloo on CPUs;
        rank 0's row          <- last report ---------------      sweeper.distributed says what
                                                                   the workers share)

This is Ray Train V2's pattern for Tune (docs: "Hyperparameter Tuning with Ray Tune"): the Tune
trial is a light driver that calls `trainer.fit()`, and the trainer places its workers in a
placement group of its own, PACK: on one node when they fit, across nodes when not. Reports
reach the driver through a small Ray queue filled by a Train callback (which runs in the Train
controller), so the driver forwards per-epoch records to Tune (or a progress bar) from its own
thread while `fit()` runs in another.

Checkpoints: rank 0 writes `last.pt` every epoch; every rank resumes from it, whatever the
worker count that wrote it (the state is the same on all workers). In a sweep, Ray Train
persists it to RESULTS/_state/<sweep>/_ray/train/<trial_id>/checkpoint_<epoch>/ (Ray
restores it itself when a worker is lost; a later run finds it as it finds Tune's
checkpoints). A trial started from an earlier run's checkpoint gets its bytes through the
object store, once. With
`checkpoint_dir` (`sweeper trial`, one machine) every worker reads and rank 0 writes that folder.

Failures: an exception on a worker ends the run (Ray Train stops the others, which would
otherwise wait in a collective); FailureConfig(max_failures) restarts the workers from the last
checkpoint; after that, fit() raises and the caller writes a failed row naming the worker's
error. A diverged loss gives a failed row on every rank at once (no retry).
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeper import results
from sweeper.config import TrialConfig
from sweeper.sweep.storage import make_scratch
from sweeper.training.checkpoint import CHECKPOINT_NAME

BACKEND_ENV = "SWEEPER_TORCH_BACKEND"  # e.g. gloo: override nccl-on-GPU / gloo-on-CPU
WORKERS_READY = "workers_ready"  # a driver report's key: all workers of the trial are running
# What the Tune trial of a multi-worker trial reserves: it only waits on its workers, so no
# CPU (even 0.01 CPU would leave 1.99 of 2 CPUs, too few for two 1-CPU workers); Tune needs
# a non-empty request, so 1 MiB of Ray's memory resource.
DRIVER_RESOURCES = {"memory": 2**20}
TRAIN_DIR = "train"  # RESULTS/_state/<sweep>/_ray/train/<trial_id>/checkpoint_*
INTO_SWEEP = "sweep"  # run_on_workers(weights=...): rank 0 stores them in the sweep's store
_EPOCH, _ROW = "epoch_record", "row"


def train_checkpoints(sweep_uri: str, trial_id: str) -> str:
    """Where Ray Train keeps a sweep trial's checkpoints (a pyarrow path)."""
    state = results.location(results.state_dir(sweep_uri))[1]
    return f"{state}/_ray/{TRAIN_DIR}/{trial_id}"


def drop_train_checkpoints(sweep_uri: str, trial_id: str) -> None:
    """The trial's row is written: its worker checkpoints have served their purpose."""
    from sweeper.results.listing import delete_dir

    fs, base = results.location(results.state_dir(sweep_uri))
    try:  # never through a link out of the store
        delete_dir(fs, base, train_checkpoints(sweep_uri, trial_id))
    except (FileNotFoundError, OSError):
        pass  # none kept (a one-worker trial) or already gone: disk space, not correctness


def uses_gpus(config: TrialConfig) -> bool:
    """Workers take one GPU each unless the trial asks for the CPU or the cluster has none."""
    import ray

    if config.runtime.device == "cpu":
        return False
    return ray.cluster_resources().get("GPU", 0) > 0


def run_on_workers(
    config: TrialConfig,
    *,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    sweep_uri: str | None = None,
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    trial_fn: Callable[..., dict[str, Any]] | None = None,
    cpus_per_worker: float = 1.0,
    max_failures: int = 0,
    weights: str | None = None,
) -> dict[str, Any]:
    """Train and evaluate `config` on config.runtime.workers Ray Train workers; rank 0's row.

    sweep_uri: checkpoints persist under the sweep (see the module docstring); checkpoint_dir:
    a folder every worker can read (one machine); neither: no checkpoints. resume_from: a local
    folder holding the checkpoint files the workers start from when Ray Train holds none of
    its own. weights: INTO_SWEEP (rank 0 stores them in the sweep, the row names them there)
    or a folder on rank 0's machine; None: not kept. `trial_fn` replaces run_trial on the
    workers (tests). Needs a running Ray (ray.init).
    """
    import ray
    from ray.util.queue import Queue

    from sweeper.data import anchor_data_dir, default_data_dir

    # Ray Train moves its workers into a folder of its own: data folders are resolved here,
    # where the caller's working directory holds; a worker on a node with an absolute
    # $SWEEPER_DATA of its own reads that (sweeper.data.adopt_data_dir)
    loop_config = {
        "data_default": str(default_data_dir().resolve()),
        "trial": anchor_data_dir(config, os.getcwd()).model_dump_json(),
        "asked": config.canonical_json(),
        "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir is not None else None,
        "sweep_uri": sweep_uri,
        "initial": _files(resume_from),
        "trial_fn": trial_fn,
        "weights": weights,
    }
    storage, scratch = _storage(config, sweep_uri)
    inbox = Queue(actor_options={"num_cpus": 0})
    trainer = _trainer(config, loop_config, storage, inbox, cpus_per_worker, max_failures)
    try:
        row, failure = _relay(trainer, inbox, config.trial_id, on_epoch, on_ready)
    finally:
        ray.kill(inbox.actor)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if failure is not None:
        raise _worker_error(failure)
    if row is None:
        raise RuntimeError("the workers ended without reporting a row")
    return row


def _storage(config: TrialConfig, sweep_uri: str | None) -> tuple[dict[str, Any], str | None]:
    """Ray Train's storage arguments, and a scratch folder to remove afterwards (or None):
    under the sweep when there is one, so checkpoints persist (see the module docstring)."""
    if sweep_uri is None:  # Ray Train needs somewhere for its run state; nothing of ours
        scratch = make_scratch(f"{config.trial_id}-train")
        return {"storage_path": scratch}, scratch
    fs, _ = results.location(sweep_uri)
    storage: dict[str, Any] = {
        "storage_path": train_checkpoints(sweep_uri, config.trial_id).rsplit("/", 1)[0]
    }
    if "://" in sweep_uri:
        storage["storage_filesystem"] = fs
    return storage, None


def _trainer(config: TrialConfig, loop_config: dict[str, Any], storage: dict[str, Any],
             inbox: Any, cpus_per_worker: float, max_failures: int) -> Any:  # fmt: skip
    """The TorchTrainer of one trial: its workers, their resources, checkpoints and retries."""
    from ray import train
    from ray.train.torch import TorchConfig, TorchTrainer

    gpu = uses_gpus(config)
    return TorchTrainer(
        _worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=os.environ.get(BACKEND_ENV) or None),
        scaling_config=train.ScalingConfig(
            num_workers=config.runtime.workers,
            use_gpu=gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if gpu else {})},
            placement_strategy="PACK",
        ),
        run_config=train.RunConfig(
            name=config.trial_id,
            callbacks=[_forwarder(inbox)],
            checkpoint_config=train.CheckpointConfig(num_to_keep=1),
            failure_config=train.FailureConfig(max_failures=max_failures),
            **storage,
        ),
    )


def _relay(
    trainer: Any, inbox: Any, trial_id: str,
    on_epoch: Callable[[dict[str, Any]], None] | None, on_ready: Callable[[], None] | None,
) -> tuple[dict[str, Any] | None, BaseException | None]:  # fmt: skip
    """Fit in a thread while this one hands rank 0's reports on (epochs to `on_epoch`, the
    first sign of life to `on_ready`); (rank 0's row or None, fit's error or None)."""
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread below
            failure.append(err)

    runner = threading.Thread(target=fit, name=f"fit-{trial_id}", daemon=True)
    runner.start()
    row = None
    while runner.is_alive() or not inbox.empty():
        try:
            message = inbox.get(timeout=0.5)
        except queue.Empty:
            continue
        if _ROW in message:
            row = message[_ROW]
        elif _EPOCH in message:
            if on_epoch is not None:
                on_epoch(message[_EPOCH])
        elif on_ready is not None:
            on_ready()
    runner.join()
    return row, failure[0] if failure else None


def _forwarder(inbox: Any) -> Any:
    """A Ray Train callback (it runs in the Train controller) putting rank 0's reports into
    `inbox`. Built here so that importing this module does not import Ray Train."""
    from ray.train import UserCallback

    class Forward(UserCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                         checkpoint: Any) -> None:  # fmt: skip
            # rank 0's report, which alone carries the row (Ray Train may hand over the
            # surviving ranks' reports only, so the first need not be rank 0's)
            rows = [m for m in metrics if m.get(_ROW) is not None]
            inbox.put(rows[0] if rows else metrics[0])

    return Forward()


def _worker_error(err: BaseException) -> BaseException:
    """The first worker's own exception when the workers failed (Ray Train's message is a
    multi-line report); the error as it is otherwise."""
    failures = getattr(err, "worker_failures", None)
    if not failures:
        return err
    rank = min(failures)
    cause = failures[rank]
    cause = getattr(cause, "cause", None) or cause  # a RayTaskError wraps the worker's error
    text = str(cause).strip().splitlines()
    return RuntimeError(f"worker {rank}: {type(cause).__name__}: {text[-1] if text else ''}")


def _worker(loop_config: dict[str, Any]) -> None:
    """What every Ray Train worker runs: the trial, reporting each epoch and the row."""
    import ray
    import ray.train
    import ray.train.torch

    from sweeper.data import adopt_data_dir
    from sweeper.trial import run_trial

    adopt_data_dir(loop_config["data_default"])
    config = TrialConfig.model_validate_json(loop_config["trial"])
    device = str(ray.train.torch.get_device())  # this worker's GPU (or the CPU)
    config = config.model_copy(
        update={"runtime": config.runtime.model_copy(update={"device": device})}
    )
    rank = ray.train.get_context().get_world_rank()
    ray.train.report({WORKERS_READY: True})  # a report is a barrier: every worker is up
    workdir = loop_config["checkpoint_dir"] or make_scratch(f"{config.trial_id}-rank{rank}")
    keep = loop_config["weights"] if rank == 0 else None  # rank 0 keeps the trained weights
    # into the sweep (where workdir is this worker's scratch): stored from there, as a
    # one-worker trial's (sweeper.sweep.runner)
    weights_dir = os.path.join(workdir, "weights") if keep == INTO_SWEEP else keep
    sweep_uri = loop_config["sweep_uri"]
    try:
        if loop_config["checkpoint_dir"] is None:
            _restore(workdir, loop_config["initial"])

        upload = _uploader(sweep_uri, config.trial_id)

        def on_epoch(record: dict[str, Any]) -> None:
            checkpoint = None
            if sweep_uri is not None and rank == 0:  # rank 0 wrote last.pt (training.train)
                checkpoint = ray.train.Checkpoint.from_directory(workdir)
            ray.train.report({_EPOCH: record}, checkpoint=checkpoint,
                             checkpoint_dir_name=f"checkpoint_{record['epoch']:06d}",
                             delete_local_checkpoint_after_upload=False,
                             checkpoint_upload_fn=upload)  # fmt: skip

        trial = loop_config["trial_fn"] or run_trial
        try:
            row = trial(config, checkpoint_dir=workdir, on_epoch=on_epoch, catch=False,
                        weights_dir=weights_dir)  # fmt: skip
        except Exception:
            if keep == INTO_SWEEP:  # trained, then an attack failed: keep the training
                _keep_trained(sweep_uri, config.trial_id, weights_dir)
            raise
        row["config"] = loop_config["asked"]  # as asked: "auto", not this worker's "cuda:3"
        if keep == INTO_SWEEP and row.get("weights"):  # from here: the driver may be elsewhere
            row["weights"] = results.store_weights(sweep_uri, config.trial_id, row["weights"])
        ray.train.report({_ROW: row if rank == 0 else None})
    finally:
        if loop_config["checkpoint_dir"] is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _keep_trained(sweep_uri: str, trial_id: str, folder: str) -> None:
    """Rank 0, when the trial raised: weights it saved before an evaluation that then failed
    go to the store all the same (the failed row names them, as a one-worker trial's does),
    so `sweeper eval` can score them without training again. store_weights copies every
    file there (best.pt too); the driver names the one the row's checkpoint setting uses."""
    final = Path(folder, "final.pt")
    if final.is_file():  # else training itself failed: nothing trained to keep
        results.store_weights(sweep_uri, trial_id, final)


def _uploader(sweep_uri: str | None, trial_id: str) -> Callable[[Any, str], Any] | None:
    """Ray Train's checkpoint upload, made atomic: copied under a dot-name, then renamed, so
    a run killed mid-upload leaves the previous checkpoint, never a partial one (readers of
    `checkpoint_*` folders skip dot-names)."""
    if sweep_uri is None:
        return None

    def upload(checkpoint: Any, name: str) -> Any:
        import pyarrow.fs as pafs
        import ray.train

        fs = results.location(sweep_uri)[0]
        base = train_checkpoints(sweep_uri, trial_id)
        partial, final = f"{base}/.{name}.partial", f"{base}/{name}"
        fs.create_dir(partial, recursive=True)
        pafs.copy_files(checkpoint.path, partial, source_filesystem=checkpoint.filesystem,
                        destination_filesystem=fs)  # fmt: skip
        if fs.get_file_info(final).type != pafs.FileType.NotFound:
            # this epoch again: a run killed after uploading it, before Ray Train recorded it
            fs.delete_dir(final)
        fs.move(partial, final)
        return ray.train.Checkpoint(path=final, filesystem=fs)

    return upload


def _files(folder: str | Path | None) -> dict[str, Any]:
    """The checkpoint files of a local folder (last.pt and a best epoch's weights), each put
    in the object store: workers on any node read them once."""
    import ray

    if folder is None or not Path(folder, CHECKPOINT_NAME).is_file():
        return {}
    return {f.name: ray.put(f.read_bytes()) for f in Path(folder).iterdir() if f.is_file()}


def _restore(workdir: str, initial: dict[str, Any]) -> None:
    """The further on of Ray Train's latest checkpoint and the one an earlier run left (sent
    by the driver), else nothing: a fresh start.

    Within a run, Ray Train's is the newest (a worker restarted after a failure). In a new
    run it is what the killed run's checkpoint_manager_snapshot.json recorded, which lags
    one epoch behind when the kill came after an upload and before Ray Train recorded it:
    the driver's copy (the newest folder) is then further on."""
    import ray
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        checkpoint.to_directory(workdir)
        sent, ours = initial.get(CHECKPOINT_NAME), Path(workdir, CHECKPOINT_NAME)
        mine = _epoch_of(ours.read_bytes()) if ours.is_file() else -1
        if sent is None or mine >= _epoch_of(ray.get(sent)):
            return
        for file in Path(workdir).iterdir():  # Ray Train's older one: replaced, not mixed
            if file.is_file():
                file.unlink()
    for name, ref in initial.items():
        Path(workdir, name).write_bytes(ray.get(ref))


def _epoch_of(last_pt: bytes) -> int:
    """The epoch a last.pt holds (-1 when it does not load)."""
    import io

    import torch

    try:
        return int(torch.load(io.BytesIO(last_pt), weights_only=True, map_location="cpu")["epoch"])
    except Exception:  # noqa: BLE001 - a damaged copy is never the further one
        return -1
