"""Dotted key paths into a config dict, and pydantic errors rewritten as 'key: expected ...'.

Axes and `--set` address config values as `arch.depths.0`; when a preset supplies
the list being indexed, the list is first filled in from the resolved preset.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

Part = str | int

# Values of one YAML document (a file or a --set value), each alias counted where it is used:
# the copies of a "billion laughs" alias bomb are what would hang the expansion. A study
# listing every one of MAX_CELLS trials in a zip axis stays far below this.
MAX_YAML_NODES = 1_000_000
# A space file lists axes and their values, not data: the largest shipped study is under 5 KB,
# and a zip axis listing thousands of cells stays far below this. Checked (by the file's size)
# before the file is parsed, which at PyYAML's speed would take minutes for tens of MB.
MAX_FILE_BYTES = 4 * 1024 * 1024

TOO_MANY_NODES = (
    f"more than {MAX_YAML_NODES:,} values once YAML aliases are expanded (an alias bomb?)"
)
TOO_MANY_VALUES = (
    f"more than {MAX_YAML_NODES:,} values; a space lists axes and their values, not data"
)


def too_many_nodes(value: Any, limit: int = MAX_YAML_NODES) -> str | None:
    """Why `value` is too big (None when it is not): more than `limit` values once aliases are
    expanded. Stops counting there, so a bomb or a self-referencing alias costs `limit` steps
    at most; the reason blames aliases only when a container is reached twice (an alias)."""
    stack, seen, containers, aliased = [value], 0, set(), False
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            return TOO_MANY_NODES if aliased else TOO_MANY_VALUES
        if isinstance(node, (dict, list, tuple)):
            aliased = aliased or id(node) in containers
            containers.add(id(node))
        if isinstance(node, dict):
            stack.extend(node.values())
            seen += len(node)  # the keys
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return None


def file_too_big(size: int, limit: int = MAX_FILE_BYTES) -> str | None:
    """Why a YAML file of `size` bytes is refused unread (None when it is small enough)."""
    if size <= limit:
        return None
    return (f"{size / 2**20:.1f} MiB, more than the {limit / 2**20:g} MiB a space or trial file "
            "may have (it lists axes and values, not data); not parsed")  # fmt: skip


def parse_path(key: str) -> list[Part]:
    """`arch.depths.0` -> ['arch', 'depths', 0]; integer components index lists."""
    if not isinstance(key, str):
        raise ValueError(f"expected a dotted key, got {key!r}")
    parts: list[Part] = []
    for raw in key.split("."):
        raw = raw.strip()
        if not raw:
            raise ValueError(f"expected a dotted key like arch.depths.0, got {key!r}")
        parts.append(int(raw) if raw.isdigit() else raw)
    if isinstance(parts[0], int):
        raise ValueError(f"a key cannot start with a list index, got {key!r}")
    return parts


def flatten(value: Any, prefix: str = "", *, lists: bool = False) -> dict[str, Any]:
    """{"arch": {"depths": [4, 4, 2]}} -> {"arch.depths": [4, 4, 2]}; with `lists`, list items
    become leaves too: {"arch.depths.0": 4, "arch.depths.1": 4, "arch.depths.2": 2}."""
    if isinstance(value, dict) or (lists and isinstance(value, list) and value):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        out: dict[str, Any] = {}
        for k, v in items:
            out.update(flatten(v, f"{prefix}{k}.", lists=lists))
        return out
    return {prefix[:-1]: value}


def _default_at(cfg: dict[str, Any], prefix: list[Part]) -> Any:
    """The value a TrialConfig would have at `prefix` if `cfg` did not set it."""
    from sweeper.config import TrialConfig

    root = prefix[0]
    if root == "arch":
        from sweeper.models.presets import resolve_arch

        arch = cfg.get("arch") or {}
        if isinstance(arch, str):
            arch = {"preset": arch}
        if not isinstance(arch, dict):
            raise ValueError("arch: expected a preset name or a mapping")
        obj: Any = resolve_arch(arch).model_dump()
    else:
        field = TrialConfig.model_fields.get(str(root))
        if field is None:
            raise ValueError(f"unknown key {root!r}")
        obj = field.default
        obj = obj.model_dump() if isinstance(obj, BaseModel) else obj
    for part in prefix[1:]:
        obj = _step(obj, part)
    return _listify(obj)


def _step(obj: Any, part: Part) -> Any:
    if isinstance(part, int):
        if not isinstance(obj, (list, tuple)):
            raise ValueError(f"cannot index [{part}] into {type(obj).__name__}")
        if part >= len(obj):
            raise ValueError(f"index {part} out of range (the list has {len(obj)} items)")
        return obj[part]
    if not isinstance(obj, dict) or part not in obj:
        raise ValueError(f"unknown key {part!r}")
    return obj[part]


def _listify(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_listify(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _listify(v) for k, v in obj.items()}
    return obj


def assign(cfg: dict[str, Any], parts: list[Part], value: Any) -> None:
    """Set `cfg[parts...] = value` in place, creating mappings and filling indexed lists."""
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        nxt = parts[depth + 1]
        if isinstance(part, int):
            node[part] = _listify(node[part])  # tuples from defaults become editable lists
            child = node[part]
        else:
            child = node.get(part)
            if child is None or (isinstance(child, str) and depth == 0 and part == "arch"):
                if isinstance(nxt, int):
                    child = _default_at(cfg, parts[: depth + 1])
                elif isinstance(child, str):
                    child = {"preset": child}
                else:
                    child = {}
                node[part] = child
            elif isinstance(child, tuple):
                child = node[part] = list(child)
        if isinstance(nxt, int):
            if not isinstance(child, list):
                raise ValueError(f"cannot index [{nxt}] into {type(child).__name__}")
            if nxt >= len(child):
                raise ValueError(f"index {nxt} out of range (the list has {len(child)} items)")
        elif not isinstance(child, dict):
            raise ValueError(f"cannot set key {nxt!r} inside {type(child).__name__}")
        node = child
    node[parts[-1]] = _listify(value)  # a fresh copy: cells never share mutable values


def fill_indexed(cfg: dict[str, Any], parts: list[str]) -> None:
    """Before `a.b.0=v` is applied, fill in the list `a.b` from its default when unset."""
    if not parts or parts[0].isdigit():
        return
    for i in range(1, len(parts)):
        if not parts[i].isdigit():
            continue
        prefix = [int(p) if p.isdigit() else p for p in parts[:i]]
        node: Any = cfg
        for part in prefix:
            if isinstance(node, dict) and isinstance(node.get(part), (dict, list, tuple)):
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                assign(cfg, prefix, _default_at(cfg, prefix))
                break
        return


# --- pydantic errors, in the user's words ----------------------------------------------------

_EXPECTED = {
    "missing": "required key missing",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "finite_number": "expected a finite number",
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _annotation_model(annotation: Any, part: Part) -> Any:
    """The model class one step below `annotation` (through Optional / list / dict)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _annotation_model(arg, part)
            if found is not None:
                return found
        return None
    if origin in (list, tuple, dict):
        args = typing.get_args(annotation)
        return _annotation_model(args[-1], part) if args else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _allowed_keys(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        current = _annotation_model(field.annotation, part)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _describe_one(e: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind = e["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, tuple(e["loc"][:-1]))
        return "unknown key" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
    if kind == "too_short" and e.get("ctx", {}).get("min_length") == 1:
        return "expected a non-empty " + ("mapping" if isinstance(e.get("input"), dict) else "list")
    if kind in _EXPECTED:
        got = "" if kind == "missing" else f", got {_short(e.get('input'))}"
        return _EXPECTED[kind] + got
    msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if msg.startswith("Input should be "):
        msg = "expected " + msg.removeprefix("Input should be ")
        msg += f", got {_short(e.get('input'))}"
    return msg


def error_lines(
    err: ValidationError, model: type[BaseModel] | None, prefix: tuple[Any, ...] = ()
) -> list[tuple[str, str]]:
    """(key path, message) pairs; errors nested inside validators are unfolded."""
    out: list[tuple[str, str]] = []
    for e in err.errors():
        loc = (*prefix, *e["loc"])
        inner = e.get("ctx", {}).get("error")
        if isinstance(inner, ValidationError):
            out.extend(error_lines(inner, None, loc))
            continue
        out.append((".".join(str(p) for p in loc), _describe_one(e, model)))
    return out


def describe_errors(
    err: ValidationError, model: type[BaseModel] | None, prefix: tuple[Any, ...] = ()
) -> str:
    """All problems of a ValidationError as one line: `key: expected ...; key2: ...`."""
    return "; ".join(f"{k}: {m}" if k else m for k, m in error_lines(err, model, prefix))
