"""The schema of a search-space YAML document (pydantic, extra keys forbidden).

Validated before anything runs; `sweeper.space` loads files into these models and
`sweeper.space.expansion` turns them into TrialConfigs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sweeper.space.paths import parse_path

MAX_CELLS = 100_000  # a bigger product is almost surely a typo, and would take minutes to list
METRICS = ("clean_acc", "pgd_acc", "cw_acc", "aa_acc")
SWEEP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # also a folder name: no slashes, no leading dot


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dist(_Strict):
    """One sampled parameter: exactly one of the four distributions."""

    choice: list[Any] | None = Field(None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None  # low inclusive, high exclusive

    @model_validator(mode="after")
    def _one_kind(self) -> Dist:
        kinds = [k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("expected exactly one of choice, uniform, loguniform, randint")
        lo, hi = self.uniform or self.loguniform or self.randint or (0, 1)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"expected finite bounds, got [{lo}, {hi}]")
        if not lo < hi:
            raise ValueError(f"expected low < high, got [{lo}, {hi}]")
        if self.loguniform and lo <= 0:
            raise ValueError(f"loguniform needs a positive low bound, got {lo}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k))

    def draw(self, rng: random.Random) -> Any:
        if self.choice is not None:
            return copy.deepcopy(rng.choice(self.choice))
        if self.uniform is not None:
            return rng.uniform(*self.uniform)
        if self.loguniform is not None:
            lo, hi = self.loguniform
            return math.exp(rng.uniform(math.log(lo), math.log(hi)))
        assert self.randint is not None
        return rng.randrange(*self.randint)


class Sample(_Strict):
    n: int | None = Field(None, ge=1, le=MAX_CELLS)  # draws; optuna/random search: the budget
    seed: int = 0  # draws are a pure function of this seed and the axis position
    params: dict[str, Dist] = Field(min_length=1)


# One axis key's values: at most MAX_CELLS (the product of all axes is bounded by it too)
NonEmptyList = Annotated[list[Any], Field(min_length=1, max_length=MAX_CELLS)]
Values = Annotated[dict[str, NonEmptyList], Field(min_length=1)]


class Axis(_Strict):
    """One entry of `axes`: a grid (cartesian), a zip (moves together) or a sample."""

    grid: Values | None = None
    zip: Values | None = None
    sample: Sample | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Axis:
        kinds = [k for k in ("grid", "zip", "sample") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("expected exactly one of grid, zip, sample")
        if self.zip is not None and len({len(v) for v in self.zip.values()}) > 1:
            lengths = {k: len(v) for k, v in self.zip.items()}
            raise ValueError(f"zip lists must have equal lengths, got {lengths}")
        return self


class Scaling(_Strict):
    gmacs: float = Field(gt=0, le=1e4)
    depth_share: float = Field(0.7, gt=0, lt=1)
    block: str | None = None  # default: the trial's arch.block
    # true: widths then scaled by one fractional factor onto the budget (robust_scaling's
    # match_budget); false: the whole widening factors of the published points
    match_budget: bool = False


class Derive(_Strict):
    match_gmacs: float | None = Field(None, gt=0, le=1e4)
    scaling: Scaling | None = None

    @model_validator(mode="after")
    def _not_both(self) -> Derive:
        if self.match_gmacs is not None and self.scaling is not None:
            raise ValueError("expected match_gmacs or scaling, not both")
        return self


class Window(_Strict):
    min: float | None = None
    max: float | None = None

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class Constraints(_Strict):
    gmacs: Window | None = None
    params_m: Window | None = None  # millions of parameters


class Search(_Strict):
    method: Literal["grid", "random", "optuna"] = "grid"
    sampler: Literal["tpe", "random", "cmaes", "nsgaii"] = "tpe"
    metric: Literal["clean_acc", "pgd_acc", "cw_acc", "aa_acc"] = "cw_acc"
    mode: Literal["max", "min"] = "max"
    num_samples: int | None = Field(None, ge=1, le=MAX_CELLS)
    seed: int = 0  # the Optuna sampler's seed


class SpaceDoc(_Strict):
    """The YAML document, after `extends` has been merged in."""

    sweep: str = Field(pattern=SWEEP_NAME, max_length=100)
    base: dict[str, Any] = {}
    axes: list[Axis] = []
    derive: Derive | None = None
    constraints: Constraints = Constraints()
    seeds: list[int] = Field([0], min_length=1)
    search: Search = Search()

    @field_validator("base", "axes", "constraints", "search", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any, info: Any) -> Any:
        """`base:` with nothing under it means the defaults, not an error."""
        if value is None:
            return {"axes": []}.get(info.field_name, {})
        return value

    @field_validator("axes")
    @classmethod
    def _keys_are_paths(cls, axes: list[Axis]) -> list[Axis]:
        for axis in axes:
            keys = axis.sample.params if axis.sample else (axis.grid or axis.zip or {})
            for key in keys:
                parts = parse_path(key)  # ValueError for an empty component
                if axis.sample and parts[0] == "runtime":
                    # runtime settings say how a trial runs, not what it is (no part of its
                    # trial_id), and a search's trials all get the base's resources
                    raise ValueError(f"sample: {key} cannot be sampled; set it in base:")
        return axes

    @model_validator(mode="after")
    def _search_fits(self) -> SpaceDoc:
        if self.search.method == "optuna":
            if any(a.sample is None for a in self.axes) or not self.axes:
                raise ValueError("search.method optuna: expected only sample axes (one or more)")
            if self.search.num_samples is None:
                raise ValueError("search.num_samples: expected the trial budget for optuna")
            if len(self.seeds) > 1:
                raise ValueError("seeds: optuna search runs one seed per sampled point")
        for i, axis in enumerate(self.axes):
            no_budget = self.search.method == "grid" or self.search.num_samples is None
            if axis.sample and axis.sample.n is None and no_budget:
                raise ValueError(f"axes.{i}.sample.n: expected the number of draws")
        return self


class SearchSpace(BaseModel):
    """A validated space: the document plus where it came from (for error messages)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    file: str
    doc: SpaceDoc
    # `run --sweep NAME`: the results folder and the rows' `sweep`; the study keeps doc.sweep
    sweep_name: str | None = Field(None, pattern=SWEEP_NAME, max_length=100)

    @property
    def name(self) -> str:
        return self.sweep_name or self.doc.sweep

    @property
    def study(self) -> str:
        """The space file's `sweep:` name, the same for every fidelity of one study."""
        return self.doc.sweep

    @property
    def is_search(self) -> bool:
        return self.doc.search.method == "optuna"

    @property
    def sha256(self) -> str:
        """Hash of the space as loaded: `extends` merged and `--set` applied, as canonical
        JSON (comments and key order do not count; a changed protocol file or override
        does). Rows carry it as `space_sha256`."""
        blob = json.dumps(self.doc.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()
