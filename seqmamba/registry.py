"""Name -> object registries where tasks, backbones and datasets meet.

One small class, three instances. ``get`` on an unknown name fails with the known names and the
closest match, so a typo on the command line tells the user what they meant.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, List, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown or duplicate registry name. ``str()`` is one readable line."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise RegistryError(f"{self.kind} {name!r} is already registered (by {self._items[name]!r})")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = self.names()
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}{hint} Known {self.kind}s: {', '.join(known) or '(none)'}"
            ) from None

    def names(self) -> List[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


TASKS: Registry = Registry("task")
BACKBONES: Registry = Registry("backbone")
DATASETS: Registry = Registry("dataset")
HEADS: Registry = Registry("head")
#: sequence mixers a backbone builds per layer (Mamba, S4D, Hyena, attention)
MIXERS: Registry = Registry("mixer")
