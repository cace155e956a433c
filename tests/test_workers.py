"""Trials on several data-parallel workers (runtime.workers): gloo on CPU processes stands in
for NCCL on GPUs. The same loss curve as one worker, exact sharded evaluation, and a killed
2-worker trial that resumes from its last epoch."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
import torch
from helpers import checkpoint_folders, kill_when, marked_env, tiny_cnn
from pydantic import ValidationError

ray = pytest.importorskip("ray")

from sweeper import attacks, distributed, results  # noqa: E402
from sweeper.config import TrialConfig  # noqa: E402
from sweeper.results.listing import entries  # noqa: E402
from sweeper.space import load  # noqa: E402
from sweeper.sweep import checkpoints  # noqa: E402
from sweeper.sweep.plan import make_plan  # noqa: E402
from sweeper.sweep.runner import RunOptions, _init_ray, run_sweep, run_trial_on_workers  # noqa: E402
from sweeper.trial import config_columns, run_trial  # noqa: E402

# A network whose loss falls within two epochs and whose norm does not depend on the batch
# (group norm: the curves below can only agree if the workers reproduce the global batch's
# gradient; batch norm, per worker as in the reference, normalises half-batches instead).
# Post-activation on 16x16 digits: the loss falls within the 64 steps compared.
CURVE = {
    "seed": 0,
    "arch": {"block": "basic", "depths": [1, 1, 1], "widths": [0.5] * 3, "norm": "groupnorm",
             "activation_order": "post"},
    "data": {"dataset": "digits", "image_size": 16, "holdout_size": 64, "train_size": 1024,
             "test_size": 128},
    "train": {"method": "clean", "epochs": 2, "batch_size": 32, "lr": 0.1, "milestones": [1.0]},
    "eval": {"pgd_steps": 2, "cw_steps": 0, "aa_size": 0, "batch_size": 128,
             "history_pgd_steps": 0},
}  # fmt: skip


def test_workers_split_the_global_batch_and_are_not_the_trial() -> None:
    two = TrialConfig(runtime={"workers": 2}, train={"batch_size": 128})
    assert two.trial_id == TrialConfig().trial_id  # N changes the speed, not the experiment
    assert config_columns(two)["workers"] == 2
    with pytest.raises(ValidationError, match="runtime.workers: 3 workers cannot split"):
        TrialConfig(runtime={"workers": 3}, train={"batch_size": 128})


def test_workers_per_trial_changes_resources_not_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sweeper.cli import main

    smoke = str(Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml")
    plans = []
    for extra in ([], ["--workers-per-trial", "2"]):
        argv = ["run", smoke, "--dry-run", "--json", "--results", str(tmp_path), *extra]
        assert main(argv) == 0
        plans.append(json.loads(capsys.readouterr().out)["trials_list"])
    assert [t["trial_id"] for t in plans[0]] == [t["trial_id"] for t in plans[1]]
    assert {t["workers"] for t in plans[0]} == {1} and {t["workers"] for t in plans[1]} == {2}
    assert main(["run", smoke, "--dry-run", "--workers-per-trial", "3"]) == 2  # 64 / 3
    assert "cannot split train.batch_size 64" in capsys.readouterr().err


def test_alone_the_helpers_change_nothing() -> None:
    x, y = torch.arange(12.0).view(6, 2), torch.arange(6)
    [(xs, ys)] = list(distributed.local_slices(iter([(x, y)])))
    assert torch.equal(xs, x) and torch.equal(ys, y)
    assert distributed.shard(7) == slice(0, 7) and distributed.is_main()
    t = torch.tensor(3)
    assert distributed.all_sum(t) is t and t.item() == 3
    model = tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    distributed.average_norm_statistics(model)  # one worker: nothing to average
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    distributed.check_replicas_agree(model, what="alone")  # raises when replicas differ


# ---------------------------------------------------------------------------------------------
# two gloo processes without Ray: sharded evaluation counts every point exactly once


def _sharded_metrics(rank: int, port: int, out: Any) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model, x, y = _eval_problem()
    metrics = _metrics(model, x, y)
    if rank == 0:
        out.put(metrics)
    dist.destroy_process_group()


def _eval_problem() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (23, 3, 8, 8), dtype=torch.uint8)  # odd: shards of 11 and 12
    return tiny_cnn().eval(), x, torch.randint(0, 10, (23,))


def _metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    pgd = functools.partial(attacks.pgd, eps=8 / 255, step_size=2 / 255, steps=2,
                            random_start=False)  # fmt: skip
    return {
        "clean": attacks.accuracy(model, x, y, batch_size=5),
        "pgd": attacks.accuracy(model, x, y, batch_size=5, attack=pgd),
        "aa": attacks.autoattack_accuracy(model, x[:9], y[:9], eps=8 / 255, version="custom",
                                          attacks=["apgd-ce"], batch_size=5, device="cpu"),
    }  # fmt: skip


def test_sharded_evaluation_counts_every_point_once() -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = mp.get_context("spawn").SimpleQueue()
    procs = mp.spawn(_sharded_metrics, args=(port, out), nprocs=2, join=False)
    sharded = out.get()
    procs.join()
    model, x, y = _eval_problem()
    alone = _metrics(model, x, y)
    assert sharded["clean"] == alone["clean"] and sharded["pgd"] == alone["pgd"]
    # AutoAttack attacks each point alone; its random draws follow the batches, so the
    # sharded result is each shard's own run, counted over all 9 points.
    robust = [
        attacks._autoattack_robust(model, x[part], y[part], eps=8 / 255, version="custom",
                                   attacks=["apgd-ce"], batch_size=5, device="cpu",
                                   seed=0).item()
        for part in (slice(0, 4), slice(4, 9))
    ]  # fmt: skip
    assert sharded["aa"] == sum(robust) / 9


# ---------------------------------------------------------------------------------------------
# Ray Train on a local Ray instance


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trial functions below
    assert _init_ray(RunOptions(), num_cpus=2)  # the local instance `sweeper run` starts
    yield
    ray.shutdown()


def test_two_workers_follow_the_one_worker_loss_curve(local_ray: None) -> None:
    one = run_trial(CURVE, catch=False)
    two = run_trial_on_workers(TrialConfig.model_validate({**CURVE, "runtime": {"workers": 2}}))
    assert (one["status"], two["status"]) == ("ok", "ok"), two["error"]
    assert (one["workers"], two["workers"]) == (1, 2) and one["trial_id"] == two["trial_id"]
    a, b = ([r["train_loss"] for r in json.loads(row["history"])] for row in (one, two))
    # Why these bounds: both runs start from the same weights and see the same global
    # batches (one data generator; each worker takes its half of every batch), and DDP's
    # mean of the two half-batch gradients is the global batch's gradient. Only the order of
    # float additions differs (~1e-7 relative per step), which training then amplifies:
    # measured here 6e-6 (epoch 1) and 6e-5 (epoch 2), as much as running the one-worker
    # trial on 2 torch threads instead of 1 does (6e-6, 7e-5). The bounds sit 7x and more
    # above that and 4x and more below what a real difference does: the learning rate halved
    # or doubled moves epoch 1 by 4e-4 or 6e-3 and epoch 2 by 7e-3 or 6e-3; half the batch
    # moves them by 1.4e-3 and 2e-3.
    assert abs(a[0] - b[0]) / a[0] < 1e-4
    assert abs(a[1] - b[1]) / a[1] < 5e-4
    assert a[1] < a[0] - 0.03  # the curve moves, so a wrong gradient would show
    assert two["clean_n"] == one["clean_n"] == 128 and 0 <= two["pgd_acc"] <= 1


SPACE = """
sweep: resume
base:
  arch: {block: basic, depths: [1, 1, 1], widths: [0.25, 0.25, 0.25]}
  data: {dataset: synthetic, image_size: 8, synthetic_train: 288, synthetic_test: 32,
         holdout_size: 32}
  train: {method: trades, steps: 1, epochs: 15, batch_size: 32}
  eval: {pgd_steps: 1, cw_steps: 1, aa_size: 0, batch_size: 32, history_pgd_steps: 1}
  runtime: {workers: 2}
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds leftover processes via /proc")
def test_a_killed_two_worker_trial_resumes_from_its_last_epoch(
    local_ray: None, tmp_path: Path
) -> None:
    path = tmp_path / "resume.yaml"
    path.write_text(textwrap.dedent(SPACE))
    out = tmp_path / "r"
    [config] = make_plan(load(path), str(out)).to_run
    kept = out / "_state" / "resume" / "_ray" / "train" / config.trial_id
    cmd = [sys.executable, "-m", "sweeper", "run", str(path), "--results", str(out)]
    with marked_env() as env:  # Ray's processes outlive a SIGKILLed driver: ended on exit
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        kill_when(first, (kept / "checkpoint_000002" / "last.pt").exists, timeout_s=1200,
                  waiting_for="a second checkpoint")  # fmt: skip
    last = checkpoint_folders(kept)[-1]  # the newest; uploads are atomic, none is partial
    left = torch.load(last / "last.pt", weights_only=True)
    assert 2 <= left["epoch"] < 15 and not list(out.glob("resume/*.parquet"))

    summary = run_sweep(load(path), RunOptions(results=str(out), progress=False))
    [row] = summary.rows.to_dict("records")
    assert row["status"] == "ok", row["error"]
    assert row["workers"] == 2
    history = json.loads(row["history"])
    assert [r["epoch"] for r in history] == list(range(1, 16))
    # the epochs before the kill are the checkpoint's own records (their timings included):
    # the rerun went on from there rather than training them again
    assert history[: left["epoch"]] == left["history"]
    assert not kept.exists()  # the row is written: its checkpoints are gone
    stored = results.load_weights(str(out / "resume"), row["weights"])  # rank 0 stored them
    assert stored.keys() == left["model"].keys()
    assert results.read_row(str(out / "resume"), config.trial_id)["status"] == "ok"


