"""Installed anywhere: the studies ship in the package, resolve by name from any directory,
`sweeper init` copies them for editing, and the built wheel works in a fresh venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from sweeper.cli import main
from sweeper.space import expand, load

ROOT = Path(__file__).resolve().parents[1]


def test_studies_resolve_by_name_and_init_copies_them_for_editing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # no search_spaces/ here
    smoke = load("smoke")
    assert smoke.name == "smoke" and len(expand(smoke)) == 4
    depth = load("depth.yaml")  # `extends: _protocol.yaml` resolves beside the packaged file
    assert depth.doc.base["train"]["method"] == "trades"
    assert main(["run", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no packaged study" in err and "smoke" in err and "\n" not in err, err

    assert main(["init", "mine"]) == 0
    copied = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert "_protocol.yaml" in copied and "depth.yaml" in copied
    assert load("mine/depth.yaml").sha256 == depth.sha256  # the same study, now editable
    (tmp_path / "mine" / "_protocol.yaml").write_text(
        (tmp_path / "mine" / "_protocol.yaml").read_text().replace("epochs: 10", "epochs: 3")
    )
    assert expand(load("mine/normalization.yaml"))[0].train.epochs == 3  # edits take effect
    assert main(["init", "mine"]) == 2  # never overwrites an edited file silently
    assert "already there" in capsys.readouterr().err
    assert main(["init", "mine", "--force"]) == 0


@pytest.mark.skipif(os.name != "posix", reason="venv layout (bin/) of POSIX")
def test_the_wheel_runs_the_packaged_studies_from_an_empty_directory(tmp_path: Path) -> None:
    """Build the wheel, install it alone (no deps, no index) into a fresh venv that borrows
    this environment's libraries, and run the studies by name from an empty folder."""
    pytest.importorskip("setuptools")  # the build backend, without build isolation (offline)
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "sweeper", src / "sweeper", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"

    def run(*cmd: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600,
                              **kw)  # type: ignore[call-overload]  # fmt: skip
        assert done.returncode == 0, (cmd, done.stderr[-2000:])
        return done

    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, src)
    [wheel] = wheels.glob("robust_sweeper-*.whl")  # the distribution; `sweeper` on the index
    with zipfile.ZipFile(wheel) as archive:  # is an unrelated project
        names = archive.namelist()
        [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(meta).decode()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"sweeper"}
    assert "License-Expression: MIT" in metadata and "Project-URL: Paper" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "sweeper/studies/depth.yaml" in names and "sweeper/studies/_protocol.yaml" in names

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    run(*pip, "--python", venv / "bin" / "python", "install", "-q", "--no-deps", "--no-index",
        wheel)  # fmt: skip
    show = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = run(venv / "bin" / "python", "-c", show).stdout.strip()
    # torch, Ray and the rest from this environment (appended after the venv's own packages)
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(venv / "bin" / "python", "-c", "import sweeper; print(sweeper.__file__)",
                cwd=empty, env=env).stdout.strip()  # fmt: skip
    assert where.startswith(purelib), where
    for study, trials in (("smoke", 4), ("depth", 343)):
        out = run(venv / "bin" / "sweeper", "run", study, "--dry-run", "--json", cwd=empty,
                  env=env).stdout  # fmt: skip
        plan = json.loads(out)
        assert plan["trials"] == trials and plan["file"].startswith(purelib)
    assert list(empty.iterdir()) == []  # a dry run writes nothing
