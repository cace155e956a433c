"""Bounds: values that would fill the memory or hang are one `error:` line and exit 2 before
anything is built; a key the space would silently ignore is refused with a pointer."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.cli import main
from sweeper.errors import ConfigError
from sweeper.space import expand, load
from sweeper.space.paths import too_many_nodes

SPACE = """sweep: b
base:
  arch: {depths: [1, 1, 1], widths: [0.5, 0.5, 0.5]}
  data: {dataset: synthetic, image_size: 8}
"""


def _bomb() -> str:
    """Nine copies of nine copies ...: 9^8 = 43 million strings once the aliases are expanded."""
    inner = "[x, x, x, x, x, x, x, x, x]"
    names = "abcdefgh"
    text = f"&a {inner}"
    for prev, name in zip(names, names[1:]):
        text = f"&{name} [{text}, " + ", ".join([f"*{prev}"] * 8) + "]"
    return f"axes:\n  - zip:\n      arch.activation: [{text}]\n"


def _run(tmp_path: Path, capsys: pytest.CaptureFixture, body: str, *sets: str) -> str:
    path = tmp_path / "b.yaml"
    path.write_text(SPACE + body)
    args = ["run", str(path), "--dry-run", "--results", str(tmp_path / "r")]
    assert main([*args, *(f"--set={s}" for s in sets)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and len(err) < 400, err
    return err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("arch.depths=[99999999999]", "at most 1000 blocks per stage"),  # was 22 GB, then killed
        ("arch.widths=[1e9]", "widening factors must be at most 256"),
        ("arch.widths=[250]", "billion parameters in the blocks, more than the 2 billion"),
        ("arch.stem_channels=1000000", "arch.stem_channels: expected less than or equal to 4096"),
        ("arch.kernel_size=99", "kernel sizes must be odd, from 1 to 31"),
        ("data.image_size=100000", "data.image_size"),
        ("data.synthetic_train=1000000000", "data.synthetic_train"),
    ],
)
def test_sizes_beyond_any_network_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, override: str, expected: str
) -> None:
    assert expected in _run(tmp_path, capsys, "", override)


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_AS"), reason="POSIX address-space limit")
def test_a_huge_depth_is_refused_within_4_gb(tmp_path: Path) -> None:
    """The issue's example used 22 GB before it was killed; under a 4 GB address-space limit
    it would die with a MemoryError traceback instead of this one line."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 * 1024**3, 4 * 1024**3))

    path = tmp_path / "b.yaml"
    path.write_text(SPACE)
    done = subprocess.run(
        [sys.executable, "-m", "sweeper", "run", str(path), "--dry-run",
         "--set", "arch.depths=[99999999999]"],
        preexec_fn=limit, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().startswith("error: ") and "at most 1000 blocks" in done.stderr


def test_an_alias_bomb_in_a_zip_axis_is_refused_before_expansion(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    err = _run(tmp_path, capsys, _bomb())
    assert "more than 1,000,000 values once YAML aliases are expanded" in err
    assert "b.yaml" in err
    # the same bomb as a --set value
    err = _run(tmp_path, capsys, "", "train.milestones=" + _bomb().split("activation: ")[1])
    assert "--set train.milestones" in err and "aliases" in err


def test_the_node_count_stops_at_its_limit_even_for_a_cycle() -> None:
    looped: list[object] = []
    looped.append(looped)  # what `&a [*a]` loads as
    assert too_many_nodes(looped, limit=1000)
    assert not too_many_nodes({"a": [1, 2, {"b": 3}]}, limit=8)  # 3 containers, 5 values
    assert too_many_nodes({"a": [1, 2, {"b": 3}]}, limit=7)


def test_seed_and_sweep_are_refused_as_base_values_with_a_pointer(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    err = _run(tmp_path, capsys, "", "seed=5")
    assert "--set seed" in err and "seeds: [5]" in err
    err = _run(tmp_path, capsys, "", "sweep=other")
    assert "--set sweep" in err and "sweep: NAME" in err
    path = tmp_path / "s.yaml"
    path.write_text(SPACE.replace("base:\n", "base:\n  seed: 5\n"))
    with pytest.raises(ConfigError, match=r"base\.seed: set it at the top level instead: seeds"):
        load(path)
    path.write_text(SPACE + "seeds: [5]\n")  # the way that works
    assert [c.seed for c in expand(load(path))] == [5]


# --- run-length bounds, file size, and no torch before a space validates (issue 26) ---------

_PROBE = """import sys
from sweeper.cli import main
code = main({args!r})
print("exit", code, "torch" in sys.modules)
"""


def _refused_without_torch(args: list[str]) -> str:
    """Run the CLI in a fresh interpreter: exit 2, one line, and torch never imported."""
    done = subprocess.run([sys.executable, "-c", _PROBE.format(args=args)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.stdout.strip().endswith("exit 2 False"), (done.stdout, done.stderr[-2000:])
    err = done.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and len(err) < 400, err
    return err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=1000000000", "train.epochs: expected less than or equal to 10000"),
        ("train.stop_epoch=100000", "train.stop_epoch: expected less than or equal to 10000"),
        ("train.batch_size=1000000", "train.batch_size: expected less than or equal to 65536"),
        ("train.steps=100000", "train.steps: expected less than or equal to 1000"),
        ("eval.pgd_steps=100000", "eval.pgd_steps: expected less than or equal to 1000"),
        ("eval.cw_steps=100000", "eval.cw_steps: expected less than or equal to 1000"),
        ("eval.batch_size=1000000", "eval.batch_size: expected less than or equal to 65536"),
    ],
)
def test_run_lengths_beyond_any_study_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, override: str, expected: str
) -> None:
    assert expected in _run(tmp_path, capsys, "", override)


def test_epochs_1e9_is_refused_before_torch_is_imported(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(SPACE + "  train: {epochs: 1e9}\n")
    err = _refused_without_torch(["run", str(path), "--dry-run"])
    assert "b.yaml: base.train.epochs: expected less than or equal to 10000" in err
    # the same value in a grid axis names the axis, also before torch
    path.write_text(SPACE + "axes:\n  - grid:\n      train.epochs: [10, 1e9]\n")
    err = _refused_without_torch(["run", str(path), "--dry-run"])
    assert "axes.0.grid.train.epochs: expected less than or equal to 10000" in err
    # and in a single trial's file
    trial = tmp_path / "t.yaml"
    trial.write_text("data: {dataset: synthetic}\ntrain: {epochs: 1000000000}\n")
    err = _refused_without_torch(["trial", str(trial)])
    assert "t.yaml: train.epochs: expected less than or equal to 10000" in err


def test_a_50_mb_grid_is_refused_by_its_size_unparsed(tmp_path: Path) -> None:
    """The issue's 50 MB grid of 4.4 M floats took 5 min and 3.2 GB, then blamed an alias
    bomb: the size is checked before the file is read or parsed."""
    path = tmp_path / "big.yaml"
    row = ", ".join(["0.12345678"] * 10_000)
    with path.open("w") as out:
        out.write(SPACE + "axes:\n  - grid:\n      train.lr: [0.1")
        for _ in range(440):
            out.write(", " + row)
        out.write("]\n")
    assert path.stat().st_size > 50e6
    err = _refused_without_torch(["run", str(path), "--dry-run"])
    assert "big.yaml: 5" in err and "MiB, more than the 4 MiB" in err and "not parsed" in err
    assert "alias" not in err
    err = _refused_without_torch(["trial", str(path)])
    assert "MiB, more than the 4 MiB" in err


def test_many_values_without_aliases_do_not_blame_aliases() -> None:
    flat = {"axes": [{"grid": {"train.lr": list(range(1_000_001))}}]}
    problem = too_many_nodes(flat)
    assert problem and "more than 1,000,000 values" in problem and "alias" not in problem
    shared = [0] * 1000
    assert "alias bomb" in (too_many_nodes([shared] * 1001) or "")


def test_an_axis_lists_at_most_max_cells_values(tmp_path: Path) -> None:
    from sweeper.space.doc import MAX_CELLS

    path = tmp_path / "b.yaml"
    values = ", ".join(["1"] * (MAX_CELLS + 1))
    path.write_text(SPACE + f"axes:\n  - grid:\n      seed_like.key: [{values}]\n")
    with pytest.raises(ConfigError, match=r"axes\.0\.grid\.seed_like\.key: .*at most 100000"):
        load(path)
