"""One trial: TrialConfig -> trained, evaluated network -> one result row.

This is the function Ray Tune calls (through a thin wrapper elsewhere); it imports no Ray
and knows nothing about YAML or Parquet. The row has exactly the columns of
`sweeper.schema`, whether the trial succeeded or not.

Decisions worth knowing:
- Classes and channels: the dataset is the authority. A config whose arch.num_classes or
  arch.in_channels disagrees with the data fails (ConfigError naming the key) rather than
  being silently corrected, so the stored config always describes the network trained.
- An invalid config *dict* with catch=True still gives a failed row: its trial_id is the
  same hash as TrialConfig.trial_id but over the raw dict (minus runtime and sweep), so the
  same bad dict always maps to the same id. A dict that is not even JSON-serialisable has
  no id: ConfigError is raised. With catch=False every ConfigError is raised.
- AutoAttack runs on the first eval.aa_size points of the test split as loaded, i.e. after
  data.test_size; aa_n says how many it got.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

import sweeper
from sweeper.config import NOT_IDENTITY, TrialConfig, identity_hash
from sweeper.errors import ConfigError, TrialFailed, from_validation_error, storage_error
from sweeper.models.spec import ArchSpec
from sweeper.provenance import provenance
from sweeper.schema import check_row, empty_row

MAX_ERROR_CHARS = 1000


def run_trial(
    config: TrialConfig | dict[str, Any],
    *,
    checkpoint_dir: str | Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    catch: bool = True,
    weights_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate one configuration; return its result row.

    With `checkpoint_dir`, training checkpoints every epoch and resumes from the last
    checkpoint there. `on_epoch(record)` runs after each epoch's checkpoint. With
    `weights_dir`, the trained network is saved there before its evaluation (see
    `save_weights`) and the row's `weights` names the evaluated file. With
    catch=True any exception becomes a `failed` row whose `error` is one line
    ("TypeName: message"); TrialFailed (divergence) gives a failed row even with
    catch=False. Everything else is re-raised when catch=False.
    """
    row = started_row()
    try:
        cfg = validate_config(config)
    except ConfigError as err:
        if not catch or not isinstance(config, dict):
            raise
        row.update(_raw_identity(config), error=one_line(err), history="[]", ended_at=_now())
        check_row(row)
        return row

    row.update(config_columns(cfg))
    history: list[dict[str, Any]] = []  # epochs finished in this call, for a failed row

    def record_epoch(record: dict[str, Any]) -> None:
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)

    try:
        _execute(cfg, row, checkpoint_dir=checkpoint_dir, on_epoch=record_epoch,
                 weights_dir=weights_dir)  # fmt: skip
        row.update(status="ok", error=None)
    except TrialFailed as err:
        row["error"] = one_line(err)
    except Exception as err:
        fault = storage_error(err, str(getattr(err, "filename", None) or checkpoint_dir))
        if fault is not None:  # disk full, read-only: not this trial's failure, no retry
            raise fault from None
        if not catch:
            raise
        row["error"] = one_line(err)
    if row["status"] == "failed" and row["history"] is None:
        row["history"] = json.dumps(history)
    row["ended_at"] = _now()
    check_row(row)
    return row


def started_row() -> dict[str, Any]:
    """The start of every row: failed until the trial says otherwise, when and with what."""
    row = empty_row()
    row.update(
        status="failed",
        started_at=_now(),
        sweeper_version=sweeper.__version__,
        torch_version=torch.__version__,
        **provenance(),
    )
    return row


def failed_row(config: TrialConfig, error: str) -> dict[str, Any]:
    """The row of a trial that died without writing its own (worker lost, retries spent):
    the first line of `error`, capped as every row's error is."""
    row = started_row()
    first = error.splitlines()[0] if error.strip() else error
    row.update(config_columns(config), error=capped(first), ended_at=row["started_at"])
    return row


def validate_config(config: TrialConfig | dict[str, Any]) -> TrialConfig:
    """A TrialConfig from a TrialConfig or a dict; every invalid key in one ConfigError."""
    if isinstance(config, TrialConfig):
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"a trial config must be a mapping, got {type(config).__name__}")
    try:
        return TrialConfig.model_validate(config)
    except ValidationError as err:
        raise from_validation_error(err) from None


