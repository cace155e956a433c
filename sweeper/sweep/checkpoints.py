"""A trial's per-epoch checkpoints in the store: restore the newest, set damaged ones aside,
drop them once a run has finished.

Ray Tune uploads each epoch's checkpoint to
RESULTS/_state/<sweep>/_ray/<run>/<trial_id>/checkpoint_N/.
Within a run, a retried trial gets its last one from `tune.get_checkpoint()`; a trial that was
running when its driver died goes on, in the next run, from the newest one that run left. A
copy cut short by a kill holds a truncated `last.pt`: it is renamed `damaged_checkpoint_N`
(kept for inspection, never restored again, `--retry-failed` included) and the trial starts
from scratch instead of failing for good. Once a trial has its row, the checkpoints earlier
runs left for it are dead weight and go too.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from sweeper import results
from sweeper.results.listing import Entry, delete_dir, entries, warn_link

log = logging.getLogger(__name__)
PREFIX = "checkpoint_"
DAMAGED_PREFIX = "damaged_"
# a checkpoint folder's whole name: `checkpoint_*` also matches Ray Train's own
# `checkpoint_manager_snapshot.json` beside them (it sorts after `checkpoint_000002`)
CHECKPOINT_FOLDER = re.compile(re.escape(PREFIX) + r"\d+")


def is_checkpoint(entry: Entry) -> bool:
    """A listing entry (`results.listing.entries`) of a checkpoint folder (Tune's or Ray
    Train's), nothing else."""
    return entry.is_dir and CHECKPOINT_FOLDER.fullmatch(entry.base_name) is not None


def restore(sweep_uri: str, trial_id: str, workdir: str) -> str | None:
    """Fill `workdir` with the trial's newest checkpoint, if any. Returns a warning (and
    leaves `workdir` empty) when that checkpoint is damaged."""
    from ray import tune

    from sweeper.training.checkpoint import checkpoint_problem

    checkpoint = tune.get_checkpoint()
    source: tuple[Any, str] | None = None
    if checkpoint is not None:  # a Ray retry within this run: its last reported epoch
        checkpoint.to_directory(workdir)
    else:  # a run after a killed driver: where that run left this trial
        source = previous_checkpoint(sweep_uri, trial_id, workdir)
    problem = checkpoint_problem(workdir)
    if problem is None:
        return None
    shutil.rmtree(workdir)
    Path(workdir).mkdir()
    where = checkpoint.path if checkpoint is not None else "a restored checkpoint"
    if source is not None:  # a previous run's copy: set it aside (Ray tracks its own ones)
        fs, path = source
        parent, name = path.rsplit("/", 1)
        try:
            fs.move(path, f"{parent}/{DAMAGED_PREFIX}{name}")
            where = f"{path} (moved to {DAMAGED_PREFIX}{name})"
        except OSError as err:
            where = path
            log.warning("could not move the damaged checkpoint %s aside: %s", path, err)
    message = f"damaged checkpoint {where}: {problem}; the trial starts from scratch"
    log.warning(message)
    return message


def previous_checkpoint(sweep_uri: str, trial_id: str, into: str) -> tuple[Any, str] | None:
    """Copy the newest checkpoint an earlier run left for this trial into `into`; return
    (filesystem, path) of what was copied, or None when there was nothing usable.

    Finished runs delete their checkpoints, so only an interrupted run leaves one.
    """
    fs, base = results.location(results.state_dir(sweep_uri))
    found = []
    try:
        for run in _folders(fs, f"{base}/_ray"):
            # one look at the trial's folder, not a listing of the run's (which grows with
            # its trials: quadratic over a run); a link named like the trial is no folder
            if not _is_folder(fs, f"{run.path}/{trial_id}"):
                continue
            found += [i for i in _folders(fs, f"{run.path}/{trial_id}") if is_checkpoint(i)]
        if not found:
            return None
        newest = max(found, key=lambda info: (info.mtime_ns or 0, info.path))
        pafs.copy_files(newest.path, into, source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
    except OSError:
        return None  # no usable checkpoint: the trial starts from scratch
    return fs, newest.path


def drop_other_runs(sweep_uri: str, trial_id: str, current_run: str) -> None:
    """Remove the checkpoints earlier (killed) runs left for a trial that now has its row.

    Nothing accumulates, and a rerun of a failed trial starts from scratch, as it would
    after a run that ended normally."""
    fs, base = results.location(results.state_dir(sweep_uri))
    try:
        for run in _folders(fs, f"{base}/_ray"):
            if run.base_name != current_run:
                drop_checkpoints(fs, f"{run.path}/{trial_id}", root=base)
    except OSError:
        pass  # disk space, not correctness


def drop_finished(sweep_uri: str, finished: set[str]) -> None:
    """At a run's start: remove what earlier runs left for trials that have their rows now.

    A trial that ended during a run later interrupted (Ctrl+C, a time limit) keeps the
    checkpoints of that run, and no later run would touch them again. One listing per
    earlier run (Ray Train's `train/` folder included)."""
    fs, base = results.location(results.state_dir(sweep_uri))
    try:
        for run in _folders(fs, f"{base}/_ray"):
            for trial in _folders(fs, run.path):
                if trial.base_name in finished:
                    drop_checkpoints(fs, trial.path, root=base)
    except OSError:
        pass  # disk space, not correctness


def _is_folder(fs: Any, path: str) -> bool:
    """Whether `path` is a folder, not a link to one; raises OSError."""
    if isinstance(fs, pafs.LocalFileSystem):
        if os.path.islink(path):
            warn_link(path)
            return False
        return os.path.isdir(path)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def _folders(fs: Any, path: str) -> list[Any]:
    """The folders directly in `path` (none when it does not exist; links are skipped, never
    followed out of the store); raises OSError."""
    return [entry for entry in entries(fs, path) if entry.is_dir]


def drop_checkpoints(fs: Any, run_dir: str, *, root: str | None = None) -> None:
    """A finished run's checkpoints have served their purpose (retries); free the space.
    Only Ray's `checkpoint_*` folders go, never through a link (`root`: the sweep folder;
    a link between it and `run_dir` leaves everything alone)."""
    try:
        for entry in entries(fs, run_dir, recursive=True):
            if entry.is_dir and entry.base_name.startswith(PREFIX):
                delete_dir(fs, root or run_dir, entry.path)
    except OSError:
        pass  # disk space, not correctness: never fail a finished sweep over it
