"""Evaluate a trained network again from its stored weights (`sweeper eval`).

The network is rebuilt from the trial's config by the one model builder, its state dict
loaded, and the metrics measured by `sweeper.trial.evaluate` on the data a trial loads, on
the same device set-up (seeded the same way): with unchanged settings the numbers are the
row's own (on a CPU exactly; on a GPU up to kernel non-determinism in the attacks).
No Ray and no Parquet here: the caller reads the weights and writes the rows.
"""

from __future__ import annotations

import time
from typing import Any

from sweeper.config import TrialConfig, drop_later_defaults
from sweeper.errors import ConfigError
from sweeper.trial import device_name, evaluate, pick_device, seed_everything

# What a re-evaluation may change: how it measures, never what was trained.
EVAL_SECTIONS = ("eval.", "runtime.")
EVAL_KEYS = ("data.test_size",)


def check_eval_override(key: str) -> None:
    """An override of anything but the evaluation settings would describe another network."""
    if not (key.startswith(EVAL_SECTIONS) or key in EVAL_KEYS):
        raise ConfigError(
            "only eval.*, runtime.* and data.test_size change an evaluation "
            "(the rest of the config describes the trained network)",
            key=f"--set {key}",
        )


def use_cpu_threads(cpus: int) -> int:
    """Run torch on `cpus` threads, as a trial does: Ray sets OMP_NUM_THREADS to a trial's
    CPUs (--cpus-per-trial, default 1). torch's default, one thread per core, oversubscribes
    a shared machine (a one-trial `sweeper eval` took 7x its row's CPU time under load). An
    OMP_NUM_THREADS set by the user wins, as it does in Ray's workers; the count used."""
    import os

    import torch

    env = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(env) if env.isdigit() and int(env) > 0 else cpus
    torch.set_num_threads(threads)
    return threads


def evaluation_settings(config: TrialConfig) -> dict[str, Any]:
    """What the metrics depend on besides the weights: the eval section and the test data
    (keys added later, at their defaults, left out: stored evaluations keep their ids)."""
    return {
        "eval": drop_later_defaults("eval", config.eval.model_dump(mode="json")),
        "data": config.data.model_dump(mode="json"),
    }


def evaluate_state(config: TrialConfig, state: dict[str, Any]) -> dict[str, Any]:
    """The metric columns (clean accuracy, those of each of eval.threats), `device` and
    `eval_seconds` of the network `config.arch` with weights `state`."""
    from sweeper import models
    from sweeper.data import load_dataset
    from sweeper.training import prepare_model

    rt = config.runtime
    device = pick_device(rt.device)
    seed_everything(config.seed, deterministic=rt.deterministic)
    data = load_dataset(
        config.data, data_dir=rt.data_dir, device=device, seed=config.seed, download=rt.download
    )
    model = models.build(config.arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # another network's weights
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ConfigError(f"the weights do not fit the network: {lines[-1][:200]}") from None
    prepare_model(model, rt.model_copy(update={"compile": False}), device)
    t0 = time.perf_counter()
    metrics = evaluate(model, data, config, device=device)
    return {**metrics, "device": device_name(device), "eval_seconds": time.perf_counter() - t0}
