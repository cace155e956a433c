"""The runner on a local Ray instance: resume by trial_id, failures, retries, Optuna, a killed
driver. Trial functions here are tiny stand-ins (the real run_trial is used end to end once)."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ray = pytest.importorskip("ray")
from helpers import checkpoint_folders, kill_when, log_dir, marked_env, tiny_space  # noqa: E402

from sweeper import results  # noqa: E402
from sweeper.config import TrialConfig  # noqa: E402
from sweeper.schema import empty_row  # noqa: E402
from sweeper.space import load  # noqa: E402
from sweeper.sweep.runner import RunOptions, _init_ray, run_sweep  # noqa: E402

LOG_DIR = log_dir("sweeper-test-runner-")  # captured by value in the workers


def _log(kind: str, config: TrialConfig) -> None:
    with open(os.path.join(LOG_DIR, f"{config.sweep}.log"), "a") as handle:
        handle.write(f"{kind} {config.trial_id}\n")


def fake_trial(config: TrialConfig, *, checkpoint_dir: str | None = None,
               on_epoch: Any = None, catch: bool = True,
               weights_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Looks like run_trial: one 'epoch' with a checkpoint, then an ok row."""
    from sweeper.trial import config_columns

    _log("run", config)
    if config.arch.activation[0] == "silu" and not os.path.exists(f"{LOG_DIR}/silu-fixed"):
        raise RuntimeError("boom")
    if config.arch.activation[0] == "mish" and checkpoint_dir is not None:
        marker = os.path.join(checkpoint_dir, "epoch1")
        if not os.path.exists(marker):  # first attempt: checkpoint, then the node "dies"
            Path(marker).write_text("1")
            on_epoch({"epoch": 1, "holdout_pgd_acc": 0.1})
            os._exit(1)
        _log("resumed", config)
    elif on_epoch is not None:
        on_epoch({"epoch": 1, "holdout_pgd_acc": 0.1})
    row = empty_row()
    now = datetime.now(timezone.utc)
    acc = 1.0 - abs(config.train.lr - 0.05)  # Optuna has something to maximise
    row.update(config_columns(config), status="ok", clean_acc=acc, pgd_acc=acc / 2,
               cw_acc=acc / 3, aa_acc=acc / 4, started_at=now, ended_at=now)  # fmt: skip
    return row


def runs(sweep: str) -> list[str]:
    path = Path(LOG_DIR) / f"{sweep}.log"
    return path.read_text().split("\n")[:-1] if path.exists() else []


