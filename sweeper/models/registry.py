"""Name -> factory tables, so adding an activation, norm or block is one entry.

Each table is filled by the module that registers into it (layers.py, blocks.py), which
imports torch; the table imports that module on its first lookup, so a module that only
names an ArchSpec (config.py, a search space being validated) does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table whose unknown-name error lists the valid names."""

    def __init__(self, kind: str, filled_by: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._filled_by = filled_by  # the module whose import registers the entries

    def _fill(self) -> None:
        module, self._filled_by = self._filled_by, None
        if module is not None:
            importlib.import_module(module)

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._items:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
                self._items[key] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str) -> T:
        self._fill()
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        self._fill()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._fill()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


ACTIVATIONS: Registry[Callable] = Registry("activation", "sweeper.models.layers")
NORMS: Registry[Callable] = Registry("norm", "sweeper.models.layers")
BLOCKS: Registry[type] = Registry("block", "sweeper.models.blocks")
