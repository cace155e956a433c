"""`--set key.path=value` overrides of a nested config dict, shared by `trial` and `run`.

Values are parsed as YAML (`train.lr=0.05` is a float, `arch.activation=[relu,silu,gelu]`
a list, `train.ema=null` None, `sweep=depth` a string). Path components are dict keys;
an integer component indexes a list (`arch.depths.0=5`). Missing dict keys are created.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from sweeper.errors import ConfigError
from sweeper.space.paths import too_many_nodes


def parse_override(text: str) -> tuple[list[str], Any]:
    """ "a.b.0=1.5" -> (["a", "b", "0"], 1.5)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"expected KEY.PATH=VALUE, got {text!r}")
    parts = key.split(".")
    if any(p == "" for p in parts):
        raise ConfigError(f"empty component in key path {key!r}", key=key)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"value {_short(raw)} is {problem}", key=key) from None
    too_many = too_many_nodes(value)
    if too_many:
        raise ConfigError(f"value {_short(raw)}: {too_many}", key=key)
    return parts, value


def _short(text: str) -> str:
    return repr(text) if len(text) <= 60 else repr(text[:57] + "...")


def set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set data[parts[0]][parts[1]]... = value in place (lists indexed by integer parts)."""
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, dict):
            if last:
                node[part] = value
                return
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        elif isinstance(node, list):
            if not part.lstrip("-").isdigit():
                raise ConfigError(f"{part!r} is not an index into a list", key=where)
            index = int(part)
            if not -len(node) <= index < len(node):
                raise ConfigError(
                    f"index {index} out of range for a list of {len(node)}", key=where
                )
            if last:
                node[index] = value
                return
            node = node[index]
        else:
            parent = ".".join(parts[:depth])
            raise ConfigError(
                f"{parent} is a {type(node).__name__} ({node!r}), not a mapping or list",
                key=where,
            )


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A deep copy of `data` with every "key.path=value" applied in order."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        set_path(out, parts, value)
    return out
