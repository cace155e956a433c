"""Threat models beyond L-inf (issue 21): PGD-L2 against independent implementations,
AutoAttack L2, the generated and file-based common corruptions, L2 training, and a trial
scored under all three threats."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import tiny_cnn, train_clean
from torch import nn

from sweeper.attacks import accuracy, autoattack_accuracy, pgd
from sweeper.config import DataConfig, TrainConfig, TrialConfig
from sweeper.corruptions import CORRUPTIONS, corrupt, corrupted_sets
from sweeper.data import Dataset, load_dataset
from sweeper.trial import run_trial, validate_config

L2_EPS = 0.5


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[nn.Module, Dataset]:
    """A tiny CNN trained (clean) on the 16x16 digits; read-only."""
    data = load_dataset(DataConfig(dataset="digits", image_size=16, holdout_size=0))
    torch.manual_seed(0)
    model = train_clean(tiny_cnn(10), data, epochs=6, seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, data


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def _reference_pgd_l2(model, x, y, start, *, eps, alpha, steps):
    """PGD-L2 from the textbook (Madry et al. 2018): x_{t+1} = Proj_{B2(x, eps) & [0,1]}
    (x_t + alpha * g / |g|_2), g the gradient of the cross-entropy; written out here apart
    from sweeper.attacks."""
    x_adv = start.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        # + 1e-10 as torchattacks: a point with an exactly zero gradient (a saturated
        # softmax) stays where it is instead of becoming NaN
        g_norm = g.view(len(g), -1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10
        x_adv = x_adv.detach() + alpha * g / g_norm
        delta = x_adv - x
        d_norm = delta.view(len(delta), -1).norm(dim=1).view(-1, 1, 1, 1)
        delta = delta * torch.clamp(eps / d_norm, max=1.0)
        x_adv = torch.clamp(x + delta, 0, 1)
    return x_adv.detach()


def test_pgd_l2_matches_torchattacks_and_a_textbook_reference() -> None:
    torchattacks = pytest.importorskip("torchattacks")
    model, data = _digits()
    x, y = data.test_x[:64].float() / 255, data.test_y[:64]
    kw = dict(eps=L2_EPS, step_size=0.1, steps=10, loss="ce")
    # with a random start: the reference runs from the very start ours drew (steps=0)
    start = pgd(model, x, y, random_start=True, norm="l2", generator=torch.Generator()
                .manual_seed(3), **{**kw, "steps": 0})  # fmt: skip
    assert (_l2(start - x) > 0).all() and (_l2(start - x) <= L2_EPS + 1e-5).all()
    ours = pgd(model, x, y, random_start=True, norm="l2",
               generator=torch.Generator().manual_seed(3), **kw)  # fmt: skip
    reference = _reference_pgd_l2(model, x, y, start, eps=L2_EPS, alpha=0.1, steps=10)
    gap = (ours - reference).abs().flatten(1).amax(dim=1)
    assert torch.allclose(ours, reference, atol=1e-5), (gap.max(), (gap > 1e-5).sum())
    # torchattacks.PGDL2 from x itself (its random start draws from its own RNG)
    ours = pgd(model, x, y, random_start=False, norm="l2", **kw)
    theirs = torchattacks.PGDL2(model, eps=L2_EPS, alpha=0.1, steps=10, random_start=False)(x, y)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    assert (_l2(ours - x) <= L2_EPS + 1e-5).all() and ours.min() >= 0 and ours.max() <= 1
    model.eval()  # torchattacks may leave the model in another mode
    # and it is an attack: far stronger than the clean accuracy, weaker at a smaller radius
    clean = accuracy(model, x, y, batch_size=64)
    assert accuracy(model, ours, y, batch_size=64) < clean - 0.2
    small = pgd(model, x, y, random_start=False, norm="l2", **{**kw, "eps": 0.1})
    assert accuracy(model, small, y, batch_size=64) > accuracy(model, ours, y, batch_size=64)


def test_autoattack_l2_runs_on_digits() -> None:
    model, data = _digits()
    x, y = data.test_x[:40], data.test_y[:40]
    clean = accuracy(model, x, y, batch_size=40)
    kw = dict(batch_size=40, device="cpu", version="custom", attacks=["apgd-ce"])
    aa = autoattack_accuracy(model, x, y, eps=L2_EPS, norm="l2", **kw)
    weak = autoattack_accuracy(model, x, y, eps=0.05, norm="l2", **kw)
    assert 0 <= aa < clean and aa <= weak <= clean, (clean, weak, aa)


def test_every_generated_corruption_changes_images_and_severity_5_hurts_more() -> None:
    model, data = _digits()
    x, y = data.test_x[:60], data.test_y[:60]
    drops = {}
    for name in CORRUPTIONS:
        mild, harsh = corrupt(x, name, 1), corrupt(x, name, 5)
        assert mild.shape == x.shape and mild.dtype == torch.uint8
        assert not torch.equal(mild, x) and not torch.equal(harsh, x), name
        assert torch.equal(corrupt(x[:4], name, 5), corrupt(x[:4], name, 5)), name  # seeded
        drops[name] = (accuracy(model, mild, y, batch_size=60),
                       accuracy(model, harsh, y, batch_size=60))  # fmt: skip
    mean_mild = np.mean([m for m, _ in drops.values()])
    mean_harsh = np.mean([h for _, h in drops.values()])
    assert mean_harsh < mean_mild - 0.1, drops
    # severity 5 is at least as harmful as severity 1 for nearly every corruption
    assert sum(h <= m for m, h in drops.values()) >= len(CORRUPTIONS) - 2, drops


def test_published_files_are_read_when_present(tmp_path) -> None:
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    per = 8  # a small stand-in for the files' 10,000 images per severity
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(per) % 10, 5).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    for i, name in enumerate(CORRUPTIONS):
        images = np.full((5 * per, 32, 32, 3), i, dtype=np.uint8)
        images[:, 0, 0, 0] = np.repeat(np.arange(1, 6), per)  # severity marker
        np.save(folder / f"{name}.npy", images + rng.integers(0, 2, images.shape, np.uint8))
    test_x = torch.zeros(20, 3, 32, 32, dtype=torch.uint8)
    source, sets = corrupted_sets("cifar10", test_x, torch.zeros(20, dtype=torch.long), n=5,
                                  data_dir=tmp_path)  # fmt: skip
    sets = list(sets)
    assert source == "files:CIFAR-10-C" and len(sets) == 75
    name, severity, x, y = sets[7]
    assert (name, severity) == (CORRUPTIONS[1], 3) and x.shape == (5, 3, 32, 32)
    assert (x[:, 0, 0, 0] >= 3).all() and (x[:, 0, 0, 0] <= 4).all()
    assert y.tolist() == [0, 1, 2, 3, 4]
    (folder / "fog.npy").unlink()
    with pytest.raises(Exception, match="fog.npy"):
        list(corrupted_sets("cifar10", test_x, test_x[:, 0, 0, 0].long(), n=5,
                            data_dir=tmp_path)[1])  # fmt: skip
    # elsewhere (or without the folder) the corruptions are generated
    source, _ = corrupted_sets("digits", test_x, test_x[:, 0, 0, 0].long(), n=5,
                               data_dir=tmp_path)  # fmt: skip
    assert source.startswith("generated:imagecorruptions-")


def test_l2_training_attack_stays_in_its_ball() -> None:
    from sweeper.training.methods import _pgd_examples, method_loss

    model, data = _digits()
    x, y = data.test_x[:32].float() / 255, data.test_y[:32]
    cfg = TrainConfig(method="pgd", norm="l2", eps=0.5, steps=5)
    assert cfg.step_size == pytest.approx(0.125)  # the L2 default: eps / 4
    x_adv = _pgd_examples(model, x, y, cfg, torch.Generator().manual_seed(0))
    size = _l2(x_adv - x)
    assert (size <= 0.5 + 1e-5).all() and size.mean() > 0.3
    assert (x_adv - x).abs().max() > 8 / 255  # not an L-inf 8/255 attack
    for method in ("pgd", "trades"):
        loss, _ = method_loss(TrainConfig(method=method, norm="l2", eps=0.5, steps=2))(
            model, x, y
        )
        assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="norm"):
        TrainConfig(method="mart", norm="l2", eps=0.5)


def test_new_keys_at_their_defaults_keep_trial_ids() -> None:
    # ids measured before eval.threats / eval.l2_* / train.norm existed
    assert TrialConfig().trial_id == "b6ea87d4107aa9af"
    with open("examples/trial_digits.yaml") as f:
        example = yaml.safe_load(f)
    assert validate_config(example).trial_id == "663786122c8701c0"
    spelled = {**example, "eval": {**example["eval"], "threats": ["linf"], "l2_eps": 0.5},
               "train": {**example["train"], "norm": "linf"}}  # fmt: skip
    assert validate_config(spelled).trial_id == "663786122c8701c0"
    more = {**example, "eval": {**example["eval"], "threats": ["linf", "l2"]}}
    assert validate_config(more).trial_id != "663786122c8701c0"
    with pytest.raises(Exception, match="threats"):
        validate_config({"eval": {"threats": ["linf", "linf"]}})


def test_a_digits_trial_under_all_three_threats() -> None:
    with open("examples/trial_digits.yaml") as f:
        config = yaml.safe_load(f)
    config["train"].update(epochs=3)
    config["eval"].update(threats=["linf", "l2", "corruptions"], aa_size=30,
                          corruption_size=20, cw_steps=5)  # fmt: skip
    config["data"].update(test_size=60)
    config["runtime"] = {"device": "cpu"}
    row = run_trial(config, catch=False)
    assert row["status"] == "ok", row["error"]
    clean = row["clean_acc"]
    assert clean > 0.5
    for col in ("pgd_acc", "aa_acc", "l2_pgd_acc", "l2_aa_acc", "corruption_acc"):
        assert 0 <= row[col] < clean, (col, row[col], clean)
    accs = json.loads(row["corruption_accs"])
    assert list(accs) == list(CORRUPTIONS) and all(len(a) == 5 for a in accs.values())
    assert all(0 <= a <= 1 for v in accs.values() for a in v)
    assert row["corruption_acc"] == pytest.approx(np.mean(list(accs.values())))
    assert row["corruption_source"].startswith("generated:imagecorruptions-")
    assert (row["corruption_n"], row["l2_aa_n"], row["l2_eps"]) == (20, 30, 0.5)
    assert row["train_norm"] == "linf"
    # a trial without the new threats leaves their columns empty
    config["eval"].update(threats=["linf"])
    config["train"].update(epochs=1)
    row = run_trial(config, catch=False)
    assert all(row[c] is None for c in ("l2_pgd_acc", "l2_aa_acc", "corruption_acc",
                                        "corruption_accs", "corruption_source"))  # fmt: skip


def test_threat_models_study_lists_its_trials(tmp_path, capsys) -> None:
    """`sweeper run threat_models --dry-run`: the packaged study, every network under all
    three threats (the width matching builds each network once: slow on a loaded CPU)."""
    from sweeper import space
    from sweeper.cli import main

    args = ["run", "threat_models", "--dry-run", "--json", "--results", str(tmp_path)]
    assert main(args) == 0
    listing = json.loads(capsys.readouterr().out)
    assert (listing["sweep"], listing["trials"], listing["to_run"]) == ("threat_models", 48, 48)
    configs = space.expand(space.load("threat_models"))
    assert {c.eval.threats for c in configs} == {("linf", "l2", "corruptions")}
    assert {(c.arch.block, c.arch.se) for c in configs} >= {("robust", "residual"),
                                                            ("basic", "standard")}  # fmt: skip


EVAL_SPACE = """
sweep: threats_eval
base:
  arch: {depths: 1, widths: 0.5, stem_channels: 8}
  data: {dataset: synthetic, image_size: 8, synthetic_train: 200, synthetic_test: 40,
         holdout_size: 20}
  train: {method: trades, epochs: 2, batch_size: 50, lr: 0.05, steps: 2, step_size: 4.0}
  eval: {pgd_steps: 3, cw_steps: 0, aa_size: 0, history_pgd_steps: 0, batch_size: 100}