def _execute(
    cfg: TrialConfig,
    row: dict[str, Any],
    *,
    checkpoint_dir: str | Path | None,
    on_epoch: Callable[[dict[str, Any]], None],
    weights_dir: str | Path | None = None,
) -> None:
    """Seed, load, build, train, evaluate: filling `row` as facts become known."""
    from sweeper import models
    from sweeper.data import load_dataset
    from sweeper.training import precision, train

    rt = cfg.runtime
    device = pick_device(rt.device)
    row["device"] = device_name(device)
    row["precision"] = precision(device, rt.bf16)
    row["eval_precision"] = precision(device, rt.bf16 and not rt.eval_fp32)
    seed_everything(cfg.seed, deterministic=rt.deterministic)

    data = load_dataset(
        cfg.data, data_dir=rt.data_dir, device=device, seed=cfg.seed, download=rt.download
    )
    channels = data.train_x.shape[1]
    if data.num_classes != cfg.arch.num_classes:
        raise ConfigError(
            f"{cfg.data.dataset} has {data.num_classes} classes but the network has "
            f"{cfg.arch.num_classes}; set arch.num_classes: {data.num_classes}",
            key="arch.num_classes",
        )
    if channels != cfg.arch.in_channels:
        raise ConfigError(
            f"{cfg.data.dataset} images have {channels} channels but the network takes "
            f"{cfg.arch.in_channels}; set arch.in_channels: {channels}",
            key="arch.in_channels",
        )

    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    model = models.build(cfg.arch)
    row["params"] = int(models.count_params(model))
    row["macs"] = int(models.count_macs(cfg.arch))  # at 32x32, as the schema says

    result = train(model, data, cfg, device=device, checkpoint_dir=checkpoint_dir,
                   on_epoch=on_epoch)  # fmt: skip
    row["train_seconds"] = result.seconds
    row["history"] = json.dumps(result.history)
    row["best_epoch"] = result.best_epoch
    if weights_dir is not None:  # kept before evaluating: an attack that fails loses no training
        row["weights"] = str(save_weights(weights_dir, result, cfg))

    t0 = _now()
    row.update(evaluate(result.model, data, cfg, device=device))
    row["eval_seconds"] = (_now() - t0).total_seconds()


def evaluate(
    model: torch.nn.Module, data: Any, cfg: TrialConfig, *, device: torch.device
) -> dict[str, Any]:
    """Clean accuracy on the test split, then each threat of eval.threats: the metric
    columns of a row (those of threats not evaluated are left out, i.e. null). fp32 unless
    runtime.eval_fp32 is false."""
    from sweeper import attacks
    from sweeper.training import autocast

    ev = cfg.eval
    x, y = data.test_x, data.test_y
    out: dict[str, Any] = {}
    model.eval()
    with autocast(device, cfg.runtime.bf16 and not cfg.runtime.eval_fp32):
        out["clean_acc"] = attacks.accuracy(model, x, y, batch_size=ev.batch_size)
        out["clean_n"] = int(x.shape[0])
        if "linf" in ev.threats:
            out.update(_linf_metrics(model, data, cfg, device=device))
        if "l2" in ev.threats:
            out.update(_l2_metrics(model, data, cfg, device=device))
        if "corruptions" in ev.threats:
            out.update(_corruption_metrics(model, data, cfg))
    return out


