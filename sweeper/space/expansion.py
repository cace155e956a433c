"""Expand a validated SearchSpace into resolved TrialConfigs (grid x zip x sample x seeds).

Each cell is validated as a TrialConfig; an error names the axis key that produced
the bad value. Derived architectures and MAC counts are cached per ArchSpec, so a
space of hundreds of cells expands in seconds.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import random
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sweeper.config import TrialConfig
from sweeper.errors import ConfigError
from sweeper.space.doc import MAX_CELLS, Derive, Dist, SearchSpace
from sweeper.space.paths import Part, assign, describe_errors, error_lines, flatten, parse_path

if TYPE_CHECKING:
    from sweeper.models.spec import ArchSpec

# (yaml key path shown in errors, config path, value)
Assignment = tuple[str, list[Part], Any]


@functools.lru_cache(maxsize=4096)
def macs_of(spec: ArchSpec) -> int:
    """Multiply-accumulates of one image (cached: the count builds the network)."""
    from sweeper.models import count_macs

    return int(count_macs(spec))


@functools.lru_cache(maxsize=4096)
def params_of(spec: ArchSpec) -> int:
    from sweeper.models import count_params

    return int(count_params(spec))


@functools.lru_cache(maxsize=1024)
def _match_width(spec: ArchSpec, target_macs: int) -> ArchSpec:
    from sweeper.models import match_width

    return match_width(spec, target_macs)


@functools.lru_cache(maxsize=1024)
def _robust_scaling(
    gmacs: float, share: float, block: str, match_budget: bool, overrides: str
) -> ArchSpec:
    from sweeper.models import robust_scaling

    return robust_scaling(gmacs, share, block, match_budget=match_budget, **json.loads(overrides))


def check_base(space: SearchSpace) -> None:
    """The base alone must be a valid TrialConfig; axis keys must name config or derive keys."""
    try:
        TrialConfig.model_validate({**space.doc.base, "sweep": space.name})
    except ValidationError as err:
        raise ConfigError(describe_errors(err, TrialConfig, ("base",)), file=space.file) from None
    except Exception as err:  # noqa: BLE001 - a bug in a validator must still be one line
        raise ConfigError(f"invalid: {err}", file=space.file, key="base") from None
    names = {"seed": "seeds: [...] (the repeats)", "sweep": "sweep: NAME", "study": "sweep: NAME"}
    for key, where in names.items():
        if key in space.doc.base:  # resolve_cell sets them: a base value would be ignored
            raise ConfigError(f"set it at the top level instead: {where}", file=space.file,
                              key=f"base.{key}")  # fmt: skip
    roots = set(TrialConfig.model_fields) - {"sweep", "study"} | {"derive"}
    for i, axis in enumerate(space.doc.axes):
        kind = "grid" if axis.grid is not None else "zip" if axis.zip is not None else "sample"
        keys = axis.sample.params if axis.sample else (axis.grid or axis.zip or {})
        for key in keys:
            head = parse_path(key)[0]
            where = f"axes.{i}.{kind}{'.params' if axis.sample else ''}.{key}"
            if head not in roots:
                raise ConfigError(
                    f"unknown key {head!r} (expected one of: {', '.join(sorted(roots))})",
                    file=space.file,
                    key=where,
                )


def _axis_options(space: SearchSpace, index: int) -> list[list[Assignment]]:
    axis = space.doc.axes[index]
    if axis.grid is not None:
        keys = list(axis.grid)
        where = [f"axes.{index}.grid.{k}" for k in keys]
        return [
            [(w, parse_path(k), v) for w, k, v in zip(where, keys, combo)]
            for combo in itertools.product(*axis.grid.values())
        ]
    if axis.zip is not None:
        keys = list(axis.zip)
        length = len(next(iter(axis.zip.values())))
        return [
            [(f"axes.{index}.zip.{k}", parse_path(k), axis.zip[k][j]) for k in keys]
            for j in range(length)
        ]
    assert axis.sample is not None
    n = axis.sample.n or space.doc.search.num_samples or 1
    rng = random.Random(f"{axis.sample.seed}/{index}")  # str seeds hash deterministically
    return [
        [
            (f"axes.{index}.sample.params.{k}", parse_path(k), d.draw(rng))
            for k, d in axis.sample.params.items()
        ]
        for _ in range(n)
    ]


def cells(space: SearchSpace) -> list[list[Assignment]]:
    """The product of all axes: one list of assignments per cell (no seeds yet)."""
    size = 1  # counted before any list is built: a typo'd grid must not fill the memory
    for axis in space.doc.axes:
        if axis.grid is not None:
            size *= math.prod(len(v) for v in axis.grid.values())
        elif axis.zip is not None:
            size *= len(next(iter(axis.zip.values())))
        else:
            assert axis.sample is not None
            size *= axis.sample.n or space.doc.search.num_samples or 1
    if size * len(space.doc.seeds) > MAX_CELLS:
        raise ConfigError(
            f"expands to {size * len(space.doc.seeds)} trials, more than {MAX_CELLS}",
            file=space.file,
            key="axes",
        )
    options = [_axis_options(space, i) for i in range(len(space.doc.axes))]
    return [[a for part in combo for a in part] for combo in itertools.product(*options)]


def _source(assignments: list[Assignment], loc: str) -> str | None:
    """The axis key whose value the error at config path `loc` is about."""
    best = None
    for where, parts, _ in assignments:
        path = ".".join(str(p) for p in parts)
        if loc == path or loc.startswith(path + ".") or path.startswith(loc + "."):
            if best is None or len(path) > len(best[1]):
                best = (where, path)
    return best[0] if best else None


def _cell_error(
    space: SearchSpace,
    assignments: list[Assignment],
    err: ValidationError,
    prefix: tuple[Any, ...] = (),
) -> ConfigError:
    problems = []
    for loc, msg in error_lines(err, TrialConfig, prefix):
        src = _source(assignments, loc)
        problems.append(f"{src}: {msg}" if src else f"base.{loc}: {msg}" if loc else msg)
    shown = ", ".join(f"{'.'.join(map(str, p))}={v!r}" for _, p, v in assignments)
    cell = f" (in the trial {shown})" if shown else ""
    return ConfigError("; ".join(problems) + cell, file=space.file)


def resolve_cell(
    space: SearchSpace, assignments: list[Assignment], seed: int
) -> TrialConfig | None:
    """One cell -> a validated TrialConfig, or None when a constraint drops it."""
    cfg = copy.deepcopy(space.doc.base)
    derive: dict[str, Any] = (
        space.doc.derive.model_dump(exclude_none=True) if space.doc.derive else {}
    )
    # presets first, so that an indexed key (arch.depths.0) edits the chosen preset's list
    ordered = sorted(assignments, key=lambda a: a[1][-1] != "preset")
    for where, parts, value in ordered:
        try:
            if parts[0] == "derive":
                if len(parts) < 2:
                    raise ValueError("expected a key below derive, e.g. derive.match_gmacs")
                assign(derive, parts[1:], value)
            else:
                assign(cfg, parts, value)
        except (ValueError, ValidationError, TypeError) as err:
            raise ConfigError(str(err).splitlines()[0], file=space.file, key=where) from None
    cfg["sweep"] = space.name
    cfg["study"] = space.study
    if not any(parts == ["seed"] for _, parts, _ in assignments):  # an axis may vary the seed
        cfg["seed"] = seed
    try:
        config = TrialConfig.model_validate(cfg)
    except ValidationError as err:
        raise _cell_error(space, assignments, err) from None
    except Exception as err:  # noqa: BLE001 - validators of other modules: still one line
        raise ConfigError(f"invalid trial: {err}", file=space.file) from None
    try:
        rule = Derive.model_validate(derive)
    except ValidationError as err:
        raise _cell_error(space, assignments, err, ("derive",)) from None
    try:
        config = _derive(config, rule)
        return config if _within(space, config.arch) else None
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - model code on user values: report, not crash
        why = describe_errors(err, None) if isinstance(err, ValidationError) else str(err)
        shown = ", ".join(f"{'.'.join(map(str, p))}={v!r}" for _, p, v in assignments)
        raise ConfigError(
            f"cannot derive or count the network: {why.splitlines()[0] if why else repr(err)}"
            + (f" (in the trial {shown})" if shown else ""),
            file=space.file,
            key="derive",
        ) from None


def _derive(config: TrialConfig, rule: Derive) -> TrialConfig:
    if rule.match_gmacs is not None:
        arch = _match_width(config.arch, int(round(rule.match_gmacs * 1e9)))
        return config.model_copy(update={"arch": arch, "macs_target": rule.match_gmacs})
    if rule.scaling is not None:
        s = rule.scaling
        default = type(config.arch)()
        keep = {
            k: v
            for k, v in config.arch.model_dump(mode="json").items()
            if k not in ("depths", "widths", "block")
            and v != getattr(default, k)
            and not (isinstance(v, list) and tuple(v) == getattr(default, k))
        }
        arch = _robust_scaling(
            s.gmacs, s.depth_share, s.block or config.arch.block, s.match_budget,
            json.dumps(keep, sort_keys=True),
        )  # fmt: skip
        return config.model_copy(update={"arch": arch, "macs_target": s.gmacs})
    return config


def _within(space: SearchSpace, arch: ArchSpec) -> bool:
    limits = space.doc.constraints
    if limits.gmacs is not None and not limits.gmacs.holds(macs_of(arch) / 1e9):
        return False
    return limits.params_m is None or limits.params_m.holds(params_of(arch) / 1e6)


def expand(space: SearchSpace) -> list[TrialConfig]:
    """Every trial of a plain (non-Optuna) space, duplicates (same trial_id) collapsed."""
    if space.is_search:
        return []
    out: dict[str, TrialConfig] = {}
    for assignments in cells(space):
        for seed in space.doc.seeds:
            config = resolve_cell(space, assignments, seed)
            if config is None:
                continue
            first = out.setdefault(config.trial_id, config)
            if first.runtime != config.runtime:  # same trial, told to run two ways
                keys = [f"runtime.{k}" for k, v in config.runtime if getattr(first.runtime, k) != v]
                raise ConfigError(
                    f"axes: two cells differ only in {', '.join(keys)}, which says how a trial "
                    "runs, not what it is (not part of its trial_id): give each cell one value",
                    file=space.file,
                    key=keys[0],
                )
    return list(out.values())


def search_params(space: SearchSpace) -> dict[str, Dist]:
    """The sampled parameters an Optuna search explores (all sample axes together)."""
    params: dict[str, Dist] = {}
    for axis in space.doc.axes:
        if axis.sample is not None:
            params.update(axis.sample.params)
    return params


def resolve_point(space: SearchSpace, point: dict[str, Any]) -> TrialConfig | None:
    """A searcher's suggestion ({dotted key: value}) -> a TrialConfig (None: constrained)."""
    assignments = [(f"search.{k}", parse_path(k), v) for k, v in point.items()]
    return resolve_cell(space, assignments, space.doc.seeds[0])


def varying_values(configs: list[TrialConfig]) -> list[dict[str, Any]]:
    """Per config, only the values that differ across the list (what a study varies)."""
    flats = [flatten({**c.identity(), "seed": c.seed}) for c in configs]
    keys = [k for k in flats[0] if any(f.get(k) != flats[0].get(k) for f in flats)] if flats else []
    return [{k: f.get(k) for k in keys} for f in flats]