def trained_then_failed(config: TrialConfig, *, checkpoint_dir: str | None = None,
                        on_epoch: Any = None, catch: bool = True,
                        weights_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Saves its weights as run_trial does before evaluating, then fails as an attack that
    runs out of memory would."""
    if weights_dir is not None:  # as trial.save_weights: the folder need not exist yet
        Path(weights_dir).mkdir(parents=True, exist_ok=True)
        torch.save({"w": torch.ones(2)}, Path(weights_dir) / "final.pt")
    raise RuntimeError("CUDA out of memory")


def test_a_two_worker_trial_failing_after_training_keeps_its_weights(
    local_ray: None, tmp_path: Path
) -> None:
    """As a one-worker trial's: the failed row names the trained weights, which
    `sweeper eval` can then score without training again."""
    path = tmp_path / "resume.yaml"
    path.write_text(textwrap.dedent(SPACE).replace("sweep: resume", "sweep: oom"))
    out = tmp_path / "r"
    summary = run_sweep(load(path), RunOptions(results=str(out), progress=False, max_failures=0),
                        trial_fn=trained_then_failed)  # fmt: skip
    [row] = summary.rows.to_dict("records")
    assert row["status"] == "failed" and "CUDA out of memory" in row["error"]
    assert row["weights"] == f"_weights/{row['trial_id']}/final.pt"
    assert results.load_weights(str(out / "oom"), row["weights"]).keys() == {"w"}


def test_the_newest_checkpoint_is_a_folder_not_ray_trains_snapshot(tmp_path: Path) -> None:
    """Ray Train writes `checkpoint_manager_snapshot.json` beside its `checkpoint_N` folders;
    a bare `max(glob("checkpoint_*"))` picks that file (seen failing under load)."""
    for name in ("checkpoint_000001", "checkpoint_000002", "damaged_checkpoint_000003"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint_manager_snapshot.json").write_text("{}")
    (tmp_path / ".checkpoint_000004.partial").mkdir()
    assert [p.name for p in checkpoint_folders(tmp_path)] == [
        "checkpoint_000001", "checkpoint_000002"
    ]
    listing = entries(pafs.LocalFileSystem(), str(tmp_path))
    assert sorted(i.base_name for i in listing if checkpoints.is_checkpoint(i)) == [
        "checkpoint_000001", "checkpoint_000002"
    ]
    with tempfile.TemporaryDirectory() as into:  # an earlier run's newest, copied for a resume
        sweep = tmp_path / "store" / "s"
        run = tmp_path / "store" / "_state" / "s" / "_ray" / "train" / "t1"
        for name in ("checkpoint_000001", "checkpoint_000002"):
            (run / name).mkdir(parents=True)
            (run / name / "last.pt").write_text(name)
        (run / "checkpoint_manager_snapshot.json").write_text("{}")
        assert checkpoints.previous_checkpoint(str(sweep), "t1", into) is not None
        assert Path(into, "last.pt").read_text() in {"checkpoint_000001", "checkpoint_000002"}


def test_the_epoch_of_a_checkpoint_file_decides_which_resume_is_further_on(
    tmp_path: Path,
) -> None:
    """A rerun gets Ray Train's snapshot checkpoint and the driver's newest folder; the one
    with the later epoch wins (workers._restore), a damaged one never does."""
    import io

    from sweeper.sweep.workers import _epoch_of

    data = io.BytesIO()
    torch.save({"epoch": 3, "model": {"w": torch.ones(1)}}, data)
    assert _epoch_of(data.getvalue()) == 3
    assert _epoch_of(data.getvalue()[:20]) == -1 and _epoch_of(b"") == -1
