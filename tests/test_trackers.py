"""Experiment trackers through Ray Tune's callbacks: a tiny real sweep with `--log mlflow`
leaves one MLflow run per trial (dotted params, per-epoch and final metrics), read back with
MLflow's own client; `--log wandb` in offline mode and `--log tensorboard` write their run
files. W&B's offline test needs the wandb package (in the test extra); it is skipped
without it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from helpers import tiny_space  # noqa: E402

import sweeper  # noqa: E402
from sweeper.cli import main  # noqa: E402
from sweeper.config import TrialConfig  # noqa: E402
from sweeper.sweep.runner import RunOptions, _init_ray  # noqa: E402
from sweeper.sweep.trackers import default_log_uri, flat_params  # noqa: E402

GRID = "axes:\n  - grid: {arch.activation: [relu, gelu]}\n"


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    assert _init_ray(RunOptions(), num_cpus=2)
    yield
    ray.shutdown()


def test_flat_params_are_dotted_and_scalar() -> None:
    config = TrialConfig.model_validate({"arch": {"block": "basic", "depths": [1, 1, 1]}})
    params = flat_params(config)
    assert params["arch.block"] == "basic" and params["arch.depths"] == "1/1/1"
    assert params["arch.activation"] == "relu" and params["trial_id"] == config.trial_id
    assert "train.beta" in params and "runtime.workers" in params
    assert all(isinstance(v, (str, int, float, bool)) for v in params.values())


def test_mlflow_writes_into_the_sweep_folder_unless_the_sweep_is_remote(tmp_path: Path) -> None:
    from types import SimpleNamespace

    local = SimpleNamespace(sweep_uri=str(tmp_path / "r" / "smoke"))
    assert default_log_uri(local) == str(tmp_path / "r" / "_state" / "smoke" / "_mlflow")  # type: ignore[arg-type]
    remote = SimpleNamespace(sweep_uri="s3://bucket/r/smoke")
    assert default_log_uri(remote).endswith("mlruns")  # type: ignore[arg-type]


def test_an_unknown_tracker_is_one_line_and_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "smoke", "--log", "neptune", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--log" in err and "mlflow" in err and "\n" not in err


def test_mlflow_one_run_per_trial_with_dotted_params_and_final_metrics(
    tmp_path: Path, ray_instance: None, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: the file store's opt-in
    space = tmp_path / "tracked.yaml"
    space.write_text(tiny_space("tracked", GRID))
    store = tmp_path / "mlruns"
    code = main(["run", str(space), "--results", str(tmp_path / "r"), "--log", "mlflow",
                 "--log-uri", str(store), "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["counts"] == {"ok": 2}
    rows = {r["trial_id"]: r for r in out["rows"]}

    client = mlflow.tracking.MlflowClient(tracking_uri=f"file:{store}")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        row = rows[params["trial_id"]]
        assert params["arch.activation"] in ("relu", "gelu") and params["arch.block"] == "basic"
        assert params["train.epochs"] == "1" and "trial" not in params  # not one JSON string
        assert metrics["clean_acc"] == pytest.approx(row["clean_acc"])
        assert metrics["pgd_acc"] == pytest.approx(row["pgd_acc"])
        assert metrics["macs"] == row["macs"] > 0 and metrics["params"] > 0
        # the per-epoch report arrived as it came, before the final one
        history = client.get_metric_history(run.info.run_id, "holdout_pgd_acc")
        assert len(history) >= 1
    # trackers are a run option: the rows' trial ids are those of a run without them
    plain = sweeper.run(space, results=tmp_path / "plain")
    assert set(plain.rows["trial_id"]) == set(rows)


def test_wandb_offline_and_tensorboard_write_their_run_files(
    tmp_path: Path, ray_instance: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboardX")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    space = tmp_path / "wb.yaml"
    space.write_text(tiny_space("wb", GRID))
    summary = sweeper.run(space, results=tmp_path / "r", log=["wandb", "tensorboard"],
                          log_uri=str(tmp_path / "wb"))  # fmt: skip
    assert set(summary.rows["status"]) == {"ok"}
    offline = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(offline) == 2, list((tmp_path / "wb").rglob("*"))[:20]
    for run in offline:  # the run's log holds its config, with the dotted keys
        [log] = run.glob("*.wandb")
        assert b"arch.activation" in log.read_bytes() and b"clean_acc" in log.read_bytes()
    events = sorted((tmp_path / "r" / "_state" / "wb" / "_ray").rglob("events.out.tfevents.*"))
    assert len(events) == 2  # one per trial, in its Tune folder
    for event in events:  # the hparams entry holds the dotted keys, the scalars the metrics
        assert b"arch.activation" in event.read_bytes() and b"clean_acc" in event.read_bytes()
