"""Calibration: measured on CPU in quick mode, stored, reloaded, and turned into GPU-hours."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sweeper.cli import main
from sweeper.config import TrialConfig
from sweeper.perf import calibrate as cal
from sweeper.perf import timing as perf


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real quick calibration through the CLI (the slow part, shared by the tests)."""
    path = tmp_path_factory.mktemp("cal") / "calibration.json"
    assert (
        main(["calibrate", "--quick", "--device", "cpu", "--steps", "1", "--out", str(path)]) == 0
    )
    return path


def _fake_calibration(rate_at_1g: float = 1000.0) -> dict:
    """A constant-FLOP-rate device: F-units/s proportional to 1 / MACs."""
    points = [
        {
            "model": m,
            "macs": int(g * 1e9),
            "train_units_per_s": rate_at_1g / g,
            "eval_units_per_s": 2 * rate_at_1g / g,
        }
        for m, g in (("a", 0.5), ("b", 5.0))
    ]
    return {
        "format": cal.FORMAT_VERSION,
        "device": "Fake GPU",
        "date": "2026-11-25",
        "points": points,
    }


def test_quick_calibration_round_trips(measured: Path) -> None:
    data = json.loads(measured.read_text())
    assert data["device"].startswith("CPU") and data["date"].startswith("20")
    assert {p["model"] for p in data["points"]} == set(cal.QUICK_MODELS)
    for p in data["points"]:
        assert p["macs"] > 0
        assert p["trades10_images_per_s"] > 0 and p["pgd20_images_per_s"] > 0
        assert math.isclose(p["train_units_per_s"], p["trades10_images_per_s"] * 27)
    assert cal.load_calibration(measured) == data
    hours = cal.estimate_gpu_hours([TrialConfig(arch={"depths": 1, "widths": 1})], measured)
    assert hours is not None and hours > 0


def test_default_path_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "c.json"
    monkeypatch.setenv(cal.CALIBRATION_ENV, str(target))
    assert cal.default_path() == target
    assert cal.estimate_gpu_hours([TrialConfig()]) is None  # no file there yet
    cal.save_calibration(_fake_calibration())
    assert cal.load_calibration()["device"] == "Fake GPU"
    monkeypatch.delenv(cal.CALIBRATION_ENV)
    assert cal.default_path("NVIDIA H100 80GB HBM3").name == (
        "calibration-nvidia-h100-80gb-hbm3.json"
    )


def test_fit_recovers_a_power_law() -> None:
    a, b = cal.fit_rate(_fake_calibration()["points"], "train_units_per_s")
    assert b == pytest.approx(-1.0)
    assert math.exp(a + b * math.log(2e9)) == pytest.approx(500.0)
    # one point: constant FLOP rate assumed
    a1, b1 = cal.fit_rate(_fake_calibration()["points"][:1], "train_units_per_s")
    assert b1 == -1.0 and math.exp(a1 + b1 * math.log(1e9)) == pytest.approx(1000.0)


def test_estimate_scales_with_epochs_steps_and_macs() -> None:
    calib = _fake_calibration()
    base = TrialConfig(train={"epochs": 10}, eval={"aa_size": 0})
    longer = TrialConfig(train={"epochs": 20}, eval={"aa_size": 0})
    s10 = cal.trial_seconds(base, calib, macs=10**9)
    s20 = cal.trial_seconds(longer, calib, macs=10**9)
    assert s20["train_s"] == pytest.approx(2 * s10["train_s"])
    assert s20["eval_s"] == pytest.approx(s10["eval_s"])
    bigger = cal.trial_seconds(base, calib, macs=4 * 10**9)
    assert bigger["train_s"] == pytest.approx(4 * s10["train_s"])  # constant FLOP rate
    pgd = cal.trial_seconds(TrialConfig(train={"epochs": 10, "method": "pgd"}), calib, macs=10**9)
    assert pgd["train_s"] < s10["train_s"]  # PGD-10 (23 F) is cheaper than TRADES-10 (27 F)
    with_aa = cal.trial_seconds(TrialConfig(train={"epochs": 10}), calib, macs=10**9)
    assert with_aa["eval_s"] > s10["eval_s"]
    # hand check: 49,488 images (50,000 - 512 holdout, whole batches of 128) x 10 epochs x 27 F
    # at 1000 F/s, plus 512 holdout images x 10 epochs x (1 + 21) F at the same rate
    images = (50000 - 512) // 128 * 128
    assert s10["train_s"] == pytest.approx(images * 10 * 27 / 1000 + 512 * 10 * 22 / 1000)
    # the list version adds trials up, in hours
    hours = cal.estimate_gpu_hours([base, longer], calib)
    macs = cal._macs(base.arch)
    assert hours == pytest.approx(
        sum(sum(cal.trial_seconds(c, calib, macs=macs).values()) for c in (base, longer)) / 3600
    )