"""


def test_sweeper_eval_scores_stored_weights_under_new_threats(tmp_path, capsys) -> None:
    from sweeper import results
    from sweeper.cli import main
    from sweeper.reevaluate import evaluation_settings
    from sweeper.space import expand, load
    from sweeper.sweep.plan import varying_columns
    from sweeper.sweep.runner import _store

    path = tmp_path / "threats_eval.yaml"
    path.write_text(EVAL_SPACE)
    space = load(path)
    (config,) = expand(space)
    assert "threats" not in evaluation_settings(config)["eval"]  # stored eval ids unchanged
    sweep = results.sweep_dir(str(tmp_path / "r"), space.name)
    row = run_trial(config, weights_dir=tmp_path / "work")
    _store(sweep, row, space, varying_columns(space, [config]))
    args = ["eval", sweep, "--json", "--set", "eval.threats=[l2,corruptions]",
            "--set", "eval.corruption_size=6", "--set", "eval.aa_size=8",
            "--set", "eval.aa_version=custom", "--set", "eval.aa_attacks=[apgd-ce]"]  # fmt: skip
    assert main(args) == 0
    (ev,) = json.loads(capsys.readouterr().out)["rows"]
    assert ev["status"] == "ok" and ev["clean_acc"] == row["clean_acc"]
    assert ev["pgd_acc"] is None and ev["aa_acc"] is None  # linf not asked for
    for col in ("l2_pgd_acc", "l2_aa_acc", "corruption_acc"):
        assert 0 <= ev[col] <= 1, col
    assert ev["corruption_n"] == 6 and ev["corruption_source"].startswith("generated:")
    stored = results.read_evals(sweep)
    assert len(stored) == 1 and stored["l2_aa_acc"].iloc[0] == ev["l2_aa_acc"]
    assert results.read(sweep)["l2_aa_acc"].isna().all()  # the training row is untouched
