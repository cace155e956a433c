"""Before the first trial: a sweep whose data is missing, or whose trials no node can ever
hold, stops with one line and exit 2 and writes no row (sweeper.sweep.preflight); a cluster
whose autoscaler is adding a node gets a bounded, announced wait."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import marked_env, tiny_space

from sweeper import results
from sweeper.errors import DataError, SweeperError
from sweeper.sweep import preflight
from sweeper.sweep.plan import RunOptions

CIFAR_SPACE = tiny_space("cifar").replace("dataset: synthetic, image_size: 8", "dataset: cifar10")


def _run(space: Path, out: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sweeper", "run", str(space), "--results", str(out), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_a_gpu_per_trial_where_ray_sees_no_gpu_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """It used to print `pending 1 of 1 ... ETA -` every minute for ever."""
    space = tmp_path / "gpu.yaml"
    space.write_text(tiny_space("gpu"))
    with marked_env() as env:
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU for Ray, also on a machine that has some
        done = _run(space, tmp_path / "r", "--gpus-per-trial", "1", env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: --gpus-per-trial 1, --cpus-per-trial 1: no node of this "
                           "machine can ever hold one trial (1 CPU, 1 GPU)")  # fmt: skip
    assert "Ray sees no GPU" in line
    assert results.read(str(tmp_path / "r" / "gpu")).empty


def test_a_cifar_study_without_cifar_is_one_line_and_exit_2_with_no_rows(tmp_path: Path) -> None:
    """It used to launch every trial and write a failed row each."""
    space, data = tmp_path / "cifar.yaml", tmp_path / "data"
    space.write_text(CIFAR_SPACE + "axes:\n  - grid: {train.lr: [0.05, 0.1]}\n")
    data.mkdir()
    with marked_env() as env:
        env["SWEEPER_DATA"] = str(data)
        done = _run(space, tmp_path / "r", env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cifar10: no {data}/cifar-10-batches-py/; expected "
                           f"{data}/cifar-10-batches-py/ holding data_batch_1, ")  # fmt: skip
    assert "test_batch" in line and "Traceback" not in line
    assert results.read(str(tmp_path / "r" / "cifar")).empty


def test_a_partly_extracted_dataset_names_the_files_it_lacks(tmp_path: Path) -> None:
    from test_data import write_cifar10

    write_cifar10(tmp_path, per_batch=4)
    preflight.check_data([("cifar10", str(tmp_path), False)], "unused")  # all there
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"")
    with pytest.raises(DataError, match=r"cifar-10-batches-py/ lacks data_batch_2, test_batch;"):
        preflight.check_data([("cifar10", str(tmp_path), False)], "unused")
    preflight.check_data([("digits", None, False), ("synthetic", None, False)], "unused")


def _cluster(monkeypatch, nodes: list[list[dict[str, float]]], reports: list) -> None:
    """A joined cluster whose nodes (per poll) and autoscaler reports (per read) are given."""
    polls, reads = iter(nodes), iter(reports)
    last = {"nodes": nodes[-1], "report": reports[-1] if reports else None}
    monkeypatch.setattr(preflight, "cluster_nodes", lambda: next(polls, last["nodes"]))
    monkeypatch.setattr(preflight, "_autoscaling_report", lambda: next(reads, last["report"]))
    monkeypatch.setattr(preflight.time, "sleep", lambda s: None)
    requests = []
    import ray.autoscaler.sdk

    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources",
                        lambda bundles: requests.append(bundles))  # fmt: skip


CPU_ONLY = [{"CPU": 8.0}]
LAUNCHING = {"autoscaler_report": {"pending_launches": {"gpu_node": 1}}}
IDLE = {"autoscaler_report": {"pending_launches": {}, "pending_nodes": []}}


def test_a_fixed_cluster_that_cannot_hold_a_trial_is_refused_at_once(monkeypatch) -> None:
    _cluster(monkeypatch, [CPU_ONLY], [])
    options = RunOptions(address="10.0.0.1:6379", gpus_per_trial=1)
    with pytest.raises(SweeperError, match="no node of the Ray cluster can ever hold one trial"):
        preflight.check_cluster({"CPU": 1, "GPU": 1}, options)


def test_a_growing_cluster_is_waited_for_and_a_stalled_one_refused(monkeypatch, capsys) -> None:
    options = RunOptions(address="10.0.0.1:6379", gpus_per_trial=1)
    bundle = {"CPU": 1.0, "GPU": 1.0}
    # the autoscaler launches a GPU node, which joins a few polls later: the run goes on
    _cluster(monkeypatch, [CPU_ONLY, CPU_ONLY, CPU_ONLY, [*CPU_ONLY, {"CPU": 4, "GPU": 1}]],
             [IDLE, LAUNCHING])  # fmt: skip
    preflight.check_cluster(bundle, options)
    assert "waiting up to 600s for the autoscaler to add a node" in capsys.readouterr().err
    # an autoscaler that launches nothing for it: refused once the probe time is over
    _cluster(monkeypatch, [CPU_ONLY], [IDLE])
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(preflight.time, "monotonic", lambda: float(next(clock)))
    with pytest.raises(SweeperError, match=r"can ever hold one trial .*\(waited \d+s for the"):
        preflight.check_cluster(bundle, options)
