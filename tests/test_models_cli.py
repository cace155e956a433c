"""`sweeper model` and `sweeper scale`: output, JSON and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeper.cli import main
from sweeper.models import count_macs, count_params, resolve_arch


def test_model_preset_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "wrn-28-10"]) == 0
    out = capsys.readouterr().out
    assert "36.48M" in out and "5.24G" in out and "basic" in out


def test_model_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "robustresnet-a1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    spec = resolve_arch("robustresnet-a1")
    assert data["params"] == count_params(spec) and data["macs"] == count_macs(spec)
    assert data["spec"]["block"] == "robust" and data["spec"]["depths"] == [14, 14, 7]


def test_model_yaml_with_preset_and_overrides(tmp_path: Path, capsys) -> None:
    path = tmp_path / "arch.yaml"
    path.write_text("preset: wrn-28-10\nactivation: silu\ndepths: [1, 1, 1]\n")
    assert main(["model", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["spec"]["activation"] == ["silu"] * 3
    assert data["params"] == count_params(resolve_arch({"preset": "wrn-28-10", "depths": 1}))


BAD_YAML = [
    ("preset: wrn-99\n", "preset"),
    ("depths: [4, 4\n", "malformed YAML"),
    ("norm: weightnorm\n", "norm"),
    ("block: basic\nconv_type: aggregated\ncardinality: 3\n", "cardinality"),
    ("depths: [4, -4, 4]\n", "depths"),
    ("widths: [1, 2]\n", "widths"),
    ("- 1\n- 2\n", "mapping"),
    ("colour: red\n", "colour"),
    ("preset: [wrn-28-10]\n", "preset"),  # unhashable: was a TypeError traceback
    ("widths: [1e400, 1, 1]\n", "widths.0: Input should be a finite number"),
]


@pytest.mark.parametrize("text,needle", BAD_YAML)
def test_model_bad_yaml_is_one_line_exit_2(tmp_path: Path, capsys, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["model", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("error: ") and str(path) in err and needle in err, err


def test_model_unknown_name_or_missing_file(capsys) -> None:
    assert main(["model", "wrn-99"]) == 2
    assert "wrn-28-10" in capsys.readouterr().err  # lists the presets
    assert main(["model", "missing.yaml"]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err


def test_scale_json(capsys) -> None:
    assert main(["scale", "--target-gmacs", "5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["depths"] == [14, 14, 7] and data["widths"] == [5, 7, 3]
    assert abs(data["macs"] / 5e9 - 1) < 0.1


def test_scale_match_budget(capsys) -> None:
    """The published 5G point (5.08 GMACs) scaled by one fractional factor onto 5 GMACs."""
    assert main(["scale", "--target-gmacs", "5", "--match-budget", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["depths"] == [14, 14, 7] and abs(data["macs"] / 5e9 - 1) < 0.005
    assert [round(w) for w in data["widths"]] == [5, 7, 3] and data["widths"] != [5, 7, 3]


def test_scale_table(capsys) -> None:
    assert main(["scale", "--target-gmacs", "5", "--depth-share", "0.7"]) == 0
    out = capsys.readouterr().out
    assert "14/14/7" in out and "5/7/3" in out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--target-gmacs", "5", "--block", "resnext"], "--block"),
        (["--target-gmacs", "5", "--depth-share", "1.5"], "--depth-share"),
        (["--target-gmacs", "-1"], "--target-gmacs"),
        (["--target-gmacs", "nan"], "--target-gmacs"),  # was a table of nonsense, exit 0
        (["--target-gmacs", "inf"], "--target-gmacs"),  # was a traceback
    ],
)
def test_scale_bad_input(capsys, args: list[str], needle: str) -> None:
    assert main(["scale", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err


def test_model_file_not_utf8_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "arch.yaml"
    path.write_bytes(b"\xff\xfe\x00")
    assert main(["model", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(path) in err, err
