"""`sweeper export --format export`: a torch.export program (.pt2) that a Python without
sweeper loads with torch alone and that gives the sweeper model's logits."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import tiny_space

from sweeper import results
from sweeper.cli import main
from sweeper.space import expand, load
from sweeper.sweep.runner import _store
from sweeper.trial import run_trial

# Only the installed packages (torch) on the path: -S skips the .pth files, so an editable
# install's finder for sweeper is never loaded; -I leaves out the working folder and PYTHON*.
TORCH_ONLY = textwrap.dedent("""
    import importlib.util, sys
    sys.path.append({purelib!r})
    assert importlib.util.find_spec("sweeper") is None, "sweeper is importable"
    import torch
    program = torch.export.load("model.pt2").module()
    x = torch.load("x.pt")
    with torch.no_grad():
        torch.save(program(x), "logits.pt")
""")


def test_a_pt2_loads_and_matches_logits_in_a_python_without_sweeper(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(tiny_space("exp"))
    space = load(path)
    [config] = expand(space)
    sweep = results.sweep_dir(str(tmp_path / "r"), space.name)
    row = run_trial(config, weights_dir=tmp_path / "work")
    _store(sweep, row, space, [])

    work = tmp_path / "plain"
    work.mkdir()
    args = ["export", sweep, config.trial_id[:6], "--format", "export", "--json",
            "--out", str(work / "model.pt2")]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["file"] == str(work / "model.pt2") and out["format"] == "export"
    assert main(["export", sweep, config.trial_id, "--out", str(tmp_path / "m.pt")]) == 0
    capsys.readouterr()

    from sweeper.models import load_model

    model, _ = load_model(tmp_path / "m.pt")
    x = torch.rand(5, config.arch.in_channels, config.data.image_size, config.data.image_size)
    torch.save(x, work / "x.pt")
    script = TORCH_ONLY.format(purelib=sysconfig.get_paths()["purelib"])
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=work,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(torch.load(work / "logits.pt"), expected, atol=1e-5)


def test_an_unknown_format_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["export", str(tmp_path), "abc", "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--format" in err and "\n" not in err
