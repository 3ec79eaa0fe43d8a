"""Strict name registries: a duplicate name raises, an unknown name lists the close matches."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def close_matches(name: str, candidates: list[str], n: int = 3) -> list[str]:
    """Candidates that look like ``name`` (for 'did you mean' hints), best first."""
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)


def did_you_mean(name: str, candidates: list[str]) -> str:
    """A ' Did you mean ...?' suffix, or '' when nothing is close."""
    matches = close_matches(name, candidates)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"


class Registry(Generic[T]):
    """Maps names to objects (builders, classes) of one kind.

    Args:
        kind: what the registry holds, used in error messages ("backbone family", "method").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a name can be registered once."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise KeyError(
                f"{self.kind} {name!r} is already registered (by {self._entries[name]!r}); "
                f"choose another name or remove the first registration."
            )
        self._entries[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise KeyError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, known)} Known: {', '.join(known) or 'none'}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
