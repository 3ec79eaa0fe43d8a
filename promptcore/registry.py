"""Strict name registries, the one extension mechanism of the toolkit.

Methods, backbone families, data sources, assets and CLI verbs are each a :class:`Registry` of records: a
duplicate name raises, an unknown name lists the close matches. A package (or a user's own module, or a test)
extends the toolkit by adding a record; nothing else needs editing.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError

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


class UnknownNameError(UserError, KeyError):
    """A name that is not registered; the message lists the close matches and the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it as written
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to records (builders, classes, small dataclasses) of one kind.

    Args:
        kind: what the registry holds, used in error messages ("backbone family", "prompt method").
        error: the exception type :meth:`get` raises for an unknown name (a ``KeyError`` by default).
        on_miss: called with a name :meth:`get` does not find, before it looks again: imports what registers it
            (a package that registers its entries when its modules load).
    """

    def __init__(self, kind: str, error: type[Exception] = UnknownNameError, on_miss: Callable[[str], None] | None = None) -> None:
        self.kind = kind
        self.error = error
        self.on_miss = on_miss
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a name can be registered once."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> T:
        """Registers ``obj`` under ``name`` and returns it.

        Raises:
            KeyError: the name is taken (the message names the first registration).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names are non-empty strings, got {name!r}")
        if name in self._entries:
            raise KeyError(
                f"{self.kind} {name!r} is already registered (by {self._entries[name]!r}); "
                f"choose another name or remove the first registration."
            )
        self._entries[name] = obj
        return obj

    def remove(self, name: str) -> T:
        """Unregisters ``name`` and returns its record (for tests and plugins that replace an entry)."""
        self.get(name)
        return self._entries.pop(name)

    @contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Registers ``obj`` under ``name`` for the duration of a ``with`` block."""
        self.add(name, obj)
        try:
            yield obj
        finally:
            self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The record registered under ``name``.

        Raises:
            UnknownNameError: (or the registry's ``error`` type) listing close matches and the known names.
        """
        if self.on_miss is not None and isinstance(name, str) and name not in self._entries:
            self.on_miss(name)
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = sorted(self._entries)
            raise self.error(
                f"unknown {self.kind} {name!r}.{did_you_mean(str(name), known)} Known: {', '.join(known) or 'none'}."
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
