"""The reference loop: the paper's public training code, imitated for a side-by-side timing.

What it imitates (and so what it costs): a CPU DataLoader over a tensor dataset whose
__getitem__ crops and flips one image at a time, as torchvision's RandomCrop(32, padding=4) +
RandomHorizontalFlip + ToTensor do; fp32 NCHW; TRADES recomputing f(x) inside every attack step
and twice in the loss; PGD evaluation by loss.backward() (so weight gradients are computed too);
a `.item()` after every step. Written from the algorithms' descriptions, not copied.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sweeper.config import TrainConfig
from sweeper.models.spec import ArchSpec
from sweeper.perf import timing as perf

EPS, EVAL_STEP = 8.0, 0.8  # 1/255 pixel units


class PerSampleImages(torch.utils.data.Dataset):
    """uint8 CHW images; each __getitem__ crops, flips and converts one image, as
    torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor do."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, augment: bool, pad: int = 4):
        self.x, self.y, self.augment, self.pad = x, y, augment, pad

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.x[i]
        if self.augment:
            p = self.pad
            h, w = img.shape[1:]
            padded = F.pad(img, (p, p, p, p))  # zero padding, torchvision's default fill
            top, left = torch.randint(0, 2 * p + 1, (2,)).tolist()
            img = padded[:, top : top + h, left : left + w]
            if torch.rand(1).item() < 0.5:
                img = img.flip(-1)
        return img.float().div(255), self.y[i]


def reference_loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, *, augment: bool, workers: int, cuda: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches from a CPU DataLoader, the public code's input pipeline."""
    ds = PerSampleImages(x, y, augment=augment)
    while True:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=cuda
        )
        yield from loader


def reference_trades_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig
) -> float:
    """TRADES as the public code writes it: f(x) recomputed inside every attack step and
    twice in the loss, KL with reduction='sum' divided by the batch size."""
    eps, step = cfg.eps / 255, cfg.step_size / 255
    kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x.detach() + 0.001 * torch.randn(x.shape, device=x.device).detach()
    for _ in range(cfg.steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step * torch.sign(grad.detach())
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    opt.zero_grad()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / x.shape[0]) * kl(
        F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1)
    )
    loss = loss_natural + cfg.beta * loss_robust
    loss.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.item()


def reference_pgd_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig
) -> float:
    """PGD-AT (Madry) as the public code writes it: uniform start, CE ascent, then one CE step."""
    eps, step = cfg.eps / 255, cfg.step_size / 255
    model.eval()
    x_adv = x.detach() + torch.empty_like(x).uniform_(-eps, eps)
    for _ in range(cfg.steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss = F.cross_entropy(model(x_adv), y)
        grad = torch.autograd.grad(loss, [x_adv])[0]
        x_adv = x_adv.detach() + step * torch.sign(grad.detach())
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)
    model.train()
    opt.zero_grad()
    loss = F.cross_entropy(model(x_adv.detach()), y)
    loss.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.item()


def reference_pgd_eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """PGD-20 white-box evaluation as the public code writes it: loss.backward() on the input
    (weight gradients are computed too), then the robust error of the batch. The public code's
    clean forward before the attack is left out: clean accuracy is a separate pass for both."""
    eps, step = EPS / 255, EVAL_STEP / 255
    x_pgd = (x + torch.empty_like(x).uniform_(-eps, eps)).requires_grad_(True)
    for _ in range(steps):
        with torch.enable_grad():
            loss = nn.CrossEntropyLoss()(model(x_pgd), y)
        loss.backward()
        eta = step * x_pgd.grad.data.sign()
        x_pgd = x_pgd.data + eta
        eta = torch.clamp(x_pgd - x, -eps, eps)
        x_pgd = torch.clamp(x + eta, 0.0, 1.0).requires_grad_(True)
    with torch.no_grad():
        return (model(x_pgd).argmax(1) != y).float().sum().item()


def reference_timing(
    spec: ArchSpec,
    method: str,
    *,
    batch_size: int,
    steps: int,
    warmup: int,
    device: torch.device,
    workers: int,
    seed: int = 0,
) -> tuple[perf.Timing, list[float]]:
    """Time the reference loop; returns the timing and the per-step losses (or errors)."""
    from sweeper.models import build

    torch.manual_seed(seed)
    model = build(spec).to(device)
    n = batch_size * (steps + warmup)
    x = perf.random_uint8_images(n, device=torch.device("cpu"), seed=seed)
    y = torch.randint(0, spec.num_classes, (n,))
    cfg = TrainConfig(method="trades" if method == "trades" else "pgd", steps=10)
    evaluating = method == "pgd20-eval"
    batches = reference_loader(
        x, y, batch_size, augment=not evaluating, workers=workers, cuda=device.type == "cuda"
    )
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    values: list[float] = []
    if evaluating:
        model.eval()
    else:
        model.train()

    def step() -> None:
        xb, yb = next(batches)
        xb, yb = xb.to(device), yb.to(device)
        if evaluating:
            values.append(reference_pgd_eval(model, xb, yb, 20))
        elif method == "trades":
            values.append(reference_trades_step(model, opt, xb, yb, cfg))
        else:
            values.append(reference_pgd_step(model, opt, xb, yb, cfg))

    timing = perf.time_steps(step, batch_size=batch_size, steps=steps, warmup=warmup, device=device)
    return timing, values
