"""How fast the attack-and-train step runs on this device, and GPU-hours estimated from it.

`sweeper calibrate` times (with perf.timing) sweeper's own TRADES-10 training step and PGD-20
evaluation for a few model sizes and stores the images/s in a JSON file per device.
`estimate_gpu_hours` turns a list of trials into hours with it, so `sweeper run --dry-run` can
say what a sweep costs.

Cost model (one unit F = one forward pass of one image = 2 * MACs FLOPs):
- a training forward+backward costs 3F (backward ~ 2x forward: activation and weight grads);
- an attack step costs 2F: forward + backward for the input gradient only (autograd is asked
  for d loss / d x alone, so no weight gradients; the backward still runs through every
  activation, which costs about one forward);
- TRADES-k: 1F eval-mode clean forward (the KL target) + k * 2F + clean and adversarial
  forward+backward in train mode 2 * 3F = (2k + 7) F; PGD-k training: (2k + 3) F;
- PGD-k evaluation: k * 2F + 1F final forward = (2k + 1) F.
A calibration stores the measured rate in F-units per second as a function of MACs (a
log-log line through the measured models), so any method and step count can be estimated.

Multi-worker trials (runtime.workers = N): `sweeper calibrate --workers N` also times the
N-worker training step (DDP over N local GPUs, timing.data_parallel_timing), and a trial
of N workers is estimated from that rate; without it, from N times the one-GPU rate (perfect
scaling, an upper bound on speed). Evaluation and the per-epoch holdout check shard the points
with no communication: N times the one-GPU rate. A trial's GPU-hours are its wall-clock hours
times N.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from sweeper.config import RuntimeConfig, TrialConfig
from sweeper.errors import SweeperError
from sweeper.models.spec import ArchSpec
from sweeper.perf.timing import (
    data_parallel_timing,
    device_name,
    resolve_device,
    sweeper_timing,
    timing_settings,
)

CALIBRATION_ENV = "SWEEPER_CALIBRATION"
FORMAT_VERSION = 1


# Models a calibration measures: (name, arch preset or field dict). Full mode spans the study's
# range of MACs (a small ablation net to WRN-28-10); quick mode uses tiny nets so tests run on CPU.
CALIBRATION_MODELS: dict[str, str | dict[str, Any]] = {
    "wrn-16-4": {"depths": (2, 2, 2), "widths": (4, 4, 4)},
    "wrn-28-4": {"depths": (4, 4, 4), "widths": (4, 4, 4)},
    "wrn-28-10": "wrn-28-10",
    "robustresnet-a1": "robustresnet-a1",
}
QUICK_MODELS: dict[str, str | dict[str, Any]] = {
    "tiny-w1": {"depths": (1, 1, 1), "widths": (1, 1, 1)},
    "tiny-w2": {"depths": (1, 1, 1), "widths": (2, 2, 2)},
}

# Approximate cost of AutoAttack per test image in F units: APGD-CE 100 iterations on every
# point, then the targeted attacks (9 targets x 100 iterations) and Square (5000 queries) on the
# ~50% of points still robust. A rough figure: AutoAttack stops early per point.
AA_UNITS = {"standard": 5000.0, "plus": 15000.0, "rand": 4000.0, "custom": 3000.0}
DATASET_SIZES = {"cifar10": (50000, 10000), "cifar100": (50000, 10000), "digits": (1437, 360)}


# ---------------------------------------------------------------------------------------------
# cost model


def train_units(method: str, steps: int) -> float:
    """Cost of one training image in forward-pass units F (see the module docstring)."""
    table = {
        "clean": 3.0,
        "fgsm": 2.0 + 3.0,  # one attack step + training forward+backward
        "pgd": 2.0 * steps + 3.0,
        "trades": 1.0 + 2.0 * steps + 6.0,
        "mart": 2.0 * steps + 6.0,  # clean and adversarial forward+backward
    }
    if method not in table:
        raise ValueError(f"unknown training method {method!r}; choose from: {', '.join(table)}")
    return table[method]


def eval_units(steps: int) -> float:
    """Cost of one PGD-`steps` evaluated image in F units (attack + final forward)."""
    return 2.0 * steps + 1.0


# ---------------------------------------------------------------------------------------------
# calibration file


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "device"


def default_path(name: str | None = None) -> Path:
    """$SWEEPER_CALIBRATION, else ~/.cache/sweeper/calibration-<device>.json for `name`
    (default: the present device)."""
    if os.environ.get(CALIBRATION_ENV):
        return Path(os.environ[CALIBRATION_ENV]).expanduser()
    name = name or device_name(resolve_device("auto"))
    return Path.home() / ".cache" / "sweeper" / f"calibration-{_slug(name)}.json"


def calibrate(
    device: str | torch.device = "auto",
    *,
    quick: bool = False,
    models: Sequence[str] | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
    runtime: RuntimeConfig | None = None,
    log: Callable[[str], None] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Measure TRADES-10 training and PGD-20 evaluation images/s for a few model sizes; with
    workers > 1, also TRADES-10 training on that many data-parallel workers (local GPUs)."""
    from sweeper.models.presets import resolve_arch

    dev = resolve_device(device)
    runtime = runtime or RuntimeConfig()
    table = QUICK_MODELS if quick else CALIBRATION_MODELS
    names = list(models) if models else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SweeperError(
            f"unknown calibration model(s) {', '.join(unknown)}; choose from: {', '.join(table)}"
        )
    batch_size = batch_size or (4 if quick else 128)
    steps = steps or (2 if quick else 10)
    warmup = 1 if quick else 3
    with timing_settings(dev, quick=quick):
        points = [
            _measure(name, resolve_arch(table[name]), runtime, dev, batch_size, steps, warmup, log)
            for name in names
        ]
    if workers > 1:
        for point in points:
            spec = resolve_arch(table[point["model"]])
            dp = data_parallel_timing(spec, "trades", runtime, workers=workers,
                                      batch_size=batch_size, steps=steps, warmup=warmup,
                                      device_type=dev.type)  # fmt: skip
            point["dp_trades10_images_per_s"] = dp.images_per_s
            point["dp_train_units_per_s"] = dp.images_per_s * train_units("trades", 10)
            if log:
                log(f"{point['model']}: TRADES-10 on {workers} workers {dp.images_per_s:.1f} img/s "
                    f"({dp.images_per_s / point['trades10_images_per_s']:.2f}x one)")  # fmt: skip
    return {
        "format": FORMAT_VERSION,
        "device": device_name(dev),
        "device_type": dev.type,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "quick": quick,
        "runtime": runtime.model_dump(mode="json"),
        "steps": steps,
        "workers": workers,
        "points": points,
    }


