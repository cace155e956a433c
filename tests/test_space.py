"""Search spaces: YAML -> validated SearchSpace -> the expected TrialConfigs, or one-line errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sweeper.cli import main
from sweeper.errors import ConfigError
from sweeper.space import expand, load, varying_values

TINY = """
sweep: {name}
base:
  arch: {{block: basic, depths: [1, 1, 1], widths: [0.25, 0.25, 0.25]}}
  data: {{dataset: synthetic, image_size: 8}}
  train: {{epochs: 1}}
"""


def write(tmp_path: Path, body: str, name: str = "s", file: str = "space.yaml") -> Path:
    path = tmp_path / file
    path.write_text(TINY.format(name=name) + textwrap.dedent(body))
    return path


def test_grid_is_the_cartesian_product_with_seeds(tmp_path: Path) -> None:
    space = load(
        write(
            tmp_path,
            """
        axes:
          - grid:
              arch.activation: [relu, silu]
              arch.depths.0: [1, 2, 3]
        seeds: [0, 1]
    """,
        )
    )
    configs = expand(space)
    assert len(configs) == 12
    assert {c.sweep for c in configs} == {"s"}
    assert len({c.trial_id for c in configs}) == 12
    assert {(c.arch.activation[0], c.arch.depths, c.seed) for c in configs} == {
        (a, (d, 1, 1), s) for a in ("relu", "silu") for d in (1, 2, 3) for s in (0, 1)
    }


def test_zip_moves_together_and_duplicates_collapse(tmp_path: Path) -> None:
    space = load(
        write(
            tmp_path,
            """
        axes:
          - zip:
              arch.depths: [[1, 1, 1], [2, 2, 1], [1, 1, 1]]
              arch.widths: [[0.25, 0.25, 0.25], [0.5, 0.5, 0.25], [0.25, 0.25, 0.25]]
    """,
        )
    )
    configs = expand(space)
    assert [(c.arch.depths, c.arch.widths) for c in configs] == [
        ((1, 1, 1), (0.25, 0.25, 0.25)),
        ((2, 2, 1), (0.5, 0.5, 0.25)),
    ]
    assert varying_values(configs)[1] == {"arch.depths": [2, 2, 1], "arch.widths": [0.5, 0.5, 0.25]}


def test_runtime_settings_may_follow_cells_but_never_make_cells(tmp_path: Path) -> None:
    """runtime.* says how a trial runs, not what it is (no part of its trial_id): a zip may
    give big networks more workers, but cells that differ only there, or a sampled runtime
    key, would silently run as one trial."""
    per_net = """
        axes:
          - zip:
              arch.activation: [relu, silu]
              runtime.workers: [1, 2]
    """
    assert [c.runtime.workers for c in expand(load(write(tmp_path, per_net)))] == [1, 2]
    only = "axes:\n  - grid: {runtime.workers: [1, 2]}\n"
    with pytest.raises(ConfigError, match=r"runtime\.workers: axes: two cells differ only in"):
        expand(load(write(tmp_path, only)))
    sampled = """
        search: {method: optuna, num_samples: 4}
        axes:
          - sample: {params: {runtime.workers: {choice: [1, 2]}}}
    """
    with pytest.raises(ConfigError, match="runtime.workers cannot be sampled; set it in base"):
        load(write(tmp_path, sampled))


def test_sample_draws_n_points_deterministically(tmp_path: Path) -> None:
    body = """
        axes:
          - sample:
              n: 5
              seed: {seed}
              params:
                train.lr: {{loguniform: [0.01, 0.2]}}
                arch.activation: {{choice: [relu, silu]}}
                train.beta: {{uniform: [1, 8]}}
                arch.kernel_size: {{choice: [1, 3]}}
                train.steps: {{randint: [1, 4]}}
    """
    a = expand(load(write(tmp_path, body.format(seed=0))))
    b = expand(load(write(tmp_path, body.format(seed=0))))
    c = expand(load(write(tmp_path, body.format(seed=1))))
    assert len(a) == 5
    assert [x.trial_id for x in a] == [x.trial_id for x in b]
    assert [x.trial_id for x in a] != [x.trial_id for x in c]
    for cfg in a:
        assert 0.01 <= cfg.train.lr <= 0.2 and 1 <= cfg.train.beta <= 8
        assert cfg.train.steps in (1, 2, 3)


def test_constraints_drop_cells_and_derive_sets_the_budget(tmp_path: Path) -> None:
    from sweeper.models import count_macs
    from sweeper.models.spec import ArchSpec

    small = count_macs(ArchSpec(depths=(1, 1, 1), widths=(1, 1, 1)))  # GMACs count at 32x32
    space = load(
        write(
            tmp_path,
            f"""
        axes:
          - grid:
              arch.widths: [[1, 1, 1]]
              arch.depths.0: [1, 2, 4]
        constraints:
          gmacs: {{max: {small * 1.6 / 1e9}}}
    """,
        )
    )
    assert sorted(c.arch.depths[0] for c in expand(space)) == [1, 2]
    target = 2 * small / 1e9
    matched = expand(
        load(
            write(
                tmp_path,
                f"""
        axes:
          - grid:
              arch.activation: [relu, silu]
        derive:
          match_gmacs: {target}
    """,
            )
        )
    )
    assert len(matched) == 2
    for cfg in matched:
        assert cfg.macs_target == pytest.approx(target)
        assert count_macs(cfg.arch) == pytest.approx(target * 1e9, rel=0.1)
        assert cfg.arch.widths[0] > 0.25


def test_derive_keys_can_be_axes(tmp_path: Path) -> None:
    space = load(
        write(
            tmp_path,
            """
        axes:
          - grid:
              derive.scaling.gmacs: [0.01, 0.02]
        derive:
          scaling: {gmacs: 0.01, depth_share: 0.7}
    """,
        )
    )
    configs = expand(space)
    assert sorted(c.macs_target for c in configs) == [0.01, 0.02]


def test_extends_and_set_override_the_base(tmp_path: Path) -> None:
    (tmp_path / "_proto.yaml").write_text("base:\n  train: {epochs: 7, lr: 0.05}\n")
    path = write(tmp_path, "extends: _proto.yaml\n")
    space = load(path)
    [cfg] = expand(space)
    assert (cfg.train.epochs, cfg.train.lr) == (1, 0.05)  # this file's base wins over the protocol
    [cfg] = expand(load(path, ["train.epochs=4", "arch.depths.1=2", "train.weight_decay=5e-4"]))
    assert (cfg.train.epochs, cfg.arch.depths, cfg.train.weight_decay) == (4, (1, 2, 1), 5e-4)


def test_preset_axes_with_indexed_keys(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("sweep: p\nbase: {arch: {preset: wrn-28-10}}\n"
                    "axes:\n  - grid: {arch.depths.2: [1, 2]}\n")  # fmt: skip
    assert sorted(c.arch.depths for c in expand(load(path))) == [(4, 4, 1), (4, 4, 2)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("axes:\n  - grid: {arch.depths.0: []}\n",
         "axes.0.grid.arch.depths.0: expected a non-empty list"),
        ("axes:\n  - grid: {}\n", "axes.0.grid: expected a non-empty mapping"),
        ("axes:\n  - grid: {arch.depths.0: 3}\n", "axes.0.grid.arch.depths.0: expected a list"),
        ("axez: []\n", "axez: unknown key (expected one of: axes, base"),
        ("seeds: one\n", "seeds: expected a list"),
        ("axes:\n  - grid: {arch.blok: [a]}\n", "axes.0.grid.arch.blok: unknown key"),
        ("axes:\n  - grid: {arch.activation: [relu, nope]}\n", "axes.0.grid.arch.activation"),
        ("axes:\n  - grid: {trian.lr: [1]}\n", "axes.0.grid.trian.lr: unknown key 'trian'"),
        ("axes:\n  - zip: {train.lr: [1, 2], train.beta: [1]}\n", "equal lengths"),
        ("constraints: {gmacs: {max: big}}\n", "constraints.gmacs.max: expected a number"),
        ("axes:\n  - sample: {params: {train.lr: {uniform: [1, 2]}}}\n", "sample.n"),
        ("axes: [{grid: {arch.depths.5: [1]}}]\n", "index 5 out of range"),
        ("search: {method: optuna, num_samples: 3}\n", "only sample axes"),
        ("axes:\n  - sample: {n: 2, params: {train.lr: {uniform: [0, .inf]}}}\n",
         "train.lr: expected finite bounds"),  # every draw was lr=inf
    ],
)  # fmt: skip
def test_errors_name_file_key_and_expectation(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        expand(load(path))
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_base_errors_and_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("sweep: x\nbase:\n  train: {epochs: many}\n")
    with pytest.raises(ConfigError, match=r"base\.train\.epochs: expected an integer"):
        load(path)
    path.write_text("sweep: x\nbase:\n  train: [epochs\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+, column \d+: malformed YAML"):
        load(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load(path)


def test_cli_reports_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, "axes:\n  - grid: {arch.depths.0: []}\n")
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {path}: axes.0.grid.arch.depths.0: expected a non-empty list"


def test_dry_run_json_lists_trials(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, "axes:\n  - grid: {arch.activation: [relu, silu, gelu]}\n")
    results = tmp_path / "results"
    assert main(["run", str(path), "--dry-run", "--json", "--results", str(results)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trials"] == 3 and out["to_run"] == 3
    assert out["total_macs"] > 0
    assert [t["values"]["arch.activation"][0] for t in out["trials_list"]] == [
        "relu",
        "silu",
        "gelu",
    ]


def test_shipped_spaces_load() -> None:
    for path in sorted((Path(__file__).parents[1] / "search_spaces").glob("[!_]*.yaml")):
        assert load(path).name


def test_too_many_trials_is_refused_before_any_cell_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweeper.space import expansion as space_expand

    def built(*args: object) -> None:
        raise AssertionError("built the axis options first (a 10^8 grid fills the memory)")

    keys = ["train.lr", "train.beta", "train.epochs", "train.steps", "train.batch_size",
            "train.step_size", "train.eps", "seed"]  # fmt: skip
    grid = ", ".join(f"{k}: [{', '.join(str(v) for v in range(1, 11))}]" for k in keys)
    path = write(tmp_path, f"axes:\n  - grid: {{{grid}}}\n")
    monkeypatch.setattr(space_expand, "_axis_options", built)
    with pytest.raises(ConfigError, match="expands to 100000000 trials, more than 100000"):
        expand(load(path))