@pytest.fixture(scope="module", autouse=True)
def ray_instance() -> Iterator[str]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    assert _init_ray(RunOptions(), num_cpus=2)  # the local instance `sweeper run` starts
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def space_file(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(tiny_space(name, textwrap.dedent(body)))
    return path


def test_runs_each_trial_once_and_an_extended_space_only_its_new_cells(tmp_path: Path) -> None:
    opts = RunOptions(results=str(tmp_path / "r"), progress=False)
    grid = "axes:\n  - grid: {{arch.activation: [{acts}]}}\nseeds: [0, 1]\n"
    first = run_sweep(load(space_file(tmp_path, "grid", grid.format(acts="relu, gelu"))), opts,
                      trial_fn=fake_trial)  # fmt: skip
    assert first.started == 4 and len(first.rows) == 4 and set(first.rows["status"]) == {"ok"}
    assert len(runs("grid")) == 4
    again = run_sweep(load(space_file(tmp_path, "grid", grid.format(acts="relu, gelu"))), opts,
                      trial_fn=fake_trial)  # fmt: skip
    assert again.started == 0 and len(runs("grid")) == 4
    wider = run_sweep(load(space_file(tmp_path, "grid", grid.format(acts="relu, gelu, elu"))),
                      opts, trial_fn=fake_trial)  # fmt: skip
    assert wider.started == 2 and len(wider.rows) == 6 and len(runs("grid")) == 6
    assert len(results.read(str(tmp_path / "r" / "grid"))) == 6


def test_a_failing_trial_leaves_a_failed_row_and_retry_failed_reruns_it(tmp_path: Path) -> None:
    opts = RunOptions(results=str(tmp_path / "r"), progress=False, max_failures=1)
    path = space_file(tmp_path, "fail", "axes:\n  - grid: {arch.activation: [relu, silu, mish]}\n")
    summary = run_sweep(load(path), opts, trial_fn=fake_trial)
    by_act = {r["activation"]: r for _, r in summary.rows.iterrows()}
    assert by_act["silu"]["status"] == "failed" and by_act["silu"]["error"] == "RuntimeError: boom"
    assert summary.failed == [(by_act["silu"]["trial_id"], "RuntimeError: boom")]  # exit code 1
    assert summary.finished == 3 and summary.unfinished == 0
    assert by_act["relu"]["status"] == "ok"
    # mish killed its worker after a checkpoint: Ray retried it from that checkpoint
    assert by_act["mish"]["status"] == "ok"
    assert [r.split()[0] for r in runs("fail")].count("resumed") == 1
    assert run_sweep(load(path), opts, trial_fn=fake_trial).started == 0
    Path(LOG_DIR, "silu-fixed").write_text("")
    retry = RunOptions(results=str(tmp_path / "r"), progress=False, retry_failed=True)
    summary = run_sweep(load(path), retry, trial_fn=fake_trial)
    assert summary.started == 1 and set(summary.rows["status"]) == {"ok"}


def test_optuna_search_through_ray_resumes_its_budget(tmp_path: Path) -> None:
    body = """
        axes:
          - sample:
              params:
                train.lr: {{loguniform: [0.01, 0.2]}}
                arch.activation: {{choice: [relu, gelu]}}
        search: {{method: optuna, sampler: tpe, metric: clean_acc, mode: max, num_samples: {n}}}
    """
    opts = RunOptions(results=str(tmp_path / "r"), progress=False, max_concurrent=2)
    first = run_sweep(load(space_file(tmp_path, "opt", body.format(n=4))), opts,
                      trial_fn=fake_trial)  # fmt: skip
    assert first.started == 4 and len(first.rows) == 4
    more = run_sweep(load(space_file(tmp_path, "opt", body.format(n=6))), opts,
                     trial_fn=fake_trial)  # fmt: skip
    assert more.started == 2 and len(more.rows) == 6
    assert set(more.rows["activation"]) <= {"relu", "gelu"}
    stored = pd.read_parquet(tmp_path / "r" / "opt")  # the sampled keys are columns
    assert stored["train.lr"].between(0.01, 0.2).all()
    assert set(stored["activation"]) <= {"relu", "gelu"} and "arch.activation" not in stored
    assert all(0.01 <= TrialConfig.model_validate_json(c).train.lr <= 0.2
               for c in more.rows["config"])  # fmt: skip


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds leftover processes via /proc")
def test_a_killed_driver_resumes_without_running_anything_twice(tmp_path: Path) -> None:
    acts = "[relu, gelu, elu, silu, mish, softplus]"
    path = space_file(tmp_path, "kill", f"axes:\n  - grid: {{arch.activation: {acts}}}\n")
    out = tmp_path / "r"
    # a local run (its own Ray instance, as a researcher's first run would be)
    cmd = [sys.executable, "-m", "sweeper", "run", str(path), "--results", str(out),
           "--max-concurrent", "1", "--set", "train.epochs=15"]  # fmt: skip
    with marked_env() as env:  # Ray's agents outlive a SIGKILLed driver: ended on exit
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        kill_when(first, lambda: bool(results.status_by_id(str(out / "kill"))), timeout_s=1200,
                  waiting_for="a row")  # fmt: skip
        assert len(results.status_by_id(str(out / "kill"))) < 6  # killed mid-sweep
        # killed mid-run (maybe mid-compaction): the table's folder holds its table only
        assert [p.name for p in (out / "kill").iterdir()] in ([], ["rows.parquet"])
        done = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    frame = results.read(str(out / "kill"))
    assert sorted(frame["activation"]) == ["elu", "gelu", "mish", "relu", "silu", "softplus"]
    assert set(frame["status"]) == {"ok"} and frame["trial_id"].is_unique
    assert [p.name for p in (out / "kill").iterdir()] == ["rows.parquet"]
    assert sorted(pd.read_parquet(out / "kill")["activation"]) == sorted(frame["activation"])
    import polars as pl

    assert sorted(pl.read_parquet(out / "kill")["activation"]) == sorted(frame["activation"])
    assert not list((out / "_state" / "kill" / "_rows").glob("*.parquet"))  # all compacted


def test_progress_without_a_terminal_writes_plain_lines(tmp_path: Path) -> None:
    """A batch job's log: a line per start and end (trial_id, metrics or error), summaries."""
    import io
    from types import SimpleNamespace

    from sweeper.sweep.plan import PARAM
    from sweeper.sweep.progress import SweepProgress
    from sweeper.sweep.runner import make_plan

    path = space_file(tmp_path, "prog", "axes:\n  - grid: {arch.activation: [relu, gelu, elu]}\n")
    plan = make_plan(load(path), str(tmp_path / "r"))
    ids = [c.trial_id for c in plan.to_run]
    out = io.StringIO()
    view = SweepProgress(plan, metric="cw_acc", summary_every=0.0, stream=out)
    a, b = (SimpleNamespace(trial_id=t, config={PARAM: c.model_dump_json()}, get_error=lambda: "")
            for t, c in zip("ab", plan.to_run))  # fmt: skip
    with view:
        assert view.plain  # a StringIO is no terminal
        view.on_trial_start(0, [], a)
        view.on_trial_start(0, [], b)
        # Tune fills its own trial_id into results: the lines must name ours
        ok = {"status": "ok", "trial_id": "a", "cw_acc": 0.4, "clean_acc": 0.9,
              "warning": "damaged checkpoint x"}  # fmt: skip
        view.on_trial_result(0, [], a, ok)
        view.on_trial_complete(0, [], a)
        failed = {"status": "failed", "trial_id": "b", "error": "TrialFailed: diverged: ..."}
        view.on_trial_result(0, [], b, failed)
        view.on_trial_complete(0, [], b)
        view.on_step_end(0, [])
    assert view.counts() == {"done": 1, "failed": 1, "running": 0, "pending": 1}
    assert view.failures() == [(ids[1], "TrialFailed: diverged: ...")]
    assert view.eta_seconds() is not None
    text = out.getvalue()
    assert "\x1b" not in text
    lines = [line.split(" ", 2)[2] for line in text.splitlines()]  # without the time stamp
    assert f"start   {ids[0]} (1 of 3)" in lines and f"start   {ids[1]} (2 of 3)" in lines
    assert f"warning {ids[0]}: damaged checkpoint x" in lines
    assert any(line.startswith(f"ok      {ids[0]}  clean 90.0  pgd -  cw 40.0") for line in lines)
    assert f"failed  {ids[1]}: TrialFailed: diverged: ..." in lines
    assert lines[-1].startswith("prog: done 1, running 0, failed 1, pending 1 of 3; elapsed ")


def test_a_trial_resumes_from_the_checkpoint_an_interrupted_run_left(tmp_path: Path) -> None:
    from sweeper.sweep.runner import make_plan

    path = space_file(tmp_path, "again", "axes:\n  - grid: {arch.activation: [mish]}\n")
    [config] = make_plan(load(path), str(tmp_path / "r")).to_run
    state = tmp_path / "r" / "_state" / "again"
    left = state / "_ray" / "run-killed" / config.trial_id / "checkpoint_000002"
    left.mkdir(parents=True)
    (left / "epoch1").write_text("1")  # what fake_trial's first attempt writes
    summary = run_sweep(load(path), RunOptions(results=str(tmp_path / "r"), progress=False),
                        trial_fn=fake_trial)  # fmt: skip
    assert list(summary.rows["status"]) == ["ok"]
    assert runs("again") == [f"run {config.trial_id}", f"resumed {config.trial_id}"]


def dying_trial(config: TrialConfig, *, checkpoint_dir: str | None = None,
                on_epoch: Any = None, catch: bool = True,
                weights_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Its worker dies before the first report (out of memory, a segfault)."""
    os._exit(1)


def test_an_optuna_trial_whose_worker_dies_at_once_is_a_failed_row(tmp_path: Path) -> None:
    """Ray has no config for a trial that never reported: the driver used to crash on it."""
    body = """
        axes:
          - sample:
              params:
                train.lr: {loguniform: [0.01, 0.2]}
        search: {method: optuna, metric: clean_acc, num_samples: 1}
    """
    opts = RunOptions(results=str(tmp_path / "r"), progress=False, max_failures=0)
    summary = run_sweep(load(space_file(tmp_path, "dies", body)), opts, trial_fn=dying_trial)
    [row] = summary.rows.to_dict("records")
    assert row["status"] == "failed" and summary.failed == [(row["trial_id"], row["error"])]
    assert summary.unfinished == 0


def test_real_run_trial_end_to_end_past_a_damaged_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real run_trial, resuming a trial whose checkpoint a killed run left truncated: the
    copy is set aside with a warning (never restored again) and the trial starts over."""
    from sweeper.sweep.runner import make_plan
    from sweeper.training.checkpoint import save_checkpoint

    path = space_file(tmp_path, "real", "axes:\n  - grid: {arch.activation: [relu]}\n")
    [config] = make_plan(load(path), str(tmp_path / "r")).to_run
    state = tmp_path / "r" / "_state" / "real"
    left = state / "_ray" / "run-killed" / config.trial_id / "checkpoint_000001"
    file = save_checkpoint(left, {"trial_id": config.trial_id, "epoch": 1, "x": torch_ones()})
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    summary = run_sweep(load(path), RunOptions(results=str(tmp_path / "r")))
    [row] = summary.rows.to_dict("records")
    assert row["status"] == "ok", row["error"]
    assert 0 <= row["clean_acc"] <= 1 and row["pgd_n"] == 32 and row["macs"] > 0
    assert (left.parent / "damaged_checkpoint_000001" / "last.pt").is_file()
    assert not checkpoint_folders(tmp_path / "r" / "_state" / "real" / "_ray", "*/*/checkpoint_*")
    # the worker stored the trained weights in the store, beside the row that names them
    import torch

    from sweeper.models import build

    assert row["weights"] == f"_weights/{row['trial_id']}/final.pt"
    state = torch.load(tmp_path / "r" / "_state" / "real" / row["weights"], weights_only=True)
    build(TrialConfig.model_validate_json(row["config"]).arch).load_state_dict(state)
    assert row["space_sha256"] == load(path).sha256 and row["ray_version"] == ray.__version__
    log = capsys.readouterr().err  # not a terminal: plain lines
    assert f"warning {config.trial_id}: damaged checkpoint " in log, log
    assert f"ok      {config.trial_id}  clean " in log, log


def torch_ones() -> Any:
    import torch

    return torch.ones(1000)


def test_a_local_instance_listens_on_loopback_only(ray_instance: str) -> None:
    """Safe by default: no port of a local run's Ray processes is open beyond this machine."""
    psutil = pytest.importorskip("psutil")  # ships with Ray

    ray.get(ray.remote(lambda: os.getpid()).remote())  # at least one worker up
    driver = psutil.Process()
    bound = set()
    for proc in [driver, *driver.children(recursive=True)]:  # GCS, raylet, agents, workers
        try:
            sockets = proc.net_connections(kind="inet")
        except psutil.Error:  # a worker that just ended
            continue
        listening = [s for s in sockets if s.status == psutil.CONN_LISTEN]
        bound |= {(proc.name(), proc.pid, s.laddr.ip, s.laddr.port) for s in listening}
    assert {"gcs_server", "raylet"} <= {name for name, *_ in bound}, bound
    for name, pid, ip, port in bound:
        address = ipaddress.ip_address(ip.split("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        assert (mapped or address).is_loopback, f"{name} (pid {pid}) on {ip}:{port}; {bound}"
    assert ray_instance.startswith("127.0.0.1:")


def test_optuna_warm_start_skips_rows_outside_the_current_ranges(tmp_path: Path) -> None:
    """A rerun with a narrowed range (or rows of an earlier space) must not crash Optuna."""
    from sweeper.sweep.runner import make_plan
    from sweeper.sweep.search import _known_points, optuna_search
    from sweeper.trial import config_columns

    grid = "axes:\n  - grid: {train.lr: [0.01, 0.1], arch.kernel_size: [3, 5]}\n"
    for config in make_plan(load(space_file(tmp_path, "narrow", grid)), str(tmp_path)).configs:
        row = empty_row()
        now = datetime.now(timezone.utc)
        row.update(config_columns(config), status="ok", clean_acc=0.5, cw_acc=0.3,
                   started_at=now, ended_at=now)  # fmt: skip
        results.write_row(str(tmp_path / "narrow"), row)
    body = """
        axes:
          - sample:
              params:
                train.lr: {loguniform: [0.05, 0.2]}
                arch.kernel_size: {randint: [1, 4]}
        search: {method: optuna, num_samples: 8}
    """
    plan = make_plan(load(space_file(tmp_path, "narrow", body)), str(tmp_path))
    points, rewards = _known_points(plan)
    assert points == [{"train.lr": 0.1, "arch.kernel_size": 3}] and rewards == [0.3]
    dists, searcher = optuna_search(plan)
    searcher.set_search_properties(None, None, dists)  # Optuna validates the points here


def test_a_results_location_that_is_a_file_is_one_error(tmp_path: Path) -> None:
    from sweeper.errors import SweeperError

    (tmp_path / "r").write_text("not a folder")
    path = space_file(tmp_path, "file", "axes:\n  - grid: {arch.activation: [relu]}\n")
    with pytest.raises(SweeperError, match="cannot create the results folder"):
        run_sweep(load(path), RunOptions(results=str(tmp_path / "r"), progress=False), fake_trial)


DRIVER_PID = os.getpid()  # captured by value in the workers


def interrupting_trial(config: TrialConfig, *, checkpoint_dir: str | None = None,
                       on_epoch: Any = None, catch: bool = True,
               weights_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Checkpoints one epoch, then the researcher presses Ctrl+C (Tune also stops on SIGUSR1)."""
    assert checkpoint_dir is not None and on_epoch is not None
    Path(checkpoint_dir, "epoch1").write_text("1")
    on_epoch({"epoch": 1, "holdout_pgd_acc": 0.1})
    os.kill(DRIVER_PID, signal.SIGUSR1)
    time.sleep(120)  # stopped by Tune long before this ends
    raise AssertionError("not stopped")


def test_an_interrupted_run_keeps_the_checkpoints_of_unfinished_trials(tmp_path: Path) -> None:
    path = space_file(tmp_path, "intr", "axes:\n  - grid: {arch.activation: [relu]}\n")
    opts = RunOptions(results=str(tmp_path / "r"), progress=False, max_failures=0)
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        summary = run_sweep(load(path), opts, trial_fn=interrupting_trial)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert summary.rows.empty  # nothing finished
    [config] = summary.plan.to_run
    ray_dir = tmp_path / "r" / "_state" / "intr" / "_ray"
    left = checkpoint_folders(ray_dir, f"*/{config.trial_id}/checkpoint_*")
    assert left and (left[0] / "epoch1").is_file(), "the rerun would start from scratch"
    again = run_sweep(load(path), opts, trial_fn=fake_trial)
    assert list(again.rows["status"]) == ["ok"]
    # the trial has its row: its checkpoints, the interrupted run's included, are gone
    assert not checkpoint_folders(tmp_path / "r" / "_state" / "intr" / "_ray", "*/*/checkpoint_*")
    # what a run interrupted after this trial ended would have left (Tune's checkpoint and
    # Ray Train's): the next run, with nothing to do, removes both
    for run, epoch in (("run-killed", 1), ("train", 3)):
        leftover = ray_dir / run / config.trial_id / f"checkpoint_{epoch}"
        leftover.mkdir(parents=True)
        (leftover / "last.pt").write_bytes(b"x")
    assert run_sweep(load(path), opts, trial_fn=fake_trial).started == 0
    assert not checkpoint_folders(tmp_path / "r" / "_state" / "intr" / "_ray", "*/*/checkpoint_*")


def racing_trial(config: TrialConfig, *, checkpoint_dir: str | None = None,
                 on_epoch: Any = None, catch: bool = True,
               weights_dir: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A second driver on the same sweep finishes this trial while ours then fails."""
    sweep_uri = os.path.join(Path(LOG_DIR, "race-results").read_text(), config.sweep)
    results.write_row(sweep_uri, fake_trial(config))
    raise RuntimeError("out of memory")


def test_a_failure_never_replaces_an_ok_row_written_meanwhile(tmp_path: Path) -> None:
    out = tmp_path / "r"
    Path(LOG_DIR, "race-results").write_text(str(out))
    path = space_file(tmp_path, "race", "axes:\n  - grid: {arch.activation: [relu]}\n")
    summary = run_sweep(load(path), RunOptions(results=str(out), progress=False), racing_trial)
    assert list(summary.rows["status"]) == ["ok"]


@pytest.mark.parametrize("folder", ["data", "cifar"])
def test_a_trial_reads_cifar_from_the_drivers_data_folder(tmp_path: Path, monkeypatch,
                                                          folder: str) -> None:  # fmt: skip
    """`sweeper run` from a folder holding data/cifar-10-batches-py (the default), or one
    named by a relative runtime.data_dir: Tune runs each trial in a working folder of its
    own, yet both folders are the driver's."""
    from test_data import write_cifar10

    write_cifar10(tmp_path / folder, per_batch=12)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWEEPER_DATA", raising=False)
    path = tmp_path / "cifar.yaml"
    runtime = "" if folder == "data" else f"  runtime: {{data_dir: {folder}}}\n"
    space = tiny_space("cifar").replace("dataset: synthetic, image_size: 8", "dataset: cifar10")
    path.write_text(space.replace("base:\n", f"base:\n{runtime}"))
    summary = run_sweep(load(path), RunOptions(results="r", progress=False))
    row = summary.rows.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["dataset"] == "cifar10"
