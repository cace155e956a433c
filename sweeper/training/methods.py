"""Training losses: clean, PGD-AT (Madry), TRADES, MART and FGSM-RS (fast AT).

PGD-AT, TRADES and MART follow the reference code (core/losses/madrys.py, trades.py, mart.py):
the adversary is generated with the model in eval mode (batch-norm uses its running statistics
and is not updated by attack steps), then the model goes back to train mode for the loss whose
gradient trains it. FGSM-RS follows Wong et al. (2020) instead: attack and update both in train
mode, step 1.25 * eps (TrainConfig's default step for fgsm). Each function returns
(loss, logits) where `logits` are those of the loss's main term (adversarial for PGD-AT,
MART and FGSM-RS; clean for clean training and TRADES) and feed the train accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sweeper import attacks
from sweeper.attacks import eval_mode
from sweeper.config import TrainConfig

LossFn = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor]]
Gen = torch.Generator | None
Out = tuple[Tensor, Tensor]


def _clean(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: Gen) -> Out:
    logits = model(x)
    return F.cross_entropy(logits.float(), y), logits


def _radius(cfg: TrainConfig) -> tuple[float, float]:
    """(eps, step) in [0, 1] pixel units: L-inf values are given in 1/255, L2 ones not."""
    scale = 1.0 if cfg.norm == "l2" else 1 / 255
    return cfg.eps * scale, cfg.step_size * scale


def _pgd_examples(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: Gen) -> Tensor:
    """PGD-k on cross-entropy in eval mode (in train.norm's ball), started at
    x + step * N(0, 1) as the reference's MadrysLoss and MartLoss (core/losses/madrys.py,
    mart.py); under L2 at a random point of the ball (per-pixel noise of the step's size
    would start far outside it)."""
    eps, step = _radius(cfg)
    sigma = None if cfg.norm == "l2" else step
    with eval_mode(model):
        return attacks.pgd(
            model, x, y, eps=eps, step_size=step, steps=cfg.steps, loss="ce",
            random_start=True, start_sigma=sigma, generator=gen, norm=cfg.norm,
        )  # fmt: skip


def _pgd_at(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: Gen) -> Out:
    x_adv = _pgd_examples(model, x, y, cfg, gen)
    logits = model(x_adv)
    return F.cross_entropy(logits.float(), y), logits


def _fgsm_rs(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: Gen) -> Out:
    # In train mode, as Wong et al.'s fast AT (its batch-norm statistics see the attack pass).
    x_adv = attacks.fgsm_rs(
        model, x, y, eps=cfg.eps / 255, step_size=cfg.step_size / 255, generator=gen
    )
    logits = model(x_adv)
    return F.cross_entropy(logits.float(), y), logits


def _two_passes(
    model: nn.Module, x: Tensor, x_adv: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(logits, adversarial logits, and their log-softmax in fp32) of TRADES and MART. Two
    forward passes, as in the reference: batch-norm statistics of the clean and the
    adversarial batch stay separate (one concatenated pass would mix them)."""
    logits = model(x)
    logits_adv = model(x_adv)
    log_p = F.log_softmax(logits.float(), dim=1)
    log_p_adv = F.log_softmax(logits_adv.float(), dim=1)
    return logits, logits_adv, log_p, log_p_adv


def _trades(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: Gen) -> Out:
    """CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising the KL from x + 0.001 N(0,1)."""
    eps, step = _radius(cfg)
    with eval_mode(model):
        x_adv = attacks.trades_adversary(
            model, x, eps=eps, step_size=step, steps=cfg.steps, generator=gen, norm=cfg.norm
        )
    logits, _, log_p, log_p_adv = _two_passes(model, x, x_adv)
    # kl_div(input=log q, target=log p) = KL(p || q); the gradient flows through both terms
    kl = F.kl_div(log_p_adv, log_p, reduction="batchmean", log_target=True)
    return F.nll_loss(log_p, y) + cfg.beta * kl, logits


def _mart(model: nn.Module, x: Tensor, y: Tensor, cfg: TrainConfig, gen: Gen) -> Out:
    """MART (Wang et al., 2020): BCE(f(x'), y) + beta * KL(f(x) || f(x')) * (1 - f_y(x)).

    BCE(p, y) = -log p_y - log(1 - max_{k != y} p_k): cross-entropy plus a margin term that
    pushes down the strongest wrong class. The KL term is weighted per example by how
    unconfident the model is on the clean input, so misclassified examples count more.
    """
    x_adv = _pgd_examples(model, x, y, cfg, gen)
    _, logits_adv, log_p, log_p_adv = _two_passes(model, x, x_adv)
    p_adv = log_p_adv.exp()
    true = F.one_hot(y, p_adv.shape[1]).bool()
    top_wrong = p_adv.masked_fill(true, 0.0).amax(dim=1)
    # 1.0001 rather than 1: keeps the log finite when a wrong class takes all the mass
    bce = F.nll_loss(log_p_adv, y) - torch.log(1.0001 - top_wrong).mean()
    p = log_p.exp()
    kl_per_example = (p * (log_p - log_p_adv)).sum(dim=1)
    p_true = p.gather(1, y[:, None]).squeeze(1)
    return bce + cfg.beta * (kl_per_example * (1.0 - p_true)).mean(), logits_adv


METHODS: dict[str, Callable[[nn.Module, Tensor, Tensor, TrainConfig, Gen], Out]] = {
    "clean": _clean,
    "pgd": _pgd_at,
    "trades": _trades,
    "mart": _mart,
    "fgsm": _fgsm_rs,
}


def method_loss(cfg: TrainConfig, generator: torch.Generator | None = None) -> LossFn:
    """loss_fn(model, x, y) -> (loss, logits) for cfg.method; attack starts drawn from
    `generator` (on the data's device) so a resumed run draws the same starts."""
    try:
        fn = METHODS[cfg.method]
    except KeyError:
        raise ValueError(
            f"unknown training method {cfg.method!r}; choose from: {', '.join(METHODS)}"
        ) from None
    return lambda model, x, y: fn(model, x, y, cfg, generator)
