"""Pieces of a trial held against the reference code's own definitions.

The reference is github zhichao-lu/robust-residual-network; each test writes the formula of
the file and class it cites (never their code) and compares ours with it on fixed inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sweeper import attacks
from sweeper.config import TrainConfig
from sweeper.models import ACTIVATIONS, BLOCKS, NORMS, ArchSpec, count_macs, robust_scaling
from sweeper.models.layers import MultiScaleConv, create_act, create_norm, group_count
from sweeper.training import method_loss

# ---------------------------------------------------------------- activations
# models/activation.py, `avaliable_activations`: torch defaults where the reference takes the
# torch class (ReLU, ELU, LeakyReLU, SiLU, GELU), Softplus(beta=1, threshold=20),
# Swish: x * sigmoid(x), Mish: x * tanh(softplus(x)).


def _softplus_beta1_threshold20(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 20, x, torch.log1p(torch.exp(x.clamp(max=20))))


REFERENCE_ACTIVATIONS = {
    "relu": lambda x: x.clamp(min=0),
    "silu": lambda x: x * torch.sigmoid(x),
    "swish": lambda x: x * torch.sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "softplus": _softplus_beta1_threshold20,
    "mish": lambda x: x * torch.tanh(_softplus_beta1_threshold20(x)),
    "elu": lambda x: torch.where(x > 0, x, torch.expm1(x)),  # alpha 1
    "leaky_relu": lambda x: torch.where(x > 0, x, 0.01 * x),  # torch's default slope
}
NOT_IN_REFERENCE = {"tanh"}  # sweeper's own; registered as torch's Tanh


def test_every_activation_is_covered() -> None:
    assert set(ACTIVATIONS.names()) == set(REFERENCE_ACTIVATIONS) | NOT_IN_REFERENCE


@pytest.mark.parametrize("name", sorted(REFERENCE_ACTIVATIONS))
def test_activation_matches_reference(name: str) -> None:
    x = torch.cat([torch.linspace(-30, 30, 601), torch.randn(1000, generator=_gen(0)) * 3])
    x = x.double()  # compare the definitions, not float rounding
    torch.testing.assert_close(create_act(name)(x), REFERENCE_ACTIVATIONS[name](x))


# ---------------------------------------------------------------- norms
# models/normalization.py, `avaliable_normalizations`: BatchNorm2d; GroupNorm with
# num_channels // 8 groups; LayerNorm2d: F.layer_norm over the channels of each pixel
# (permute to NHWC, normalise the last dim with a per-channel weight and bias, permute back);
# InstanceNorm2d with torch's defaults (affine=False, no running statistics). eps 1e-5 for all.
EPS = 1e-5


def _standardise(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + EPS)


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def _reference_group_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    n, c, h, w = x.shape
    groups = c // 8
    y = _standardise(x.view(n, groups, c // groups, h, w), (2, 3, 4)).view(n, c, h, w)
    return y * _per_channel(weight) + _per_channel(bias)


def _reference_layer_norm_2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    return _standardise(x, (1,)) * _per_channel(weight) + _per_channel(bias)


def _reference_instance_norm(x: torch.Tensor) -> torch.Tensor:
    return _standardise(x, (2, 3))


def _reference_batch_norm_train(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    return _standardise(x, (0, 2, 3)) * _per_channel(weight) + _per_channel(bias)


def _with_random_affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        module.weight.normal_(1.0, 0.5, generator=_gen(1))
        module.bias.normal_(0.0, 0.5, generator=_gen(2))
    return module.weight.detach(), module.bias.detach()


def test_every_norm_is_covered() -> None:
    assert set(NORMS.names()) == {"batchnorm", "bn", "groupnorm", "gn", "layernorm", "ln",
                                  "instancenorm", "in"}  # fmt: skip


@pytest.mark.parametrize("channels", [16, 64, 160])
def test_norms_match_reference(channels: int) -> None:
    x = torch.randn(3, channels, 5, 5, generator=_gen(3), dtype=torch.float64) * 2 + 0.5
    gn = create_norm("groupnorm", channels).double()
    assert gn.num_groups == channels // 8
    affine = _with_random_affine(gn)
    torch.testing.assert_close(gn(x), _reference_group_norm(x, *affine))

    ln = create_norm("layernorm", channels).double()
    affine = _with_random_affine(ln)
    torch.testing.assert_close(ln(x), _reference_layer_norm_2d(x, *affine))

    inorm = create_norm("instancenorm", channels).double()
    assert list(inorm.parameters()) == [] and not inorm.track_running_stats
    torch.testing.assert_close(inorm(x), _reference_instance_norm(x))
    torch.testing.assert_close(inorm.eval()(x), _reference_instance_norm(x))

    bn = create_norm("batchnorm", channels).double()
    assert (bn.momentum, bn.eps) == (0.1, EPS)
    affine = _with_random_affine(bn)
    torch.testing.assert_close(bn(x), _reference_batch_norm_train(x, *affine))


def test_group_count_falls_back_where_the_reference_cannot_build() -> None:
    """channels // 8 where it divides the channels (every width of the paper's networks);
    else the largest divisor below it (the reference's GroupNorm would raise)."""
    assert [group_count(c) for c in (16, 24, 160, 320, 640)] == [2, 3, 20, 40, 80]
    assert group_count(100) == 10  # 100 // 8 = 12 does not divide 100
    assert group_count(4) == 1 and group_count(13) == 1
    assert create_norm("groupnorm", 100)(torch.randn(2, 100, 3, 3)).shape == (2, 100, 3, 3)


# ---------------------------------------------------------------- hierarchical convolution
# Res2Net's Bottle2neck (and the reference's RobustResBlock, models/resnet.py): 1x1 conv ->
# norm -> act; split into s chunks; chunk j < s-1: conv(chunk_j (+ y_{j-1} when j > 0 and
# stride 1)) -> norm -> act; the last chunk passes through (avg-pooled when strided);
# concatenate; 1x1 conv -> norm; + shortcut; act.


def _res2net_bottleneck(block: nn.Module, x: torch.Tensor, scales: int) -> torch.Tensor:
    h = block.act1(block.norm1(block.conv1(x)))
    chunks = torch.chunk(h, scales, dim=1)
    ys: list[torch.Tensor] = []
    for j, unit in enumerate(block.conv2.convs):
        conv, norm, act = unit  # the block's own layers, used by the reference formula
        inp = chunks[j] if j == 0 else chunks[j] + ys[-1]
        ys.append(act(norm(conv(inp))))
    ys.append(chunks[-1])
    out = block.norm3(block.conv3(torch.cat(ys, dim=1)))
    return block.act_out(out + block.shortcut(x))


@pytest.mark.parametrize("norm,act", [("batchnorm", "relu"), ("groupnorm", "silu")])
def test_hierarchical_bottleneck_is_res2net(norm: str, act: str) -> None:
    torch.manual_seed(0)
    block = BLOCKS.get("bottleneck")(
        64, 32, order="post", conv_type="hierarchical", scales=4, base_width=16, norm=norm, act=act
    ).eval()
    assert isinstance(block.conv2, MultiScaleConv)
    for unit in block.conv2.convs:  # the block's norm and act after every split conv
        assert isinstance(unit[1], type(create_norm(norm, 8))) and isinstance(
            unit[2], type(create_act(act))
        )
    assert isinstance(block.norm2, nn.Identity) and isinstance(block.act2, nn.Identity)
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(block(x), _res2net_bottleneck(block, x, 4))


@pytest.mark.parametrize("block_name", ["basic", "bottleneck", "inverted_bottleneck"])
@pytest.mark.parametrize("order", ["pre", "post"])
def test_hierarchical_convs_normalise_each_split_once(block_name: str, order: str) -> None:
    """Every split conv is followed by the block's norm -> act, and no second norm of the
    block comes right after a hierarchical conv."""
    block = BLOCKS.get(block_name)(
        32, 32, order=order, conv_type="hierarchical", scales=4, base_width=64, norm="groupnorm",
        act="gelu", expansion=1 if block_name == "basic" else 4,
    )  # fmt: skip
    splits = [m for m in block.modules() if isinstance(m, MultiScaleConv)]
    assert splits
    for split in splits:
        assert len(split.convs) == 3
        for unit in split.convs:
            assert isinstance(unit[1], nn.GroupNorm) and isinstance(unit[2], nn.GELU)
    norms = [m for m in block.modules() if isinstance(m, nn.GroupNorm)]
    split_norms = sum(len(s.convs) for s in splits)
    standard = BLOCKS.get(block_name)(
        32, 32, order=order, norm="groupnorm", act="gelu",
        expansion=1 if block_name == "basic" else 4,
    )  # fmt: skip
    block_norms = [m for m in standard.modules() if isinstance(m, nn.GroupNorm)]
    # a hierarchical conv takes over the block norm right after it, where there is one
    # (not after a pre-activation basic block's second conv, which ends the branch)
    followed = 1 if (block_name, order) == ("basic", "pre") else len(splits)
    assert len(norms) == len(block_norms) - followed + split_norms


# ---------------------------------------------------------------- CW-40
# core/dist_engine.py, `_pgd_cw_whitebox` / CWLoss(output, target, confidence=0):
#   real = sum(onehot * output), other = max((1 - onehot) * output - onehot * 10000),
#   loss = -clamp(real - other + confidence, min=0), summed over the batch, ascended.


def _reference_cw(logits: torch.Tensor, y: torch.Tensor, confidence: float) -> torch.Tensor:
    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    real = (onehot * logits).sum(1)
    other = ((1.0 - onehot) * logits - onehot * 10000.0).max(1)[0]
    return -torch.clamp(real - other + confidence, min=0.0)


FIXED_LOGITS = torch.tensor(
    [
        [2.0, 5.0, 1.0, -3.0],  # correct by 3
        [0.0, -1.0, 3.0, 3.0],  # a tie between the true class and another
        [-7.5, -2.0, -9.0, -2.5],  # all negative, correct by 0.5
        [1.0, 8.0, 0.5, 7.9],  # wrong: class 1 beats the true class 0
        [100.0, -50.0, 20.0, 99.0],  # large logits
    ]
)
FIXED_LABELS = torch.tensor([1, 2, 1, 0, 0])


@pytest.mark.parametrize("kappa", [0.0, 0.3, 5.0, 50.0])
def test_cw_loss_matches_reference(kappa: float) -> None:
    ours = attacks.cw_margin(FIXED_LOGITS, FIXED_LABELS, kappa)
    torch.testing.assert_close(ours, _reference_cw(FIXED_LOGITS, FIXED_LABELS, kappa))


def test_cw_kappa_reaches_the_attack() -> None:
    """With kappa 0 a misclassified point has no CW gradient, so PGD leaves it where it is;
    with a large kappa it keeps pushing. A linear model makes the logits exact."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]]))
    x = torch.tensor([[0.9, 0.1, 0.2, 0.5]]).view(1, 1, 2, 2)  # logits 0.9, 0.1, 0.2
    wrong = torch.tensor([1])  # already misclassified (class 0 leads)
    kw = dict(eps=0.05, step_size=0.01, steps=3, loss="cw", random_start=False)
    assert torch.equal(attacks.pgd(model, x, wrong, cw_kappa=0.0, **kw), x)
    assert not torch.equal(attacks.pgd(model, x, wrong, cw_kappa=50.0, **kw), x)


# ---------------------------------------------------------------- attack starts


class _Recorder(nn.Module):
    """A linear classifier that records every input it sees and its mode at the time."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 5)
        self.bn = nn.BatchNorm1d(5)
        self.seen: list[tuple[torch.Tensor, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.detach().clone(), self.training))
        return self.bn(self.fc(x.flatten(1)))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(8, 3, 4, 4, generator=_gen(5))
    x[:, 0] = 0.0  # saturated pixels: a clipped start would show here
    return x, torch.randint(0, 5, (8,), generator=_gen(6))


def test_evaluation_pgd_starts_like_the_reference() -> None:
    """_pgd_whitebox: X + U(-eps, eps), not clipped to [0, 1] before the first step."""
    x, y = _batch()
    model = _Recorder().eval()
    attacks.pgd(model, x, y, eps=8 / 255, step_size=0.8 / 255, steps=1, generator=_gen(7))
    noise = torch.rand(x.shape, generator=_gen(7))
    torch.testing.assert_close(model.seen[0][0], x + (2 * noise - 1) * 8 / 255)
    assert model.seen[0][0].min() < 0


@pytest.mark.parametrize("method", ["pgd", "mart"])
def test_pgd_at_and_mart_start_like_the_reference(method: str) -> None:
    """MadrysLoss / MartLoss: x + step_size * N(0, 1), attack in eval mode, update in train."""
    x, y = _batch()
    cfg = TrainConfig(method=method, eps=8.0, step_size=2.0, steps=2)
    model = _Recorder().train()
    method_loss(cfg, _gen(8))(model, x, y)
    start, training = model.seen[0]
    torch.testing.assert_close(start, x + 2 / 255 * torch.randn(x.shape, generator=_gen(8)))
    assert not training and model.seen[-1][1]  # attack in eval mode, loss in train mode


def test_fgsm_rs_is_wongs() -> None:
    """Wong et al. (2020): step 1.25 * eps by default, start uniform in the eps ball clipped
    into [0, 1], attack and update in train mode."""
    assert TrainConfig(method="fgsm").step_size == 10.0
    assert TrainConfig(method="fgsm", eps=4.0).step_size == 5.0
    assert TrainConfig(method="fgsm", step_size=3.0).step_size == 3.0
    assert TrainConfig(method="trades").step_size == 2.0
    x, y = _batch()
    model = _Recorder().train()
    method_loss(TrainConfig(method="fgsm"), _gen(9))(model, x, y)
    (start, attack_mode), (_, loss_mode) = model.seen
    noise = torch.rand(x.shape, generator=_gen(9))
    torch.testing.assert_close(start, (x + (2 * noise - 1) * 8 / 255).clamp(0, 1))
    assert attack_mode and loss_mode


# ---------------------------------------------------------------- budgets


def test_conv_type_bottlenecks_keep_their_middle_width() -> None:
    """base_width = 64 / (cardinality * scales) (conv_type.yaml) keeps the bottleneck's
    middle at p channels for every conv type, so matching the budget moves W little."""
    from sweeper.space import expand, load

    study = expand(load(Path(__file__).resolve().parents[1] / "search_spaces/conv_type.yaml"))
    bottlenecks = list({c.arch for c in study if c.arch.block == "bottleneck"})
    assert sorted(a.conv_type for a in bottlenecks) == ["aggregated", "both", "hierarchical",
                                                       "standard"]  # fmt: skip
    for arch in bottlenecks:
        card = arch.cardinality if arch.conv_type in ("aggregated", "both") else 1
        scales = arch.scales if arch.conv_type in ("hierarchical", "both") else 1
        block = BLOCKS.get("bottleneck")(
            64, 160, conv_type=arch.conv_type, cardinality=arch.cardinality,
            scales=arch.scales, base_width=arch.base_width,
        )  # fmt: skip
        assert block.conv1.out_channels == 160, (arch.conv_type, card, scales)
        assert abs(count_macs(arch) / 5.24e9 - 1) < 0.02
    widths = [sum(a.widths) / 3 for a in bottlenecks]
    assert max(widths) / min(widths) < 2.5, widths


@pytest.mark.parametrize("gmacs", [5, 40])
@pytest.mark.parametrize("share", [0.3, 0.6, 0.9])
def test_compound_networks_land_on_their_budget(gmacs: float, share: float) -> None:
    """compound.yaml's derive.scaling.match_budget: within 3% of the budget at every share
    (whole widening factors miss by up to 15% where the widths are small)."""
    spec = robust_scaling(gmacs, share, match_budget=True)
    assert abs(count_macs(spec) / (gmacs * 1e9) - 1) < 0.03
    plain = robust_scaling(gmacs, share)
    assert spec.depths == plain.depths
    assert isinstance(spec, ArchSpec)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
