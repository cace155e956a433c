"""The epoch loop: one trial's training, readable top to bottom.

    for epoch in remaining epochs (up to train.stop_epoch of the train.epochs schedule):
        for x, y in shuffled, augmented batches:       # on the device, no DataLoader
            step(x, y)                                 # attack (eval mode) + loss (train mode)
        read the epoch's loss/accuracy sums once       # the only host sync of the epoch
        holdout clean / PGD accuracy                   # history; best epoch so far
        checkpoint (atomic), then on_epoch(record)

Speed on CUDA: bf16 autocast for the forward passes of training and attack generation,
channels_last activations, fused SGD, optional torch.compile, and no `.item()` in the step.
On CPU every one of these is off and the loop is the same.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import SGD
from torch.optim.lr_scheduler import LRScheduler

from sweeper import attacks, distributed
from sweeper.config import RuntimeConfig, TrainConfig, TrialConfig
from sweeper.errors import ConfigError, TrialFailed
from sweeper.training.checkpoint import (
    load_best,
    load_checkpoint,
    prune_best,
    rng_state,
    save_best,
    save_checkpoint,
    set_rng_state,
)
from sweeper.training.methods import method_loss
from sweeper.training.schedules import build_scheduler, lr_factor

Step = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class TrainResult:
    """What `train` hands to the evaluation: the model to evaluate (the EMA copy when
    train.ema is set; with eval.checkpoint=best, holding the best epoch's weights), the
    per-epoch history and the training wall time in seconds.

    best_epoch: the epoch (1-based) with the highest holdout PGD accuracy, the first of
    equals (None without a holdout PGD check). best_state: that epoch's state dict of the
    evaluated model, on the CPU, when eval.checkpoint=best (else None); last_state then
    holds the end of training's (which `model` no longer does), for the stored weights.
    """

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    best_epoch: int | None = None
    best_state: dict[str, Tensor] | None = None
    last_state: dict[str, Tensor] | None = None


def best_epoch_of(history: list[dict[str, Any]]) -> int | None:
    """The first epoch with the highest holdout PGD accuracy (None when none was measured).

    The first of equals, as the reference keeps a new best only when strictly better.
    """
    best: int | None = None
    for i, record in enumerate(history):
        acc = record.get("holdout_pgd_acc")
        if acc is not None and (best is None or acc > history[best - 1]["holdout_pgd_acc"]):
            best = i + 1
    return best


class ModelEMA:
    """Exponential moving average of a model's weights and buffers.

    Written out rather than torch.optim.swa_utils.AveragedModel because AveragedModel's
    update branches on a tensor (`n_averaged == 0`): a host sync every step. The decay
    ramps up as min(decay, (1 + t) / (10 + t)) so a short run is not dominated by the
    random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
        self._ema_f = [e for e, s in pairs if e.is_floating_point()]
        self._src_f = [s for e, s in pairs if e.is_floating_point()]
        self._other = [(e, s) for e, s in pairs if not e.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # one fused kernel launch per tensor list instead of one per tensor
        torch._foreach_lerp_(self._ema_f, self._src_f, 1.0 - d)
        for e, s in self._other:  # e.g. batch-norm's num_batches_tracked
            e.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 autocast on CUDA when enabled; a no-op elsewhere (CPU bf16 is slower, not faster)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def precision(device: torch.device, enabled: bool) -> str:
    """What `autocast(device, enabled)` runs: "bf16" or "fp32" (a row's record of it)."""
    return "bf16" if enabled and device.type == "cuda" else "fp32"


def prepare_model(model: nn.Module, runtime: RuntimeConfig, device: torch.device) -> nn.Module:
    """Move `model` to the device (channels_last on CUDA) and return the module to call:
    `torch.compile(model)` when runtime.compile on CUDA, else `model` itself.

    Compiled, the model is specialised on train/eval mode, so expect one recompile when the
    attack first flips it to eval; the attack takes gradients w.r.t. the input only, so the
    parameters' requires_grad never flips (which would recompile too).
    """
    model.to(device)
    if device.type == "cuda" and runtime.channels_last:
        # NHWC lets cuDNN pick tensor-core convolution kernels without layout transposes
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda" and runtime.compile:
        return torch.compile(model)  # type: ignore[return-value]
    return model


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> SGD:
    """SGD with momentum (optionally Nesterov) and weight decay on every parameter."""
    # fused: one kernel for the whole update instead of a handful per parameter (CUDA only)
    fused = True if device.type == "cuda" else None
    return SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov and cfg.momentum > 0, fused=fused,
    )  # fmt: skip


def make_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    *,
    scheduler: LRScheduler | None = None,
    ema: ModelEMA | None = None,
    generator: torch.Generator | None = None,
    bf16: bool = True,
    channels_last: bool = True,
) -> Step:
    """The trial's training step, exposed so a benchmark times exactly what a trial runs.

    `step(x, y) -> (loss, correct)`: x float [0, 1] NCHW and y int64 on the model's device;
    runs the method's attack and loss, backward, gradient clipping, the optimizer and
    scheduler steps and the EMA update. Returns the batch's mean loss and its number of
    correct predictions as 0-d device tensors (no host sync: sum them, read once).
    `model` is what to call (compiled or not); bf16 / channels_last only act on CUDA.
    """
    loss_fn = method_loss(cfg, generator)
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    amp = bf16 and device.type == "cuda"
    nhwc = channels_last and device.type == "cuda"

    def step(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            loss, logits = loss_fn(model, x, y)
        # zeroed here, after the attack: whatever the attack left in .grad is discarded
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            # foreach: a few kernels for all parameters; returns a tensor, so no sync
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update()
        return loss.detach(), (logits.detach().argmax(dim=1) == y).sum()

    return step


def holdout_metrics(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: TrialConfig,
    *,
    generator: torch.Generator,
    bf16: bool,
) -> tuple[float | None, float | None]:
    """Clean and PGD accuracy on the holdout split for the history (None when empty).

    PGD-k here uses step 2.5 * eps / k (Madry et al.'s rule, 2/255 for k=10 at 8/255):
    a cheap monitor, not the final evaluation.
    """
    if x.shape[0] == 0:
        return None, None
    bs, k, eps = cfg.eval.batch_size, cfg.eval.history_pgd_steps, cfg.eval.eps / 255
    with autocast(x.device, bf16):  # x stays uint8: accuracy() converts batch by batch
        clean = attacks.accuracy(model, x, y, batch_size=bs)
        if k == 0:
            return clean, None
        attack = functools.partial(
            attacks.pgd, eps=eps, step_size=2.5 * eps / k, steps=k, generator=generator
        )
        robust = attacks.accuracy(model, x, y, batch_size=bs, attack=attack)
    return clean, robust


@dataclass
class _Loop:
    """What one trial's training holds between epochs (built once by `_setup`)."""

    model: nn.Module  # the module whose weights are checkpointed
    eval_model: nn.Module  # what is evaluated: the EMA copy when train.ema is set
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    ema: ModelEMA | None
    gens: dict[str, torch.Generator]  # "data": order + augmentation, "attack": attack starts
    step: Step
    steps_per_epoch: int
    lr_at: Callable[[int], float]
    rank: int
    world: int


def train(
    model: nn.Module,
    dataset: Any,
    cfg: TrialConfig,
    *,
    device: torch.device | str,
    checkpoint_dir: str | Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train `model` on `dataset` (sweeper.data.Dataset) by cfg.train, resuming from
    `checkpoint_dir/last.pt` when present; checkpoint and call `on_epoch(record)` after
    every epoch. Trains epochs 1..train.stop_epoch (default: all) of the train.epochs
    schedule. Raises TrialFailed when the loss stops being finite."""
    device = torch.device(device)
    loop = _setup(model, dataset, cfg, device)
    history, start_epoch = _resume(loop, cfg, checkpoint_dir)
    keep_best = cfg.eval.checkpoint == "best"
    best_epoch = best_epoch_of(history)
    best_state = load_best(checkpoint_dir, best_epoch) if keep_best and best_epoch else None
    main = checkpoint_dir is not None and distributed.is_main()  # every worker resumes from it

    for epoch in range(start_epoch, cfg.train.trained_epochs):
        loss_total, n_right, seconds = _train_epoch(loop, dataset, cfg, epoch, device)
        record = _epoch_record(loop, dataset, cfg, epoch, device, loss_total, n_right, seconds)
        history.append(record)
        if best_epoch_of(history) != best_epoch:
            best_epoch = epoch + 1
            if keep_best:
                best_state = _cpu_state(loop.eval_model)
                if main:  # before last.pt
                    save_best(checkpoint_dir, best_epoch, best_state)
        if main:
            save_checkpoint(checkpoint_dir, _checkpoint(loop, cfg, epoch, history))
            if keep_best:
                prune_best(checkpoint_dir, best_epoch)
        if on_epoch is not None:
            on_epoch(dict(record))
    return _finish(loop, history, best_epoch, best_state if keep_best else None, keep_best)


def _setup(model: nn.Module, dataset: Any, cfg: TrialConfig, device: torch.device) -> _Loop:
    """The optimizer, schedule, EMA, generators and step of a trial (DDP with workers)."""
    tc, rt = cfg.train, cfg.runtime
    n_train = dataset.train_x.shape[0]
    steps_per_epoch = n_train // tc.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size {tc.batch_size} is larger than the {n_train} training images",
            key="train.batch_size",
        )
    net = prepare_model(model, rt, device)
    rank, world = distributed.rank_and_world()
    # several workers (sweeper.distributed): DDP averages the gradients of their batch slices
    step_net = distributed.data_parallel(net, device) if world > 1 else net
    optimizer = build_optimizer(model, tc, device)
    scheduler = build_scheduler(optimizer, tc, steps_per_epoch)
    ema = ModelEMA(model, tc.ema) if tc.ema is not None else None
    # Dedicated generators on the data's device: data order + augmentation, attack starts.
    data_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    attack_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    step = make_step(
        step_net, optimizer, tc, scheduler=scheduler, ema=ema, generator=attack_gen,
        bf16=rt.bf16, channels_last=rt.channels_last,
    )  # fmt: skip
    return _Loop(
        model=model, eval_model=ema.module if ema is not None else model, optimizer=optimizer,
        scheduler=scheduler, ema=ema, gens={"data": data_gen, "attack": attack_gen}, step=step,
        steps_per_epoch=steps_per_epoch, lr_at=lr_factor(tc, steps_per_epoch), rank=rank,
        world=world,
    )  # fmt: skip


def _resume(
    loop: _Loop, cfg: TrialConfig, checkpoint_dir: str | Path | None
) -> tuple[list[dict[str, Any]], int]:
    """(history, epochs done) from `checkpoint_dir/last.pt`, its state loaded; ([], 0) when
    there is none (a best-epoch file left without a last.pt is removed)."""
    ckpt = load_checkpoint(checkpoint_dir)
    if ckpt is None:
        if checkpoint_dir is not None and distributed.is_main():
            prune_best(checkpoint_dir, None)  # no last.pt: any best file is an orphan
        return [], 0
    if ckpt.get("trial_id") != cfg.trial_id:
        raise ConfigError(
            f"{Path(checkpoint_dir or '.') / 'last.pt'} belongs to trial "
            f"{ckpt.get('trial_id')}, not {cfg.trial_id}; use another checkpoint directory"
        )
    loop.model.load_state_dict(ckpt["model"])
    loop.optimizer.load_state_dict(ckpt["optimizer"])
    loop.scheduler.load_state_dict(ckpt["scheduler"])
    if loop.ema is not None:
        loop.ema.load_state_dict(ckpt["ema"])
    set_rng_state(loop.gens, ckpt["rng"])
    return list(ckpt["history"]), int(ckpt["epoch"])


def _train_epoch(
    loop: _Loop, dataset: Any, cfg: TrialConfig, epoch: int, device: torch.device
) -> tuple[float, int, float]:
    """One pass over the training set: (loss sum over the steps, correct count, seconds).
    Raises TrialFailed when the loss is not finite."""
    from sweeper.data import train_batches

    tc = cfg.train
    t0 = time.perf_counter()
    loop.model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    batches = train_batches(
        dataset.train_x, dataset.train_y, tc.batch_size, augment=cfg.data.augment,
        rotate_degrees=cfg.data.rotate_degrees, generator=loop.gens["data"],
    )  # fmt: skip
    if loop.world > 1:  # each worker trains on its slice of the same global batches
        loop.gens["attack"].manual_seed(distributed.stream_seed(cfg.seed + 1, epoch, loop.rank))
        batches = distributed.local_slices(batches)
    for x, y in batches:
        loss, n_correct = loop.step(x, y)
        loss_sum += loss
        correct += n_correct
    if loop.world > 1:  # the mean loss and correct count of the global batches
        loss_sum = distributed.all_sum(loss_sum) / loop.world
        distributed.all_sum(correct)
    loss_total, n_right = loss_sum.item(), correct.item()  # the epoch's one host sync
    if not math.isfinite(loss_total):
        raise TrialFailed(f"diverged: non-finite loss at epoch {epoch + 1}")
    return loss_total, n_right, time.perf_counter() - t0


def _epoch_record(
    loop: _Loop, dataset: Any, cfg: TrialConfig, epoch: int, device: torch.device,
    loss_total: float, n_right: int, seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """The epoch's history record: training loss and accuracy, lr, holdout accuracies."""
    tc = cfg.train
    t1 = time.perf_counter()
    if loop.world > 1:  # one model on every worker: to check, checkpoint and evaluate
        distributed.average_norm_statistics(loop.model, *([loop.ema.module] if loop.ema else []))
        distributed.check_replicas_agree(loop.model, what=f"epoch {epoch + 1}")
    loop.eval_model.eval()
    holdout_gen = torch.Generator(device=device).manual_seed(cfg.seed * 100_003 + epoch)
    clean, robust = holdout_metrics(
        loop.eval_model, dataset.holdout_x, dataset.holdout_y, cfg,
        generator=holdout_gen, bf16=cfg.runtime.bf16,
    )  # fmt: skip
    steps = loop.steps_per_epoch
    return {
        "epoch": epoch + 1,
        "train_loss": loss_total / steps,
        "train_acc": n_right / (steps * tc.batch_size),
        "lr": tc.lr * loop.lr_at((epoch + 1) * steps - 1),  # of the epoch's last step
        "holdout_clean_acc": clean,
        "holdout_pgd_acc": robust,
        "seconds": seconds,
        "holdout_seconds": time.perf_counter() - t1,
    }


def _checkpoint(
    loop: _Loop, cfg: TrialConfig, epoch: int, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """What last.pt holds after `epoch`: everything a resume needs to go on bit for bit."""
    return {
        "trial_id": cfg.trial_id,
        "epoch": epoch + 1,
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict(),
        "ema": loop.ema.state_dict() if loop.ema is not None else None,
        "rng": rng_state(loop.gens),
        "history": history,
    }


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _finish(
    loop: _Loop, history: list[dict[str, Any]], best_epoch: int | None,
    best_state: dict[str, Tensor] | None, keep_best: bool,
) -> TrainResult:  # fmt: skip
    """The model to evaluate: with eval.checkpoint=best, the best epoch's weights loaded
    (the end of training's kept as last_state)."""
    last_state = None
    if keep_best:
        if best_state is None:
            raise TrialFailed("eval.checkpoint best: no epoch had a holdout PGD accuracy")
        last_state = _cpu_state(loop.eval_model)
        loop.eval_model.load_state_dict(best_state)
    loop.model.eval()
    loop.eval_model.eval()
    seconds = sum(r["seconds"] + r["holdout_seconds"] for r in history)
    return TrainResult(
        model=loop.eval_model, history=history, seconds=seconds, best_epoch=best_epoch,
        best_state=best_state, last_state=last_state,
    )  # fmt: skip