def test_multi_worker_trials_cost_wall_time_and_gpu_hours() -> None:
    """N workers: wall time from the N-worker rate when calibrated with --workers N (else N
    times one GPU's), GPU-hours = wall hours x N."""
    one = TrialConfig(train={"epochs": 10}, eval={"aa_size": 100})
    four = TrialConfig(train={"epochs": 10}, eval={"aa_size": 100}, runtime={"workers": 4})
    plain = _fake_calibration()
    s1, s4 = (cal.trial_seconds(c, plain, macs=10**9) for c in (one, four))
    assert s4["train_s"] == pytest.approx(s1["train_s"] / 4)  # perfect scaling assumed
    assert s4["eval_s"] == pytest.approx(s1["eval_s"] / 4)  # sharded evaluation
    measured = _fake_calibration()
    measured["workers"] = 4
    for point in measured["points"]:  # 4 GPUs train 3.2x as fast as one: 80% efficiency
        point["dp_train_units_per_s"] = 3.2 * point["train_units_per_s"]
    m4 = cal.trial_seconds(four, measured, macs=10**9)
    assert m4["eval_s"] == pytest.approx(s4["eval_s"])
    assert s4["train_s"] < m4["train_s"] < s1["train_s"] / 3
    macs = cal._macs(one.arch)
    hours = {n: cal.estimate_gpu_hours([c], measured) for n, c in ((1, one), (4, four))}
    parts = cal.trial_seconds(four, measured, macs=macs)
    assert hours[4] == pytest.approx((parts["train_s"] + parts["eval_s"]) * 4 / 3600)
    assert hours[4] > hours[1]  # the 20% lost to communication is paid in GPU-hours
    other = dict(measured, workers=2)  # measured for 2 workers: a 4-worker trial assumes 4x
    assert cal.trial_seconds(four, other, macs=10**9) == pytest.approx(s4)


def test_calibrate_with_workers_stores_the_data_parallel_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = []

    def fake_timing(spec, method, runtime, *, workers, **kw):  # type: ignore[no-untyped-def]
        seen.append((method, workers, kw["device_type"]))
        return perf.Timing(images=100, seconds=2.0, peak_mem_bytes=None)

    monkeypatch.setattr(cal, "data_parallel_timing", fake_timing)
    data = cal.calibrate("cpu", quick=True, models=["tiny-w1"], steps=1, workers=2)
    assert data["workers"] == 2 and seen == [("trades", 2, "cpu")]
    [point] = data["points"]
    assert point["dp_trades10_images_per_s"] == 50.0 and point["dp_train_units_per_s"] == 50 * 27


def test_costs_and_peaks() -> None:
    assert cal.train_units("trades", 10) == 27
    assert cal.train_units("pgd", 10) == 23
    assert cal.eval_units(20) == 41
    assert perf.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert perf.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert perf.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert perf.peak_bf16_tflops("CPU x86_64 (2 cores)") is None
    assert perf.peak_bf16_tflops("Some Other GPU") is None
    with pytest.raises(ValueError, match="choose from"):
        cal.train_units("nope", 10)


def test_unknown_model_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.json"
    assert main(["calibrate", "--quick", "--models", "nope", "--out", str(out)]) == 2
    assert "choose from: tiny-w1, tiny-w2" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("device", ["nope", "cpu:x", "cuda:99"])
def test_bad_device_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str
) -> None:
    out = tmp_path / "c.json"
    assert main(["calibrate", "--quick", "--device", device, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device") and "\n" not in err, err
    assert not out.exists()


def test_unwritable_out_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["calibrate", "--quick", "--device", "cpu", "--steps", "1", "--models", "tiny-w1"]
    assert main([*args, "--out", str(tmp_path)]) == 2  # a folder
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out") and str(tmp_path) in err and "\n" not in err, err


def _dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["run", "smoke", "--dry-run", "--results", str(tmp_path / "r"), *extra]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("kind", ["cpu", "quick"])
def test_the_dry_run_refuses_a_cpu_or_quick_calibration_for_gpu_hours(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`calibrate --quick` on a CPU gave 'estimated GPU hours: 8331.93' with no caveat."""
    fake = _fake_calibration()
    if kind == "cpu":
        fake.update(device="CPU (x86_64, 2 threads)", device_type="cpu")
    else:
        fake.update(device_type="cuda", quick=True)
    path = tmp_path / "c.json"
    cal.save_calibration(fake, path)
    monkeypatch.setenv(cal.CALIBRATION_ENV, str(path))
    text = " ".join(_dry_run(tmp_path, capsys).split())
    assert "estimated GPU hours" not in text
    assert f"no GPU-hour estimate: {path} is a" in text and "run `sweeper calibrate`" in text
    info = json.loads(_dry_run(tmp_path, capsys, "--json"))
    assert info["gpu_hours"] is None
    assert ("a CPU calibration" if kind == "cpu" else "a --quick") in info["gpu_hours_note"]


def test_the_dry_run_names_the_calibration_or_points_to_calibrate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.json"
    monkeypatch.setenv(cal.CALIBRATION_ENV, str(path))
    text = " ".join(_dry_run(tmp_path, capsys).split())
    assert f"no GPU-hour estimate: no calibration at {path}; run `sweeper calibrate`" in text
    cal.save_calibration({**_fake_calibration(), "device_type": "cuda", "quick": False}, path)
    text = " ".join(_dry_run(tmp_path, capsys).split())
    assert "estimated GPU hours: " in text
    assert f"(from a full calibration on Fake GPU, 2026-11-25: {path})" in text
    info = json.loads(_dry_run(tmp_path, capsys, "--json"))
    assert info["gpu_hours"] > 0 and info["gpu_hours_from"]["device"] == "Fake GPU"


def test_a_trials_cost_is_counted_at_its_data_image_size() -> None:
    """The `macs` column counts 32x32 images; the cost model counts what the trial computes."""
    from sweeper.models import count_macs

    calib = _fake_calibration()
    data = {"dataset": "synthetic", "synthetic_train": 1000, "synthetic_test": 100}
    small, full = (TrialConfig(data={**data, "image_size": n}, eval={"aa_size": 0})
                   for n in (8, 32))  # fmt: skip
    ratio = count_macs(small.arch, image_size=8) / count_macs(small.arch, image_size=32)
    assert ratio < 0.2
    s8, s32 = cal.trial_seconds(small, calib), cal.trial_seconds(full, calib)
    assert s8["train_s"] / s32["train_s"] == pytest.approx(ratio)  # a constant-FLOP device
