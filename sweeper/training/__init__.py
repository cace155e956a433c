"""Adversarial training: the epoch loop, the AT methods, lr schedules, EMA and checkpoints.

Public API: `train` (one trial's training), `make_step` (its per-batch step, for
benchmarks), and the pieces both are built from.
"""

from sweeper.training.checkpoint import load_checkpoint, save_checkpoint
from sweeper.training.loop import (
    ModelEMA,
    TrainResult,
    autocast,
    build_optimizer,
    holdout_metrics,
    make_step,
    precision,
    prepare_model,
    train,
)
from sweeper.training.methods import METHODS, method_loss
from sweeper.training.schedules import build_scheduler, lr_factor

__all__ = [
    "METHODS",
    "ModelEMA",
    "TrainResult",
    "autocast",
    "build_optimizer",
    "build_scheduler",
    "holdout_metrics",
    "load_checkpoint",
    "lr_factor",
    "make_step",
    "method_loss",
    "precision",
    "prepare_model",
    "save_checkpoint",
    "train",
]
