"""Strict name registries, the one extension mechanism of the toolkit.

Methods, backbone families, data sources, assets and CLI verbs are each a :class:`Registry` of records: a
duplicate name raises, an unknown name lists the close matches. A package (or a user's own module, or a test)
extends the toolkit by adding a record; nothing else needs editing.

A package whose records register when modules that import torch load also declares their names where its light
modules run (:meth:`Registry.declare`: the name and the module that registers it): a config naming one is then
checked, and a typo reported, before torch is imported (:func:`promptcore.plugins.known`), and :meth:`Registry.get`
imports the declared module when the record is first asked for.
"""

from __future__ import annotations

import difflib
import importlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

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


@dataclass(frozen=True)
class Declaration:
    """A name that ``module`` registers when imported (:meth:`Registry.declare`).

    Attributes:
        name: the name, as the registry keys it.
        module: the module whose import registers it.
        record: what is known of the entry without importing ``module`` (a method's config class, see
            :func:`promptcore.methods.declare_method`), or None.
    """

    name: str
    module: str
    record: Any = None


class Registry(Generic[T]):
    """Maps names to records (builders, classes, small dataclasses) of one kind.

    Args:
        kind: what the registry holds, used in error messages ("backbone family", "prompt method").
        error: the exception type :meth:`get` raises for an unknown name (a ``KeyError`` by default).
        on_miss: called with a name :meth:`get` does not find (nor imports the declaration of), before it looks
            again: imports what registers it (a package that registers its entries when its modules load).
    """

    def __init__(self, kind: str, error: type[Exception] = UnknownNameError, on_miss: Callable[[str], None] | None = None) -> None:
        self.kind = kind
        self.error = error
        self.on_miss = on_miss
        self._entries: dict[str, T] = {}
        self._declared: dict[str, Declaration] = {}

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
        self._check_new(name, "registered", repr(self._entries[name]) if name in self._entries else None)
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

    def declare(self, name: str, module: str, record: Any = None) -> Declaration:
        """Declares that importing ``module`` registers ``name``: the name is then known (:meth:`knows`) without
        importing it, and :meth:`get` imports it. For a package that defers its imports
        (:func:`promptcore.plugins.lazy_exports`); a test checks that each declaration matches what its module
        registers.

        Args:
            record: what is known of the entry without the import (:attr:`Declaration.record`).

        Raises:
            KeyError: the name is declared already.
        """
        self._check_new(name, "declared", self._declared[name].module if name in self._declared else None)
        self._declared[name] = Declaration(name, module, record)
        return self._declared[name]

    def _check_new(self, name: Any, how: str, by: str | None) -> None:
        """Refuses a name that is not a non-empty string, or one already ``how`` ("registered" / "declared") ``by``
        the first registration or declaration (None: not yet)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names are non-empty strings, got {name!r}")
        if by is not None:
            what = "registration" if how == "registered" else "declaration"
            raise KeyError(f"{self.kind} {name!r} is already {how} (by {by}); choose another name or remove the first {what}.")

    def declaration(self, name: str) -> Declaration:
        """The declaration of ``name``.

        Raises:
            UnknownNameError: (or the registry's ``error`` type) ``name`` is not declared.
        """
        if name not in self._declared:
            raise self.unknown(name)
        return self._declared[name]

    def declarations(self) -> list[tuple[str, Declaration]]:
        """Every declaration, sorted by name."""
        return sorted(self._declared.items())

    def knows(self, name: object) -> bool:
        """Whether ``name`` is registered or declared (nothing is imported)."""
        return name in self._entries or name in self._declared

    def known_names(self) -> list[str]:
        """The registered and the declared names, sorted."""
        return sorted(set(self._entries) | set(self._declared))

    def unknown(self, name: object) -> Exception:
        """The error for a name that is neither registered nor declared: its close matches and the known names."""
        known = self.known_names()
        return self.error(f"unknown {self.kind} {name!r}.{did_you_mean(str(name), known)} Known: {', '.join(known) or 'none'}.")

    def get(self, name: str) -> T:
        """The record registered under ``name``; a name only declared is registered first (its module imported).

        Raises:
            UnknownNameError: (or the registry's ``error`` type) listing close matches and the known names.
        """
        if isinstance(name, str) and name not in self._entries and name in self._declared:
            importlib.import_module(self._declared[name].module)
        if self.on_miss is not None and isinstance(name, str) and name not in self._entries:
            self.on_miss(name)
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def names(self) -> list[str]:
        """The registered names, sorted (:meth:`known_names` adds the declared ones)."""
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
