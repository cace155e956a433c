"""A column for every config key a sweep varies, named by its dotted path (`train.beta`).

The fixed columns (sweeper.schema) cover the architecture and the headline training
settings; a study that varies anything else (TRADES beta, the CW margin, the lr) would
otherwise show rows that look identical unless one parses the `config` JSON. Writers add
the keys their run varies to each row file (so `pandas.read_parquet` sees them);
`sweeper.results.read` also recomputes them from every row's config, so rows written by
runs that varied different keys still read as one table.

Values: scalars keep their type; a list of scalars is written the way per-stage columns
are (`"relu"` when uniform, `"3/5/7"` when not); anything nested as JSON. The Arrow type of
a key follows from the TrialConfig field it names, never from one row's value, so every
row file of a key agrees (a null in one row and an int in the next still unify).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union

import pyarrow as pa
from pydantic import BaseModel

from sweeper.config import NOT_IDENTITY, TrialConfig
from sweeper.schema import COLUMNS
from sweeper.space.paths import flatten

_SCALARS: dict[type, pa.DataType] = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
}


def identity(config_json: str | None) -> dict[str, Any] | None:
    """A row's `config` JSON as the flat keys that define the trial (no runtime, sweep or
    study)."""
    try:
        config = json.loads(config_json) if config_json else None
    except (TypeError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    return flatten({k: v for k, v in config.items() if k not in NOT_IDENTITY})


# Config keys a fixed column already holds, in the same shape (`arch.block` is `block`;
# `arch.depths` is depth1..3): never a second column. Rows of older sweeps that wrote them
# still read, without them.
_ARCH_COLUMNS = ("block", "activation_order", "conv_type", "se", "kernel_size", "activation",
                 "norm", "depths", "widths")  # fmt: skip
_HELD = {"train.eps": "eps", "eval.eps": "eval_eps", "eval.pgd_steps": "pgd_steps",
         "eval.cw_steps": "cw_steps"}  # fmt: skip


def held_by_fixed_column(key: str) -> bool:
    """Whether a fixed column of the schema already says what the dotted config key does."""
    parts = key.split(".")
    if parts[0] == "arch" and len(parts) in (2, 3) and parts[1] in _ARCH_COLUMNS:
        return len(parts) == 2 or parts[2].isdigit()
    return key in COLUMNS or key in _HELD


def varying_keys(flat_configs: Iterable[dict[str, Any]]) -> list[str]:
    """Dotted keys whose value differs between the configs (first-seen order), less the
    keys that already are fixed columns (seed, macs_target, arch.block, ...)."""
    configs = list(flat_configs)
    order: dict[str, None] = {}
    for flat in configs:
        order.update(dict.fromkeys(flat))
    first = configs[0] if configs else {}

    def varies(key: str) -> bool:
        return any(flat.get(key, _MISSING) != first.get(key, _MISSING) for flat in configs)

    return [k for k in order if not held_by_fixed_column(k) and varies(k)]


_MISSING = object()


def column_type(key: str) -> pa.DataType:
    """The Arrow type of the column for a dotted config key (string when not a scalar)."""
    annotation: Any = TrialConfig
    for part in key.split("."):
        annotation = _optional_inner(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return pa.string()
            annotation = field.annotation
        elif typing.get_origin(annotation) in (tuple, list) and part.isdigit():
            args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
            annotation = args[min(int(part), len(args) - 1)] if args else Any
        else:
            return pa.string()
    annotation = _optional_inner(annotation)
    if typing.get_origin(annotation) is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        annotation = kinds.pop() if len(kinds) == 1 else Any
    return _SCALARS.get(annotation, pa.string()) if isinstance(annotation, type) else pa.string()


def _optional_inner(annotation: Any) -> Any:
    """X | None -> X (a union of several real types stays as it is)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def column_value(flat: dict[str, Any] | None, key: str) -> Any:
    """The value of `key` in a flat config, shaped for its column (None when absent)."""
    if flat is None:
        return None
    if key in flat:
        value = flat[key]
    else:  # an indexed key (arch.depths.0) of a list-valued entry
        head, _, index = key.rpartition(".")
        listed = flat.get(head)
        if not (index.isdigit() and isinstance(listed, list) and int(index) < len(listed)):
            return None
        value = listed[int(index)]
    if isinstance(value, list):
        if all(isinstance(v, (str, int, float, bool)) for v in value) and value:
            text = [str(v) for v in value]
            return text[0] if len(set(text)) == 1 else "/".join(text)
        return json.dumps(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _fit(value: Any, kind: pa.DataType) -> Any:
    """`value` as its column stores it; null when it does not fit the key's type (a row of a
    config that failed validation)."""
    if kind == pa.string() and value is not None and not isinstance(value, str):
        value = json.dumps(value)
    try:
        pa.array([value], type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    return value


def extra_columns(
    config_json: str | None, keys: Iterable[str]
) -> list[tuple[str, pa.DataType, Any]]:
    """(name, type, value) of each varying-key column of one row."""
    flat = identity(config_json)
    return [(k, column_type(k), _fit(column_value(flat, k), column_type(k))) for k in keys]


def with_varying(table: pa.Table) -> pa.Table:
    """`table` plus a column for every key that varies within any one sweep of it
    (recomputed from each row's config: complete even where runs varied different keys)."""
    table = _drop_held(table)
    if "config" not in table.column_names or table.num_rows == 0:
        return table
    flats = [identity(c) for c in table.column("config").to_pylist()]
    table = _fill_held(table, flats)
    sweeps = table.column("sweep").to_pylist()
    keys: dict[str, None] = {}
    for sweep in dict.fromkeys(sweeps):
        group = [f for s, f in zip(sweeps, flats) if s == sweep and f is not None]
        keys.update(dict.fromkeys(varying_keys(group)))
    for key in keys:
        kind = column_type(key)
        column = pa.array([_fit(column_value(f, key), kind) for f in flats], type=kind)
        if key in table.column_names:
            table = table.set_column(table.column_names.index(key), key, column)
        else:
            table = table.append_column(key, column)
    return table


def _drop_held(table: pa.Table) -> pa.Table:
    """Without an older sweep's dotted copies of fixed columns (`arch.block` beside `block`)."""
    return table.drop_columns([c for c in table.column_names if "." in c
                               and held_by_fixed_column(c)])  # fmt: skip


def _unfilled(table: pa.Table) -> bool:
    """Whether rows written before eval_eps / pgd_steps / cw_steps were columns lack them."""
    return table.num_rows > 0 and any(
        name in table.column_names and table.column(name).null_count for name in _HELD.values()
    )


def _fill_held(table: pa.Table, flats: list[dict[str, Any] | None]) -> pa.Table:
    """eval_eps, pgd_steps, cw_steps of rows written before they were columns, from their
    configs (the config's defaults where it does not name them)."""
    defaults = identity(TrialConfig(sweep="-").canonical_json()) or {}
    for key, name in _HELD.items():
        if name not in table.column_names or table.column(name).null_count == 0:
            continue
        kind = table.schema.field(name).type
        old = table.column(name).to_pylist()
        new = [v if v is not None or f is None else _fit(f.get(key, defaults.get(key)), kind)
               for v, f in zip(old, flats)]  # fmt: skip
        table = table.set_column(table.column_names.index(name), name, pa.array(new, kind))
    return table


def fmt_value(value: Any) -> str:
    """A factor's value as a label: whole floats without '.0', others to 3 digits."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def complete(settled: pa.Table, fresh: pa.Table) -> pa.Table:
    """One sweep's rows with a column for every key that varies among them, as `with_varying`
    computes it, but parsing few configs: `settled` rows come from the sweep's compacted table,
    whose columns were completed when it was written, so one of them stands for all (a key
    they store no column for has the same value in all of them); `fresh` rows (the log's, an
    older layout's) are parsed one by one. The cost is that of the fresh rows, not the sweep's."""
    settled, fresh = _drop_held(settled), _drop_held(fresh)
    if settled.num_rows == 0 and fresh.num_rows == 0:
        return settled if settled.num_columns >= fresh.num_columns else fresh
    one = identity(settled.column("config")[0].as_py()) if settled.num_rows else None
    flats = [identity(c) for c in fresh.column("config").to_pylist()] if fresh.num_rows else []
    fresh = _fill_held(fresh, flats) if _unfilled(fresh) else fresh
    if _unfilled(settled):  # a table compacted from rows older than those columns
        settled = _fill_held(settled, [identity(c) for c in settled.column("config").to_pylist()])
    stored = [c for c in settled.column_names if c not in COLUMNS]
    sample = [f for f in (one, *flats) if f is not None]
    for key in dict.fromkeys([*stored, *varying_keys(sample)]):
        kind = column_type(key)
        if key not in stored:
            value = _fit(column_value(one, key), kind)
            settled = _put(settled, key, pa.array([value] * settled.num_rows, type=kind))
        column = pa.array([_fit(column_value(f, key), kind) for f in flats], type=kind)
        fresh = _put(fresh, key, column)
    return pa.concat_tables([settled, fresh], promote_options="permissive")


def _put(table: pa.Table, key: str, column: pa.Array) -> pa.Table:
    if key in table.column_names:
        return table.set_column(table.column_names.index(key), key, column)
    return table.append_column(key, column)


def aligned(tables: list[pa.Table]) -> list[pa.Table]:
    """Sweeps' tables (each completed) given the same key columns: a key another sweep varies
    has one value in all rows of a sweep that has no column for it, taken from one config."""
    keys = dict.fromkeys(c for t in tables for c in t.column_names if c not in COLUMNS)
    out = []
    for table in tables:
        missing = [k for k in keys if k not in table.column_names]
        if missing and table.num_rows and "config" in table.column_names:
            one = identity(table.column("config")[0].as_py())
            for key in missing:
                kind = column_type(key)
                value = _fit(column_value(one, key), kind)
                table = table.append_column(key, pa.array([value] * table.num_rows, type=kind))
        out.append(table)
    return out
