"""A tiny name -> object registry whose misses suggest the closest names."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterable, TypeVar

from nas.errors import UserError

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str], what: str) -> UserError:
    """The one error for an unknown name: the closest matches first, then everything that exists."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(known) if known else "none"
    return UserError(f"unknown {what} {name!r}{hint} (available: {listing})")


class Registry(Generic[T]):
    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise did_you_mean(name, self._items, self.what) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
