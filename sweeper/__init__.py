"""sweeper: adversarial-robustness architecture sweeps on Ray Tune.

The Python API (`sweeper.api`): `sweeper.run(space, results=...)`, `sweeper.read(path)`,
`sweeper.load_model(path)`. They are imported on first use, so `import sweeper` loads
neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "read", "run"]
_API = ("run", "read", "load_model")


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("sweeper.api"), name)
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
