"""Packages that extend the toolkit: modules named in the ``prompttune.plugins`` entry-point group.

A plugin is a module whose import registers methods, backbone families, data sources, assets or CLI verbs. The
toolkit's own packages are declared in its ``pyproject.toml``; a third-party package adds itself the same way::

    [project.entry-points."prompttune.plugins"]
    my_methods = "my_package.prompt_methods"

The CLIs load every plugin before reading a config, so names from any installed plugin work in YAML.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points
from typing import TypeVar

from .registry import Registry

T = TypeVar("T")

GROUP = "prompttune.plugins"
_loaded: set[str] = set()


def load_plugins() -> list[str]:
    """Imports every plugin module (once per process); returns their module names.

    A plugin that fails to import is skipped with one warning naming it and the error, so a broken third-party
    package does not take the toolkit's own commands down with it.
    """
    modules = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        modules.append(ep.value)
        if ep.value in _loaded:
            continue
        try:
            importlib.import_module(ep.value)
        except Exception as e:  # noqa: BLE001 - any import failure of a third-party plugin is reported, not raised
            warnings.warn(f"plugin {ep.name!r} ({ep.value}) failed to import and is skipped: {type(e).__name__}: {e}", stacklevel=2)
            continue
        _loaded.add(ep.value)
    return modules


def lookup(registry: Registry[T], name: str) -> T:
    """``registry.get(name)``, loading the plugins first when ``name`` is not registered (it may come with one), so a
    name from a config works in Python as it does on the command line.

    Raises:
        KeyError: (or the registry's error type) no plugin registers it either; the message lists close matches.
    """
    if name not in registry:
        load_plugins()
    return registry.get(name)


__all__ = ["GROUP", "load_plugins", "lookup"]
