"""The shipped study files: they load, extend the protocol, and have the paper's sizes.

Counting cells is cheap; expanding the width-matched studies builds hundreds of
networks, so full expansion is only done here for the studies that need no matching.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeper.config import TrialConfig

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SIZES = {  # trials per study (cells x seeds), before duplicate trial_ids collapse
    "block_topology": 18,
    "conv_type": 15,
    "se": 21,
    "kernel_size": 81,
    "kernel_size_matched": 81,
    "activation": 21,
    "normalization": 12,
    "depth": 343,
    "width": 512,
    "compound": 34,
    "compound_wide": 186,
    "robustresnets": 8,
    "block_in_wrn": 8,
    "scaling_rules": 12,
    "at_methods": 18,
}
space = pytest.importorskip("sweeper.space")
space_expand = pytest.importorskip("sweeper.space.expansion")


def _count(name: str, sets: tuple[str, ...] = ()) -> int:
    loaded = space.load(SPACES / f"{name}.yaml", sets)
    return len(space_expand.cells(loaded)) * len(loaded.doc.seeds)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_study_loads_with_its_size_and_header(name: str) -> None:
    text = (SPACES / f"{name}.yaml").read_text()
    assert text.startswith("# Study:")
    assert "extends: _protocol.yaml" in text and f"sweep: {name}\n" in text
    header = text.split("\nsweep:")[0]
    assert "found" in header or "concluded" in header  # what the paper found
    if name != "robustresnets":
        assert "--set train.epochs=N" in header
    assert space.load(SPACES / f"{name}.yaml").name == name
    assert _count(name) == SIZES[name]


def test_studies_together_are_the_papers_1200_networks() -> None:
    assert sum(_count(n) for n in SIZES) >= 1200
    assert {p.stem for p in SPACES.glob("*.yaml")} >= {*SIZES, "_protocol"}


def test_protocol_is_the_papers_baseline() -> None:
    cfg = TrialConfig(**space.load(SPACES / "activation.yaml").doc.base)
    t, e = cfg.train, cfg.eval
    assert (cfg.data.dataset, t.method, t.beta) == ("cifar10", "trades", 6.0)
    assert (t.eps, t.step_size, t.steps) == (8.0, 2.0, 10)
    assert (t.lr, t.momentum, t.weight_decay, t.batch_size) == (0.1, 0.9, 2e-4, 128)
    assert (t.grad_clip, t.schedule, t.milestones, t.gamma) == (5.0, "multistep", (0.75, 0.9), 0.1)
    assert (e.pgd_steps, e.pgd_step_size, e.cw_steps, e.cw_step_size) == (20, 0.8, 40, 0.8)
    assert (e.eps, e.aa_size, e.aa_version) == (8.0, 1000, "standard")
    assert t.epochs < 100  # the shortened ablation schedule


def test_epochs_are_one_override_away() -> None:
    configs = space.expand(space.load(SPACES / "normalization.yaml", ("train.epochs=3",)))
    assert len(configs) == 12 and {c.train.epochs for c in configs} == {3}
    assert {c.arch.norm[0] for c in configs} == {
        "batchnorm",
        "groupnorm",
        "layernorm",
        "instancenorm",
    }


def test_final_models_use_the_full_protocol() -> None:
    configs = space.expand(space.load(SPACES / "robustresnets.yaml"))
    assert len(configs) == 8
    assert {(c.train.epochs, c.eval.aa_size) for c in configs} == {(100, 10000)}
    blocks = sorted((c.arch.block, c.arch.depths) for c in configs)
    assert blocks[0] == ("basic", (14, 14, 7)) and blocks[-1] == ("robust", (27, 28, 13))


def test_depth_and_width_vary_only_their_own_axis() -> None:
    for name, fixed, varied in (("depth", "widths", "depths"), ("width", "depths", "widths")):
        loaded = space.load(SPACES / f"{name}.yaml")
        values = {json.dumps(v) for a in loaded.doc.axes for v in (a.grid or {}).values()}
        assert len(values) == 1  # the same list for the three stages
        arch = loaded.doc.base["arch"]
        assert arch[fixed] == ([8, 8, 8] if fixed == "widths" else [4, 4, 4])
        assert all(k.startswith(f"arch.{varied}.") for a in loaded.doc.axes for k in a.grid)


def test_dry_run_lists_the_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real `sweeper run --dry-run --json` on a study that needs no width matching."""
    from sweeper.cli import main

    args = ["run", str(SPACES / "normalization.yaml"), "--dry-run", "--json"]
    assert main([*args, "--results", str(tmp_path), "--set", "train.epochs=3"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert (listing["sweep"], listing["trials"], listing["to_run"]) == ("normalization", 12, 12)


def test_depth_uniform_points_sit_on_the_papers_figure() -> None:
    """scale_depth.png's seven uniform networks at about 1.55 ... 9.7 GMACs (W = 8)."""
    from sweeper.space import macs_of

    figure = {2: 1.55, 3: 2.45, 4: 3.35, 5: 4.25, 7: 6.05, 9: 7.85, 11: 9.7}
    base = space.load(SPACES / "depth.yaml").doc.base["arch"]
    for d, gmacs in figure.items():
        arch = TrialConfig(arch={**base, "depths": [d, d, d]}).arch
        assert abs(macs_of(arch) / 1e9 / gmacs - 1) < 0.03, d


def test_kernel_cells_differ_in_the_kernel_alone() -> None:
    """kernel_size.yaml: WRN-28-10's depths and widths in every cell, MACs growing with
    the kernel; kernel_size_matched.yaml is the budget-matched form."""
    from sweeper.space import macs_of

    configs = space.expand(space.load(SPACES / "kernel_size.yaml"))
    assert {(c.arch.depths, c.arch.widths) for c in configs} == {((4, 4, 4), (10, 10, 10))}
    macs = {c.arch.kernel_size: macs_of(c.arch) for c in configs}
    assert macs[(3, 3, 3)] < macs[(5, 5, 5)] < macs[(7, 7, 7)]
    assert macs[(3, 3, 5)] < macs[(3, 3, 7)] and macs[(3, 5, 3)] < macs[(3, 7, 3)]
    matched = space.load(SPACES / "kernel_size_matched.yaml")
    assert matched.doc.derive is not None and matched.doc.derive.match_gmacs == 5.24


def test_compound_is_the_papers_design() -> None:
    """Two budgets (5 and 20 GMACs), 17 shares over 0.30-0.80 each."""
    doc = space.load(SPACES / "compound.yaml").doc
    grid = doc.axes[0].grid
    assert grid is not None and grid["derive.scaling.gmacs"] == [5, 20]
    shares = grid["derive.scaling.depth_share"]
    assert len(shares) == 17 and (min(shares), max(shares)) == (0.3, 0.8)


def test_new_studies_say_what_they_reproduce() -> None:
    for name, source in (("robustresnets", "configs/CIFAR10"), ("block_in_wrn", "Table 1"),
                         ("scaling_rules", "Table 2"), ("at_methods", "overview")):  # fmt: skip
        header = (SPACES / f"{name}.yaml").read_text().split("\nsweep:")[0]
        assert "Reproduces" in header and source in header, name


def test_robustresnets_are_the_reference_configs() -> None:
    """configs/CIFAR10/{RobustResNet,WRN}-A*.yaml of the reference: depth_configs and
    channel_configs (16*W1, 32*W2, 64*W3), robust_res_block against basic_block."""
    channels = {1: (80, 224, 192), 2: (112, 288, 256), 3: (128, 352, 320), 4: (160, 448, 384)}
    depths = {1: (14, 14, 7), 2: (17, 17, 8), 3: (22, 22, 11), 4: (27, 28, 13)}
    archs = {c.arch for c in space.expand(space.load(SPACES / "robustresnets.yaml"))}
    for a in archs:
        k = next(k for k, d in depths.items() if d == a.depths)
        assert tuple(a.stage_planes()) == channels[k] and a.block in ("basic", "robust")
    assert len(archs) == 8


def test_block_in_wrn_pairs_differ_in_the_block_alone() -> None:
    configs = space.expand(space.load(SPACES / "block_in_wrn.yaml"))
    shapes = {(c.arch.depths, c.arch.widths) for c in configs}
    assert {d[0] for d, _ in shapes} == {4, 5, 7, 11} and len(shapes) == 4
    assert sorted(c.arch.block for c in configs) == ["basic"] * 4 + ["robust"] * 4


def test_at_methods_crosses_methods_with_networks() -> None:
    configs = space.expand(space.load(SPACES / "at_methods.yaml"))
    cells = {(c.train.method, c.arch.block) for c in configs}
    assert cells == {(m, b) for m in ("pgd", "trades", "mart") for b in ("basic", "robust")}
