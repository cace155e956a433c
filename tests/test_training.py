"""sweeper.training: AT methods buy robustness, schedules, EMA, checkpoints, divergence.

Real training of a tiny CNN on tiny synthetic data (8x8 images, 500 of them) on one CPU thread.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import synthetic_config, tiny_cnn

from sweeper import attacks
from sweeper.config import EvalConfig, TrainConfig, TrialConfig
from sweeper.data import Dataset, load_dataset
from sweeper.errors import ConfigError, TrialFailed
from sweeper.training import (
    ModelEMA,
    build_optimizer,
    build_scheduler,
    load_checkpoint,
    lr_factor,
    make_step,
    train,
)

EPS = 8.0


def trial_config(**train: Any) -> TrialConfig:
    fields: dict[str, Any] = dict(
        epochs=10, batch_size=50, lr=0.05, schedule="cosine", eps=EPS, step_size=4.8,
        steps=2, beta=3.0,
    )  # fmt: skip
    fields.update(train)
    data = synthetic_config(image_size=8, synthetic_train=500, synthetic_test=300, holdout_size=0)
    return TrialConfig(
        seed=0,
        arch={"depths": 1, "widths": 1},  # unused here: the tests train helpers.tiny_cnn
        data=data,
        train=TrainConfig(**fields),
        eval={"history_pgd_steps": 0},
    )


@functools.lru_cache(maxsize=1)
def dataset() -> Dataset:
    return load_dataset(trial_config().data, device="cpu", seed=0)


@functools.lru_cache(maxsize=1)
def holdout_dataset() -> Dataset:
    return load_dataset(_with_holdout(trial_config(), "last").data, device="cpu", seed=0)


def fit(cfg: TrialConfig, **kwargs: Any) -> Any:
    """Train a tiny CNN by cfg on dataset() (or holdout_dataset() when cfg has a holdout)."""
    data = holdout_dataset() if cfg.data.holdout_size else dataset()
    torch.manual_seed(cfg.seed)
    model = tiny_cnn(data.num_classes, width=8)
    return train(model, data, cfg, device="cpu", **kwargs)


def pgd_accuracy(model: torch.nn.Module) -> float:
    data = dataset()
    gen = torch.Generator().manual_seed(0)

    def attack(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attacks.pgd(m, x, y, eps=EPS / 255, step_size=2 / 255, steps=10, generator=gen)

    return attacks.accuracy(model, data.test_x, data.test_y, batch_size=300, attack=attack)


SEEDS = (0, 1, 2)


@functools.cache
def robust_accuracy(method: str, seed: int) -> float:
    step_size = 1.25 * EPS if method == "fgsm" else 4.8  # FGSM-RS: Wong et al.'s 1.25 eps
    cfg = trial_config(method=method, step_size=step_size).model_copy(update={"seed": seed})
    return pgd_accuracy(fit(cfg).model)


def mean_robust_accuracy(method: str) -> float:
    return sum(robust_accuracy(method, s) for s in SEEDS) / len(SEEDS)


@pytest.mark.parametrize("method", ["pgd", "trades", "mart", "fgsm"])
def test_adversarial_training_beats_clean_under_pgd(method: str) -> None:
    # The mean over three seeds: one tiny run is as noisy as the effect. FGSM-RS attacks in
    # train mode (Wong et al.), which on this task spreads seeds widely (PGD-10 accuracy 0.13,
    # 0.27, 0.21 for seeds 0-2; FGSM accuracy equal to PGD's, so no catastrophic overfitting).
    clean, robust = mean_robust_accuracy("clean"), mean_robust_accuracy(method)
    assert robust > clean + 0.08, (method, robust, clean)


def test_history_records_every_epoch() -> None:
    cfg = trial_config(method="trades", epochs=2).model_copy(
        update={
            "data": synthetic_config(image_size=8, synthetic_train=500, holdout_size=50),
            "eval": EvalConfig(history_pgd_steps=3),
        }
    )
    data = load_dataset(cfg.data, device="cpu", seed=0)
    torch.manual_seed(0)
    result = train(tiny_cnn(10, width=8), data, cfg, device="cpu")
    assert [r["epoch"] for r in result.history] == [1, 2]
    for r in result.history:
        assert set(r) == {"epoch", "train_loss", "train_acc", "lr", "holdout_clean_acc",
                          "holdout_pgd_acc", "seconds", "holdout_seconds"}  # fmt: skip
        assert math.isfinite(r["train_loss"]) and 0 <= r["train_acc"] <= 1
        assert 0 <= r["holdout_clean_acc"] <= 1 and 0 <= r["holdout_pgd_acc"] <= 1
    assert result.history[0]["lr"] > result.history[1]["lr"]  # cosine
    assert result.seconds == pytest.approx(
        sum(r["seconds"] + r["holdout_seconds"] for r in result.history)
    )
    assert not result.model.training


def test_make_step_updates_without_host_values() -> None:
    cfg = trial_config(method="trades")
    model = tiny_cnn(10, width=8)
    optimizer = build_optimizer(model, cfg.train, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch=10)
    ema = ModelEMA(model, 0.9)
    step = make_step(model, optimizer, cfg.train, scheduler=scheduler, ema=ema)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    loss, correct = step(x, y)
    assert loss.shape == () and correct.shape == () and not loss.requires_grad
    assert torch.isfinite(loss) and 0 <= int(correct) <= 16
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert scheduler.last_epoch == 1 and ema.updates == 1
    assert model.training  # back in train mode after the eval-mode attack


def test_schedules_per_step() -> None:
    def factors(**kw: Any) -> list[float]:
        f = lr_factor(TrainConfig(epochs=10, **kw), steps_per_epoch=10)
        return [f(s) for s in range(100)]

    multistep = factors(schedule="multistep")
    assert multistep[74] == 1.0 and multistep[75] == pytest.approx(0.1)
    assert multistep[89] == pytest.approx(0.1) and multistep[90] == pytest.approx(0.01)
    cosine = factors(schedule="cosine")
    assert cosine[0] == 1.0 and cosine[50] == pytest.approx(0.5) and cosine[99] < 0.001
    assert factors(schedule="constant") == [1.0] * 100
    onecycle = factors(schedule="onecycle")
    assert onecycle[0] < 0.05 and onecycle[29] == 1.0 and onecycle[99] < 0.02
    assert max(onecycle) == 1.0
    warm = factors(schedule="multistep", warmup_epochs=2)
    assert warm[0] == pytest.approx(0.05) and warm[19] == 1.0 and warm[75] == pytest.approx(0.1)
    warm_cos = factors(schedule="cosine", warmup_epochs=2)
    assert warm_cos[19] == 1.0 and warm_cos[20] == pytest.approx(1.0)


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    """Interrupt after epoch 1, resume: the same weights, EMA and history as one run."""
    cfg = trial_config(method="pgd", epochs=3, ema=0.9).model_copy(
        update={
            "data": synthetic_config(
                image_size=8, synthetic_train=500, holdout_size=0, augment=True
            )
        }  # fmt: skip
    )
    whole = fit(cfg, checkpoint_dir=tmp_path / "whole")

    def stop_after_first(record: dict[str, Any]) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt  # a preemption

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, checkpoint_dir=tmp_path / "cut", on_epoch=stop_after_first)
    assert load_checkpoint(tmp_path / "cut")["epoch"] == 1
    seen: list[int] = []
    resumed = fit(cfg, checkpoint_dir=tmp_path / "cut", on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [2, 3]  # epoch 1 is not trained again

    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in r.items() if "seconds" not in k} for r in whole.history]
    assert strip == [{k: v for k, v in r.items() if "seconds" not in k} for r in resumed.history]
    assert not list((tmp_path / "cut").glob(".*tmp"))  # atomic writes leave no temp files


def _with_holdout(cfg: TrialConfig, checkpoint: str) -> TrialConfig:
    """cfg with a 100-image holdout checked by PGD-2 every epoch, scoring `checkpoint`."""
    data = synthetic_config(image_size=8, synthetic_train=500, holdout_size=100)
    return TrialConfig(**{**cfg.model_dump(), "data": data.model_dump(),
                          "eval": {"history_pgd_steps": 2, "checkpoint": checkpoint}})  # fmt: skip


def test_best_checkpoint_is_scored_and_survives_a_resume(tmp_path: Path) -> None:
    """eval.checkpoint=best: the evaluated weights are those of the first epoch with the best
    holdout PGD accuracy; an interrupted run resumes to the same best epoch and weights."""
    cfg = _with_holdout(trial_config(method="pgd", epochs=5, lr=0.2), "best")
    whole = fit(cfg, checkpoint_dir=tmp_path / "whole")
    accs = [r["holdout_pgd_acc"] for r in whole.history]
    assert whole.best_epoch == accs.index(max(accs)) + 1
    assert whole.best_state is not None
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, whole.best_state[key]), key
    assert [p.name for p in (tmp_path / "whole").glob("best-*")] == [
        f"best-epoch{whole.best_epoch}.pt"
    ]

    def preempt(record: dict[str, Any]) -> None:
        if record["epoch"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, checkpoint_dir=tmp_path / "cut", on_epoch=preempt)
    best_so_far = accs[:4].index(max(accs[:4])) + 1  # measured: 4 of [.01 .08 .11 .24 .18]
    assert [p.name for p in (tmp_path / "cut").glob("best-*")] == [f"best-epoch{best_so_far}.pt"]
    # a kill between a new best file and the last.pt naming it leaves a stray: harmless
    (tmp_path / "cut" / "best-epoch5.pt").write_bytes(b"partial")
    resumed = fit(cfg, checkpoint_dir=tmp_path / "cut")
    assert resumed.best_epoch == whole.best_epoch and resumed.best_state is not None
    assert len(list((tmp_path / "cut").glob("best-*"))) == 1
    for key, value in whole.best_state.items():
        assert torch.equal(value, resumed.best_state[key]), key

    last = fit(_with_holdout(trial_config(method="pgd", epochs=5, lr=0.2), "last"))
    assert last.best_epoch == whole.best_epoch and last.best_state is None


def test_stop_epoch_trains_the_start_of_the_schedule() -> None:
    """train.stop_epoch=2 of a 6-epoch schedule: two epochs at the 6-epoch schedule's lr
    (the reference's --stop_epoch), not a 2-epoch schedule."""
    result = fit(trial_config(method="clean", epochs=6, stop_epoch=2))
    assert [r["epoch"] for r in result.history] == [1, 2]
    whole = lr_factor(TrainConfig(epochs=6, schedule="cosine"), steps_per_epoch=10)
    assert result.history[1]["lr"] == pytest.approx(0.05 * whole(19))
    assert result.best_epoch is None  # no holdout here
    with pytest.raises(ValueError, match="stop_epoch: 7 is past the end of the 6-epoch"):
        TrainConfig(epochs=6, stop_epoch=7)


def test_checkpoint_of_another_trial_is_refused(tmp_path: Path) -> None:
    fit(trial_config(method="clean", epochs=1), checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="belongs to trial"):
        fit(trial_config(method="clean", epochs=2), checkpoint_dir=tmp_path)


def test_a_truncated_checkpoint_is_moved_aside_and_training_starts_over(tmp_path: Path) -> None:
    """A copy cut short by a killed run must not fail the trial for good."""
    cfg = trial_config(method="clean", epochs=1)
    fit(cfg, checkpoint_dir=tmp_path)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    seen: list[int] = []
    with pytest.warns(UserWarning, match="damaged"):
        fit(cfg, checkpoint_dir=tmp_path, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [1] and (tmp_path / "last.pt.damaged").is_file()
    assert load_checkpoint(tmp_path)["epoch"] == 1  # the new one


def test_divergence_raises_trial_failed() -> None:
    with pytest.raises(TrialFailed, match="diverged: non-finite loss at epoch 1"):
        fit(trial_config(method="clean", epochs=2, lr=1e6, grad_clip=None))


def test_ema_is_the_evaluated_model() -> None:
    result = fit(trial_config(method="clean", epochs=1, ema=0.99))
    assert all(not p.requires_grad for p in result.model.parameters())
    assert not result.model.training


def test_milestones_in_epochs_are_rejected_not_ignored() -> None:
    """[75, 90] (epochs, not fractions) would otherwise switch the lr drops off silently."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="fractions of the run"):
        TrainConfig(milestones=(75, 90))
    with pytest.raises(ValidationError, match="fractions of the run"):
        TrainConfig(milestones=(0.9, 0.75))
    assert TrainConfig(milestones=(0.5, 1.0)).milestones == (0.5, 1.0)


@pytest.mark.parametrize("fields", [{"lr": math.inf}, {"weight_decay": math.nan}])
def test_non_finite_hyperparameters_are_rejected(fields: dict[str, float]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="finite number"):
        TrainConfig(**fields)