def _linf_metrics(
    model: torch.nn.Module, data: Any, cfg: TrialConfig, *, device: torch.device
) -> dict[str, Any]:
    """PGD-k and CW-k on the test split, AutoAttack on its first aa_size points.

    PGD and CW start uniformly in the eps ball, CW with confidence eval.cw_kappa: the
    reference's `_pgd_whitebox` / `_pgd_cw_whitebox` (core/dist_engine.py)."""
    from sweeper import attacks

    ev = cfg.eval
    x, y = data.test_x, data.test_y
    n = int(x.shape[0])
    eps = ev.eps / 255
    out: dict[str, Any] = {}
    for name, steps, step_size, loss in (
        ("pgd", ev.pgd_steps, ev.pgd_step_size, "ce"),
        ("cw", ev.cw_steps, ev.cw_step_size, "cw"),
    ):
        if steps == 0:
            continue
        attack = functools.partial(
            attacks.pgd, eps=eps, step_size=step_size / 255, steps=steps, loss=loss,
            random_start=True, cw_kappa=ev.cw_kappa,
            generator=torch.Generator(device=device).manual_seed(cfg.seed),
        )  # fmt: skip
        out[f"{name}_acc"] = attacks.accuracy(model, x, y, batch_size=ev.batch_size, attack=attack)
        out[f"{name}_n"] = n
    n_aa = min(ev.aa_size, n)
    if n_aa > 0:
        out["aa_acc"] = attacks.autoattack_accuracy(
            model, x[:n_aa], y[:n_aa], eps=eps, version=ev.aa_version,
            attacks=ev.aa_attacks, batch_size=ev.batch_size, device=device, seed=cfg.seed,
        )  # fmt: skip
        out["aa_n"] = n_aa
    return out


def _l2_metrics(
    model: torch.nn.Module, data: Any, cfg: TrialConfig, *, device: torch.device
) -> dict[str, Any]:
    """PGD-L2 (eval.l2_pgd_steps of eval.l2_pgd_step_size, from a random point of the ball)
    on the test split and AutoAttack norm L2 on its first aa_size points, at eval.l2_eps
    ([0, 1] pixel units, as RobustBench's L2 track)."""
    from sweeper import attacks

    ev = cfg.eval
    x, y = data.test_x, data.test_y
    out: dict[str, Any] = {"l2_eps": ev.l2_eps}
    if ev.l2_pgd_steps > 0:
        attack = functools.partial(
            attacks.pgd, eps=ev.l2_eps, step_size=ev.l2_pgd_step_size, steps=ev.l2_pgd_steps,
            loss="ce", random_start=True, norm="l2",
            generator=torch.Generator(device=device).manual_seed(cfg.seed),
        )  # fmt: skip
        out["l2_pgd_acc"] = attacks.accuracy(
            model, x, y, batch_size=ev.batch_size, attack=attack
        )
        out["l2_pgd_n"] = int(x.shape[0])
    n_aa = min(ev.aa_size, int(x.shape[0]))
    if n_aa > 0:
        out["l2_aa_acc"] = attacks.autoattack_accuracy(
            model, x[:n_aa], y[:n_aa], eps=ev.l2_eps, version=ev.aa_version,
            attacks=ev.aa_attacks, batch_size=ev.batch_size, device=device, seed=cfg.seed,
            norm="l2",
        )  # fmt: skip
        out["l2_aa_n"] = n_aa
    return out


def _corruption_metrics(model: torch.nn.Module, data: Any, cfg: TrialConfig) -> dict[str, Any]:
    """Accuracy on the 75 corrupted copies (15 corruptions x 5 severities) of the first
    eval.corruption_size test images (sweeper.corruptions), and their mean."""
    from sweeper import attacks
    from sweeper.corruptions import corrupted_sets
    from sweeper.data import default_data_dir

    rt = cfg.runtime
    root = Path(rt.data_dir) if rt.data_dir else default_data_dir()
    source, sets = corrupted_sets(
        cfg.data.dataset, data.test_x, data.test_y, n=cfg.eval.corruption_size, data_dir=root
    )
    device = data.test_x.device
    per: dict[str, list[float]] = {}
    n = 0
    for name, _severity, x, y in sets:
        n = int(x.shape[0])
        acc = attacks.accuracy(model, x.to(device), y.to(device), batch_size=cfg.eval.batch_size)
        per.setdefault(name, []).append(acc)
    mean = float(np.mean([a for accs in per.values() for a in accs]))
    return {"corruption_acc": mean, "corruption_accs": json.dumps(per),
            "corruption_source": source, "corruption_n": n}  # fmt: skip