def _measure(
    name: str,
    spec: ArchSpec,
    runtime: RuntimeConfig,
    dev: torch.device,
    batch_size: int,
    steps: int,
    warmup: int,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    """One calibration point: TRADES-10 training and PGD-20 evaluation of one model."""
    macs = _macs(spec)
    kw = {"batch_size": batch_size, "steps": steps, "warmup": warmup, "device": dev}
    tr = sweeper_timing(spec, "trades", runtime, **kw)
    ev = sweeper_timing(spec, "pgd20-eval", runtime, **kw)
    if log:
        log(
            f"{name}: {macs / 1e9:.3f} GMACs, TRADES-10 {tr.images_per_s:.1f} img/s, "
            f"PGD-20 {ev.images_per_s:.1f} img/s"
        )
    return {
        "model": name,
        "macs": macs,
        "batch_size": batch_size,
        "trades10_images_per_s": tr.images_per_s,
        "pgd20_images_per_s": ev.images_per_s,
        "train_units_per_s": tr.images_per_s * train_units("trades", 10),
        "eval_units_per_s": ev.images_per_s * eval_units(20),
        "peak_mem_bytes": tr.peak_mem_bytes,
    }


def save_calibration(calibration: dict[str, Any], path: str | Path | None = None) -> Path:
    """Write atomically (temp name + rename), so a reader never sees half a file."""
    path = Path(path).expanduser() if path else default_path(calibration["device"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(calibration, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_calibration(path: str | Path | None = None) -> dict[str, Any] | None:
    """The calibration at `path` ($SWEEPER_CALIBRATION / this device's default); None if absent."""
    path = Path(path).expanduser() if path else default_path()
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SweeperError(
            f"unreadable calibration {path}: {err}; run `sweeper calibrate`"
        ) from err
    if not isinstance(data, dict) or not data.get("points"):
        raise SweeperError(f"calibration {path} has no measured points; run `sweeper calibrate`")
    return data


# ---------------------------------------------------------------------------------------------
# estimates


def fit_rate(points: Iterable[dict[str, Any]], key: str) -> tuple[float, float]:
    """Least-squares line log(rate) = a + b log(MACs); one point (or equal MACs) gives b = -1,
    i.e. a constant FLOP rate. Returns (a, b)."""
    xs, ys = [], []
    for p in points:
        if p.get(key) and p[key] > 0 and p["macs"] > 0:
            xs.append(math.log(p["macs"]))
            ys.append(math.log(p[key]))
    if not xs:
        raise SweeperError(f"calibration has no positive {key!r}; run `sweeper calibrate` again")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if len(xs) < 2 or sxx < 1e-12:
        return my + mx, -1.0
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return my - b * mx, b


def _rate(fit: tuple[float, float], macs: float) -> float:
    a, b = fit
    return math.exp(a + b * math.log(max(macs, 1.0)))


def trial_seconds(
    config: TrialConfig, calibration: dict[str, Any], *, macs: int | None = None
) -> dict[str, float]:
    """Estimated wall-clock seconds of one trial on its runtime.workers workers: training
    (with per-epoch holdout checks) and evaluation."""
    if macs is None:  # what the trial computes: at its data's image size (CIFAR: 32x32)
        macs = _macs(config.arch, _image_size(config))
    train_fit = fit_rate(calibration["points"], "train_units_per_s")
    eval_fit = fit_rate(calibration["points"], "eval_units_per_s")
    workers = config.runtime.workers
    one_worker, eval_rate = _rate(train_fit, macs), workers * _rate(eval_fit, macs)
    train_rate = one_worker
    if workers > 1:  # measured on `workers` GPUs when the calibration has it, else perfect
        measured = calibration.get("workers") == workers and all(
            "dp_train_units_per_s" in p for p in calibration["points"]
        )
        dp_fit = fit_rate(calibration["points"], "dp_train_units_per_s") if measured else None
        train_rate = _rate(dp_fit, macs) if dp_fit else workers * one_worker
    n_train, n_test = _split_sizes(config)
    t, e = config.train, config.eval
    batches = n_train // t.batch_size  # the last partial batch is dropped
    train_s = (
        batches * t.batch_size * t.trained_epochs * train_units(t.method, t.steps) / train_rate
    )
    # the per-epoch holdout check runs under the training precision (bf16 on CUDA)
    hist_units = 1.0 + (eval_units(e.history_pgd_steps) if e.history_pgd_steps else 0.0)
    history_s = config.data.holdout_size * t.trained_epochs * hist_units / (workers * one_worker)
    eval_img_units = 1.0  # clean accuracy
    if e.pgd_steps:
        eval_img_units += eval_units(e.pgd_steps)
    if e.cw_steps:
        eval_img_units += eval_units(e.cw_steps)
    aa = min(e.aa_size, n_test) * AA_UNITS[e.aa_version] if e.aa_size else 0.0
    eval_s = (n_test * eval_img_units + aa) / eval_rate
    return {"train_s": train_s + history_s, "eval_s": eval_s}


def estimate_gpu_hours(
    configs: Sequence[TrialConfig], calibration: dict[str, Any] | str | Path | None = None
) -> float | None:
    """Estimated device-hours of running every trial once on the calibrated device (a trial
    on N workers counts N devices for its wall-clock time).

    `calibration`: a loaded calibration, a path, or None for $SWEEPER_CALIBRATION / the present
    device's default file. None when there is no calibration. An estimate: rates come from a
    MACs fit, so block types far from the calibrated ones (grouped convs, GroupNorm) are off.
    """
    if not isinstance(calibration, dict):
        calibration = load_calibration(calibration)
    if calibration is None:
        return None
    total = 0.0
    for config in configs:
        parts = trial_seconds(config, calibration)
        total += (parts["train_s"] + parts["eval_s"]) * config.runtime.workers
    return total / 3600.0


def dry_run_estimate(
    configs: Sequence[TrialConfig], path: str | Path | None = None
) -> dict[str, Any]:
    """What `sweeper run --dry-run` says about GPU-hours: {"gpu_hours": float, "source":
    {device, date, mode, path}} from a full GPU calibration, or {"gpu_hours": None, "note":
    why not}. A CPU or --quick calibration (tiny nets, for tests) is refused: its rate says
    nothing about a GPU's."""
    path = Path(path).expanduser() if path else default_path()
    calibration = load_calibration(path)
    if calibration is None:
        return {"gpu_hours": None, "note": f"no GPU-hour estimate: no calibration at {path}; "
                "run `sweeper calibrate` on a GPU of the kind the sweep will use (or set "
                f"${CALIBRATION_ENV} to the file it wrote)"}  # fmt: skip
    device = str(calibration.get("device") or "unknown device")
    on_cpu = calibration.get("device_type") == "cpu" or device.lower().startswith("cpu")
    if on_cpu or calibration.get("quick"):
        what = "a CPU" if on_cpu else "a --quick (tiny networks)"
        note = (f"no GPU-hour estimate: {path} is {what} calibration ({device}); run "
                "`sweeper calibrate` without --quick on a GPU of the kind the sweep will use "
                f"(or set ${CALIBRATION_ENV} to its file)")  # fmt: skip
        return {"gpu_hours": None, "note": note}
    hours = estimate_gpu_hours(configs, calibration)
    source = {"device": device, "date": calibration.get("date"), "mode": "full",
              "path": str(path)}  # fmt: skip
    return {"gpu_hours": hours, "source": source}


def _macs(spec: ArchSpec, image_size: int = 32) -> int:
    from sweeper.models import count_macs  # cached per spec, on the meta device

    return int(count_macs(spec, image_size=image_size))


def _image_size(config: TrialConfig) -> int:
    """The side of the images a trial trains on (data.image_size is for digits and
    synthetic data; CIFAR is 32x32). The `macs` column counts 32x32 whatever this is."""
    return 32 if config.data.dataset.startswith("cifar") else config.data.image_size


def _split_sizes(config: TrialConfig) -> tuple[int, int]:
    """Training and test images a trial uses, following sweeper.data.load_dataset's carving."""
    d = config.data
    if d.dataset == "synthetic":
        full_train, full_test = d.synthetic_train, d.synthetic_test
    else:
        full_train, full_test = DATASET_SIZES[d.dataset]
    available = max(full_train - d.holdout_size, 0)
    n_train = min(d.train_size, available) if d.train_size else available
    n_test = min(d.test_size, full_test) if d.test_size else full_test
    return n_train, n_test
