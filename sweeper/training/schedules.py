"""Learning-rate schedules as a factor of the base lr, evaluated per optimizer step.

Per step (not per epoch) so that short ablation runs of a few epochs still get a smooth
cosine or a warmup shorter than an epoch. Milestones are fractions of the whole run, so the
paper's "x0.1 at 75% and x0.01 at 90%" holds for any number of epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from sweeper.config import TrainConfig

ONECYCLE_PEAK = 0.3  # one-cycle: rise over this share of the run when warmup_epochs is 0


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of cfg.lr used by optimizer step `step` (0-based).

    multistep: gamma ** (milestones passed); cosine: half cosine from 1 to 0 after the
    warmup; constant: 1; onecycle: linear rise from 0 to 1 over the warmup (or the first 30%
    of the run when warmup_epochs is 0), then linear decay to 0 at the end. A warmup
    (warmup_epochs > 0) multiplies every other schedule by a linear ramp (step + 1) / warmup.
    """
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total, round(cfg.warmup_epochs * steps_per_epoch))
    milestones = [round(f * total) for f in cfg.milestones]

    def factor(step: int) -> float:
        if cfg.schedule == "onecycle":
            rise = warmup or max(1, round(ONECYCLE_PEAK * total))
            if step < rise:
                return (step + 1) / rise
            return max(0.0, (total - step) / max(1, total - rise))
        ramp = (step + 1) / warmup if step < warmup else 1.0
        if cfg.schedule == "constant":
            return ramp
        if cfg.schedule == "multistep":
            return ramp * cfg.gamma ** sum(step >= m for m in milestones)
        # cosine, after the warmup
        progress = min(1.0, max(0, step - warmup) / max(1, total - warmup))
        return ramp * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> LambdaLR:
    """A LambdaLR stepped once per optimizer step (its state_dict holds only plain values)."""
    return LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))