def save_weights(directory: str | Path, result: Any, cfg: TrialConfig) -> Path:
    """Write the trained network as plain state dicts (CPU tensors only, so
    `torch.load(path, weights_only=True)` reads them anywhere): `final.pt`, the weights at
    the end of training (the EMA copy when train.ema is set), and with eval.checkpoint best
    also `best.pt`, the best epoch's. Returns the file the row's metrics are measured on."""
    from sweeper.training.checkpoint import save_atomic

    last = result.last_state if result.last_state is not None else result.model.state_dict()
    states = {"final": last}
    if result.best_state is not None:
        states["best"] = result.best_state
    for name, state in states.items():  # .cpu(): no copy of what is there already
        cpu = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_atomic(directory, f"{name}.pt", cpu)
    use_best = result.best_state is not None and cfg.eval.checkpoint == "best"
    return Path(directory) / ("best.pt" if use_best else "final.pt")


# ----------------------------------------------------------------------------------------------
# Row pieces


def config_columns(cfg: TrialConfig) -> dict[str, Any]:
    """Every column that follows from the config alone (identity, architecture, training)."""
    return {
        "sweep": cfg.sweep,
        "study": cfg.study,
        "trial_id": cfg.trial_id,
        "seed": cfg.seed,
        **arch_columns(cfg.arch),
        "macs_target": cfg.macs_target,
        "dataset": cfg.data.dataset,
        "train_method": cfg.train.method,
        "train_norm": cfg.train.norm,
        "epochs": cfg.train.epochs,
        "stop_epoch": cfg.train.trained_epochs,
        "eps": cfg.train.eps,
        "eval_eps": cfg.eval.eps,
        "pgd_steps": cfg.eval.pgd_steps,
        "cw_steps": cfg.eval.cw_steps,
        "cw_kappa": cfg.eval.cw_kappa,
        "checkpoint": cfg.eval.checkpoint,
        "workers": cfg.runtime.workers,
        "config": cfg.canonical_json(),
    }


def arch_columns(arch: ArchSpec) -> dict[str, Any]:
    """Architecture columns; per-stage values as "3" when uniform, "3/5/7" when not."""
    return {
        "block": arch.block,
        "activation_order": arch.activation_order,
        "conv_type": arch.conv_type,
        "se": arch.se,
        "kernel_size": per_stage(arch.kernel_size),
        "activation": per_stage(arch.activation),
        "norm": per_stage(arch.norm),
        **{f"depth{i + 1}": int(d) for i, d in enumerate(arch.depths)},
        **{f"width{i + 1}": float(w) for i, w in enumerate(arch.widths)},
    }


def per_stage(values: tuple[Any, ...]) -> str:
    """("3", "3", "3") -> "3"; (3, 5, 7) -> "3/5/7"."""
    text = [str(v) for v in values]
    return text[0] if len(set(text)) == 1 else "/".join(text)


def _raw_identity(config: dict[str, Any]) -> dict[str, Any]:
    """Identity columns of a dict that failed validation (see the module docstring)."""
    ident = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    try:
        trial_id = identity_hash(ident)
        full = json.dumps(config, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid trial config that has no trial_id ({err})") from err
    sweep, seed = config.get("sweep", "adhoc"), config.get("seed", 0)
    return {
        "sweep": sweep if isinstance(sweep, str) else str(sweep),
        "trial_id": trial_id,
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        "config": full,
    }


def one_line(err: BaseException) -> str:
    """'TypeName: message' on one line (whitespace collapsed, capped in length)."""
    return capped(re.sub(r"\s+", " ", f"{type(err).__name__}: {err}").strip())


def capped(text: str) -> str:
    """An error text no longer than MAX_ERROR_CHARS ('...' marks a cut)."""
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


# ----------------------------------------------------------------------------------------------
# Environment


def pick_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r} ({err})", key="runtime.device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("cuda requested but not available here", key="runtime.device")
    return device


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and set cuDNN's determinism.

    Deterministic mode trades speed for bit-reproducibility on CUDA (CPU runs are
    deterministic either way); otherwise cuDNN benchmarks and picks the fastest kernels.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def _now() -> datetime:
    return datetime.now(timezone.utc)
