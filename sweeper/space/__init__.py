"""Search spaces: YAML study file -> validated SearchSpace -> resolved TrialConfigs.

    load(path, sets)      read, merge `extends`, apply `--set`, validate   (load.py)
    expand(space)         grid x zip x sample x seeds, derive, constraints (expansion.py)

`doc.py` holds the YAML document's pydantic models, `paths.py` the dotted key paths
and their error messages, `overrides.py` the `--set key=value` parser. Nothing here
runs a trial or imports Ray. Nothing imports torch before a space is validated (the
arch's checks do, and the expansion's MAC counts).
"""

from typing import Any

from sweeper.space.doc import METRICS, SearchSpace
from sweeper.space.load import load

_EXPANSION = ("expand", "macs_of", "resolve_point", "search_params", "varying_values")


def __getattr__(name: str) -> Any:
    """The expansion's names, imported on first use (PEP 562)."""
    if name not in _EXPANSION:
        raise AttributeError(f"module 'sweeper.space' has no attribute {name!r}")
    from sweeper.space import expansion

    return getattr(expansion, name)

__all__ = [
    "METRICS",
    "SearchSpace",
    "expand",
    "load",
    "macs_of",
    "resolve_point",
    "search_params",
    "varying_values",
]
