"""Read a search-space YAML file (`extends`, `--set`) and validate it into a SearchSpace.

Everything a user can get wrong is found here, before any compute starts, and
reported as one ConfigError naming the file, the key path and what was expected.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sweeper.errors import ConfigError
from sweeper.space.doc import SWEEP_NAME, SearchSpace, SpaceDoc
from sweeper.space.paths import describe_errors, file_too_big, fill_indexed, too_many_nodes
from sweeper.space.sections import check_sections

# --- loading ---------------------------------------------------------------------------------


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's, ~6x faster, where PyYAML has it) that also reads `2e-4` (no
    dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_yaml(path: Path, shown: str) -> dict[str, Any]:
    try:
        too_big = file_too_big(path.stat().st_size)  # size first: a huge file is never parsed
        if too_big:
            raise ConfigError(too_big, file=shown)
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or err}", file=shown) from None
    except UnicodeDecodeError:
        raise ConfigError("expected UTF-8 text", file=shown) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}malformed YAML: {problem}", file=shown) from None
    except (ValueError, OverflowError, RecursionError) as err:
        raise ConfigError(f"malformed YAML: {err}", file=shown) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping at the top level, got {type(data).__name__}", file=shown
        )
    too_many = too_many_nodes(data)
    if too_many:
        raise ConfigError(too_many, file=shown)
    return data


def _deep_merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; lists and scalars in `high` replace those in `low`."""
    out = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_doc(path: Path, shown: str, seen: tuple[Path, ...]) -> dict[str, Any]:
    data = _read_yaml(path, shown)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise ConfigError("expected a file name relative to this file", file=shown, key="extends")
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen:
        raise ConfigError(f"{parent} extends itself (a cycle)", file=shown, key="extends")
    if not parent_path.is_file():  # name the file that says `extends`, not the missing one
        raise ConfigError(f"no file {parent[:200]!r} next to this file", file=shown, key="extends")
    parent_doc = _load_doc(parent_path, str(Path(shown).parent / parent), (*seen, parent_path))
    parent_doc.pop("sweep", None)  # a protocol names no sweep; the study does
    return _deep_merge(parent_doc, data)


def studies_dir() -> Path:
    """The studies shipped with the package (sweeper/studies/*.yaml, package data)."""
    return Path(__file__).resolve().parents[1] / "studies"


def study_names() -> list[str]:
    return sorted(p.stem for p in studies_dir().glob("*.yaml") if not p.name.startswith("_"))


def find_space(path: str | Path) -> Path:
    """`path` itself when it is a file or has a folder part; else the packaged study of that
    name (`depth` or `depth.yaml`), so `sweeper run depth` works from any directory."""
    file = Path(path)
    if file.is_file() or len(file.parts) != 1:
        return file
    packaged = studies_dir() / (file.name if file.suffix in (".yaml", ".yml") else f"{file}.yaml")
    return packaged if packaged.is_file() else file


def load(
    path: str | Path, sets: list[str] | tuple[str, ...] = (), *, sweep: str | None = None
) -> SearchSpace:
    """Read, merge (`extends`), override (`--set k=v`, into `base`) and validate a space.

    `path` is a file, or the name of a packaged study (`smoke`, `depth`; see find_space).
    `sweep` renames the run (results folder, rows' `sweep`); rows keep the study's name."""
    file = find_space(path)
    shown = str(path) if file == Path(path) else str(file)
    if not file.is_file() and len(Path(path).parts) == 1:
        raise ConfigError(
            "no such file, and no packaged study of that name "
            f"(studies: {', '.join(study_names())})",
            file=shown,
        )
    data = _load_doc(file.resolve(), shown, (file.resolve(),))
    try:
        doc = SpaceDoc.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_errors(err, SpaceDoc), file=shown) from None
    if sweep is not None and (len(sweep) > 100 or not re.fullmatch(SWEEP_NAME, sweep)):
        raise ConfigError(
            f"expected a folder name of letters, digits, _ . - (got {sweep[:100]!r})", key="--sweep"
        )
    space = SearchSpace(file=shown, doc=doc, sweep_name=sweep)
    check_sections(space)  # before the arch's checks, which import torch
    from sweeper.space.expansion import check_base

    check_base(space)  # the file's own base: its errors are the file's
    if not sets:
        return space
    doc = doc.model_copy(update={"base": _apply_sets(doc.base, sets)})
    space = SearchSpace(file=shown, doc=doc, sweep_name=sweep)
    try:
        check_base(space)
    except ConfigError as err:  # the file's base was fine: the --set values are to blame
        raise ConfigError(re.sub(r"(^|; )base\.", r"\1", err.detail), key="--set") from None
    return space


def _apply_sets(base: dict[str, Any], sets: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`--set a.b=value` (YAML-typed) into the base config; indexed preset lists filled in."""
    from sweeper.space.overrides import apply_overrides, parse_override

    base = copy.deepcopy(base)
    try:
        for item in sets:
            parts, _ = parse_override(item)
            if parts[0] in ("seed", "sweep", "study"):  # not base values: never dropped silently
                where = {"seed": "seeds: [5] (the repeats) in the space file",
                         "sweep": "--sweep NAME, or sweep: NAME in the space file",
                         "study": "sweep: NAME in the space file"}[parts[0]]  # fmt: skip
                raise ConfigError(f"not a base value; set it with {where}", key=parts[0])
            fill_indexed(base, parts)
        return apply_overrides(base, list(sets))
    except ConfigError as err:
        raise ConfigError(err.detail, key=f"--set {err.key or ''}".strip()) from None
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0], key="--set") from None
