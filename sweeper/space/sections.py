"""The config sections other than `arch`, checked before anything imports torch.

The arch's checks build blocks on torch's meta device, so validating a whole TrialConfig
imports torch (~1.5 s, ~400 MB). A mistake in `train`, `data`, `eval` or `runtime` (say
`train.epochs: 1e9`) is found here first, from the base and from every grid or zip value,
in a fraction of a second.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ValidationError

from sweeper.config import TrialConfig
from sweeper.errors import ConfigError
from sweeper.space.doc import SearchSpace
from sweeper.space.paths import assign, describe_errors, error_lines, parse_path

SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in TrialConfig.model_fields.items()
    if name != "arch" and isinstance(field.annotation, type)
    and issubclass(field.annotation, BaseModel)
}  # fmt: skip


def check_sections(space: SearchSpace) -> None:
    """Raise ConfigError for the first bad base section or axis value (no torch import)."""
    base = space.doc.base
    problem = sections_problem(base, ("base",))
    if problem:
        raise ConfigError(problem, file=space.file)
    for i, axis in enumerate(space.doc.axes):
        kind = "grid" if axis.grid is not None else "zip"
        for key, values in (axis.grid or axis.zip or {}).items():
            problem = _value_problem(base, key, values)
            if problem:
                raise ConfigError(problem, file=space.file, key=f"axes.{i}.{kind}.{key}")


def sections_problem(config: dict[str, Any], prefix: tuple[str, ...] = ()) -> str | None:
    """What is wrong with a config's sections other than arch (None when they validate)."""
    for name, model in SECTIONS.items():
        if isinstance(config.get(name), dict):
            try:
                model.model_validate(config[name])
            except ValidationError as err:
                return describe_errors(err, model, (*prefix, name))
    return None


def _value_problem(base: dict[str, Any], key: str, values: list[Any]) -> str | None:
    """What is wrong with one of an axis key's values on its own (a field's bounds or type);
    checks that relate fields (stop_epoch <= epochs) wait for the whole cell."""
    try:
        parts = parse_path(key)
    except ValueError:
        return None  # check_base names it
    model = SECTIONS.get(str(parts[0]))
    if model is None or len(parts) < 2:
        return None
    section = base.get(parts[0]) if isinstance(base.get(parts[0]), dict) else {}
    for value in values:
        cell = copy.deepcopy(section)
        try:
            assign(cell, parts[1:], value)
            model.model_validate(cell)
        except ValidationError as err:
            own = [m for k, m in error_lines(err, model) if k == ".".join(map(str, parts[1:]))]
            if own:
                return own[0]
        except ValueError:
            return None  # an index into a list the section lacks: the cell check names it
    return None
