"""L-inf and L2 attacks for adversarial training and evaluation, and accuracy under attack.

Units: eps and step sizes here are in [0, 1] pixel units (the caller divides the config's
1/255 L-inf values by 255; L2 values are given in these units already). Inputs are float
images in [0, 1]; every adversarial example returned lies in the eps ball around its input
and in [0, 1].

Model mode: the attacks use the model as they find it. The protocol generates attacks with the
model in eval mode (BatchNorm on its running statistics), so the trainer wraps attack generation
in `eval_mode(model)` and switches back to train mode for the update (FGSM-RS alone attacks in
train mode, as Wong et al. do); `accuracy` and `autoattack_accuracy` switch to eval mode
themselves.

L2 PGD (norm="l2") steps along the L2-normalised gradient and projects onto the L2 ball
(Madry et al. 2018); its evaluation start is a uniformly random radius in [0, eps] along a
Gaussian direction, clipped into [0, 1] (as torchattacks.PGDL2).

Random starts are the reference code's (zhichao-lu/robust-residual-network): evaluation PGD /
CW from x + U(-eps, eps), PGD-AT and MART from x + step * N(0, 1), TRADES from
x + 0.001 * N(0, 1), none of them clipped before the first step's projection.

Gradients: attacks differentiate w.r.t. the input only (torch.autograd.grad), so no parameter
.grad is touched and a training step's gradients are never polluted. Under a bf16 autocast
context the logits are cast to float32 before the loss, so the loss whose sign-gradient drives
the attack is computed in full precision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sweeper.config import check_aa_attacks
from sweeper.data import to_float
from sweeper.distributed import all_sum, shard

log = logging.getLogger(__name__)

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Norm = Literal["linf", "l2"]
_TINY = 1e-12  # keeps the L2 normalisation of a zero gradient / perturbation finite


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's previous mode on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the L-inf ball of radius eps around x, then into [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)


def _l2_norms(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norms, shaped to broadcast against t."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the L2 ball of radius eps around x, then into [0, 1] (clipping moves each pixel
    towards x's, so the point stays in the ball)."""
    delta = x_adv - x
    delta = delta * (eps / (_l2_norms(delta) + _TINY)).clamp(max=1)
    return (x + delta).clamp_(0, 1)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Into the eps ball of `norm` around x, then into [0, 1]."""
    return _project_l2(x_adv, x, eps) if norm == "l2" else _project(x_adv, x, eps)


def _l2_start(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """x + r * eps * d / |d|, d ~ N(0, I), r ~ U(0, 1), clipped into [0, 1]."""
    direction = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    radius = torch.rand(_l2_norms(direction).shape, device=x.device, dtype=x.dtype,
                        generator=generator)  # fmt: skip
    return (x + direction * (radius * eps / (_l2_norms(direction) + _TINY))).clamp_(0, 1)


def _uniform_start(
    x: torch.Tensor, eps: float, generator: torch.Generator | None, *, clamp: bool = False
) -> torch.Tensor:
    """x + U(-eps, eps): the start of evaluation PGD / CW in the reference
    (core/dist_engine.py, `_pgd_whitebox`), which does not clamp it to [0, 1] (the first
    step's projection does); clamp=True clips it into [0, 1] first, as FGSM-RS does."""
    noise = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    start = x + (2 * noise - 1) * eps
    return start.clamp_(0, 1) if clamp else start


def _normal_start(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """x + sigma * N(0, 1), not projected: the start of the reference's training attacks
    (core/losses/madrys.py, mart.py: sigma = the step size; trades.py: sigma = 0.001)."""
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    return x + sigma * noise


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """Per-sample Carlini-Wagner loss to maximise, as the reference's CWLoss
    (core/dist_engine.py, `_pgd_cw_whitebox`): -max(z_y - max_{j != y} z_j + kappa, 0).

    It rises until the best wrong class beats the true one by kappa (the reference's
    `confidence`, 0 there), then stays flat: a misclassified point is left where it is.
    """
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -(true - others.amax(dim=1) + kappa).clamp(min=0)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    loss: Literal["ce", "cw"] = "ce",
    random_start: bool = True,
    start_sigma: float | None = None,
    cw_kappa: float = 0.0,
    generator: torch.Generator | None = None,
    norm: Norm = "linf",
) -> torch.Tensor:
    """PGD (Madry et al.): `steps` ascent steps on cross-entropy or, with loss="cw", on the CW
    margin with confidence `cw_kappa` (CW-k), each projected back into the eps ball of `norm`
    and [0, 1]. L-inf steps along the gradient's sign, L2 along the L2-normalised gradient.

    random_start: x + U(-eps, eps) (L2: a random point of the L2 ball, see the module
    docstring), or x + start_sigma * N(0, 1) when start_sigma is given (the reference's
    PGD-AT / MART start); drawn from `generator` (on x's device).
    """
    if loss not in ("ce", "cw"):
        raise ValueError(f"unknown PGD loss {loss!r}; choose from 'ce', 'cw'")
    x = to_float(x).detach()
    if not random_start:
        x_adv = x.clone()
    elif start_sigma is not None:
        x_adv = _normal_start(x, start_sigma, generator)
    elif norm == "l2":
        x_adv = _l2_start(x, eps, generator)
    else:
        x_adv = _uniform_start(x, eps, generator)

    def objective(logits: torch.Tensor) -> torch.Tensor:
        if loss == "ce":
            return F.cross_entropy(logits, y, reduction="sum")
        return cw_margin(logits, y, cw_kappa).sum()

    return _ascend(model, x, x_adv, objective, eps=eps, step_size=step_size, steps=steps,
                   norm=norm)  # fmt: skip


def _ascend(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: Norm = "linf",
) -> torch.Tensor:
    """Ascent of objective(logits) from x_adv, projected each step: signed-gradient steps
    (L-inf) or L2-normalised gradient steps (L2)."""
    for _ in range(steps):
        with torch.enable_grad():  # works even when the caller is under torch.no_grad()
            x_adv.requires_grad_(True)
            logits = model(x_adv).float()  # fp32 loss even under bf16 autocast
            (grad,) = torch.autograd.grad(objective(logits), x_adv)
        if norm == "l2":
            grad = grad / (_l2_norms(grad) + _TINY)
        else:
            grad = grad.sign()
        x_adv = project(x_adv.detach() + step_size * grad, x, eps, norm)
    return x_adv.detach() if steps else project(x_adv.detach(), x, eps, norm)


def fgsm_rs(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FGSM with a random start (fast AT, Wong et al. 2020; their step is 1.25 * eps): a
    start uniform in the eps ball clipped into [0, 1], then one signed-gradient step of
    `step_size` on cross-entropy, projected."""
    x = to_float(x).detach()
    start = _uniform_start(x, eps, generator, clamp=True)

    def objective(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="sum")

    return _ascend(model, x, start, objective, eps=eps, step_size=step_size, steps=1)


def trades_adversary(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
    norm: Norm = "linf",
) -> torch.Tensor:
    """The TRADES inner maximisation (Zhang et al. 2019): ascent (in `norm`'s ball) on
    KL(p(x) || p(x_adv)) = sum p(x) * (log p(x) - log p(x_adv)), started at x + 0.001 * N(0, 1)
    (not projected: the reference's core/losses/trades.py).

    Labels are not used: the attack pushes the prediction away from the clean one.
    """
    x = to_float(x).detach()
    with torch.no_grad():
        p_clean = F.softmax(model(x).float(), dim=1)
    x_adv = _normal_start(x, 0.001, generator)

    def objective(logits: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="sum")

    return _ascend(model, x, x_adv, objective, eps=eps, step_size=step_size, steps=steps,
                   norm=norm)  # fmt: skip


def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    attack: Attack | None = None,
) -> float:
    """Fraction of (x, y) classified correctly, in eval mode, batch by batch.

    x is uint8 [0, 255] (converted per batch, so a whole test set never exists as float) or
    float [0, 1]. `attack(model, xb, yb) -> xb_adv`, when given, perturbs each batch first.
    On several workers (sweeper.distributed) each scores its shard of the points and the
    counts are summed: every worker gets the exact fraction over all n.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("accuracy of an empty set")
    part = shard(n)
    correct = _correct(model, x[part], y[part], batch_size=batch_size, attack=attack)
    return all_sum(correct).item() / n  # one host sync for the whole set


def _correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    attack: Attack | None = None,
) -> torch.Tensor:
    """Number of (x, y) classified correctly, as a 0-d tensor on y's device (no host sync)."""
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    with eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            xb, yb = to_float(x[start : start + batch_size]), y[start : start + batch_size]
            if attack is not None:
                xb = attack(model, xb, yb)
            with torch.no_grad():
                correct += (model(xb).argmax(dim=1) == yb).sum()
    return correct


class _Float32Logits(nn.Module):
    """Hands AutoAttack float32 logits whatever the model's (autocast) output dtype."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()


class _OncePerMessage(logging.Filter):
    """AutoAttack's checks may repeat one warning per batch; show each message once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


def autoattack_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    version: Literal["standard", "plus", "rand", "custom"] = "standard",
    attacks: list[str] | tuple[str, ...] | None = None,
    batch_size: int,
    device: torch.device | str,
    seed: int = 0,
    norm: Norm = "linf",
) -> float:
    """Robust accuracy under AutoAttack (Croce & Hein 2020; `norm` linf or l2, eps in [0, 1]
    pixel units either way) through pyautoattack.

    `attacks` (e.g. ["apgd-ce", "apgd-t"]) only with version="custom". The accuracy is measured
    here on the returned examples, after checking they lie in the eps ball and [0, 1].
    pyautoattack reseeds torch's global RNG; the caller's RNG state is restored afterwards.
    Its progress messages (debug / info) are dropped unless the "auto-attack" logger's level
    was set explicitly; its warnings (e.g. zero gradients, Square beating the gradient
    attacks) pass, each message once per call.

    On several workers each attacks its shard of the points and the robust counts are summed:
    AutoAttack attacks every point on its own, so the shards add up to the whole evaluation.
    """
    check_aa_attacks(version, attacks)
    part = shard(x.shape[0])
    x_part, y_part = x[part], y[part]
    robust = torch.zeros((), dtype=torch.long, device=torch.device(device))
    if x_part.shape[0] > 0:  # more workers than points leaves some without any
        robust = _autoattack_robust(model, x_part, y_part, eps=eps, version=version,
                                    attacks=attacks, batch_size=batch_size, device=device,
                                    seed=seed, norm=norm)  # fmt: skip
    acc = all_sum(robust).item() / x.shape[0]
    log.info("AutoAttack %s %s on %d points, eps %.5f: robust accuracy %.4f", norm, version,
             x.shape[0], eps, acc)  # fmt: skip
    return acc


def _autoattack_robust(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    version: Literal["standard", "plus", "rand", "custom"],
    attacks: list[str] | tuple[str, ...] | None,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    norm: Norm = "linf",
) -> torch.Tensor:
    """Number of (x, y) AutoAttack does not break, as a 0-d tensor on `device`."""
    from pyautoattack import AutoAttack  # imported here: only evaluation needs it

    device = torch.device(device)
    x = to_float(x.to(device))
    y = y.to(device)
    wrapped = _Float32Logits(model)
    aa_log = logging.getLogger("auto-attack")
    old_level, dedupe = aa_log.level, _OncePerMessage()
    if old_level == logging.NOTSET:  # a level set on purpose (e.g. DEBUG to watch) is kept
        aa_log.setLevel(logging.WARNING)
    aa_log.addFilter(dedupe)
    cuda = [device] if device.type == "cuda" else []
    try:
        with eval_mode(model), torch.random.fork_rng(devices=cuda):
            adversary = AutoAttack(
                wrapped,
                norm={"linf": "Linf", "l2": "L2"}[norm],
                eps=eps,
                version=version,
                attacks=list(attacks) if attacks is not None else None,
                device=device,
                seed=seed,
            )
            # The targeted attacks default to 9 target classes (CIFAR-10); fewer classes
            # would index past the logits.
            with torch.no_grad():
                num_classes = wrapped(x[:1]).shape[1]
            targets = min(adversary.apgd_targeted.n_target_classes, num_classes - 1)
            adversary.apgd_targeted.n_target_classes = targets
            adversary.fab.n_target_classes = min(adversary.fab.n_target_classes, num_classes - 1)
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        aa_log.setLevel(old_level)
        aa_log.removeFilter(dedupe)

    x_adv = x_adv.to(device)
    delta = x_adv - x
    size = _l2_norms(delta) if norm == "l2" else delta.abs()
    overshoot = size.amax().item() - eps
    tolerance = 1e-4 if norm == "l2" else 1e-5
    if overshoot > tolerance or x_adv.min().item() < -1e-6 or x_adv.max().item() > 1 + 1e-6:
        raise RuntimeError(
            f"AutoAttack returned examples outside the eps ball / [0, 1] "
            f"({norm} overshoot {overshoot:.2e})"
        )
    x_adv = project(x_adv, x, eps, norm)  # float rounding only; checked above
    return _correct(model, x_adv, y, batch_size=batch_size)
