"""Search spaces: YAML study file -> validated SearchSpace -> resolved TrialConfigs.

    load(path, sets)      read, merge `extends`, apply `--set`, validate   (load.py)
    expand(space)         grid x zip x sample x seeds, derive, constraints (expansion.py)

`doc.py` holds the YAML document's pydantic models, `paths.py` the dotted key paths
and their error messages, `overrides.py` the `--set key=value` parser. Nothing here
runs a trial or imports Ray.
"""

from sweeper.space.doc import METRICS, SearchSpace
from sweeper.space.expansion import expand, macs_of, resolve_point, search_params, varying_values
from sweeper.space.load import load

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
