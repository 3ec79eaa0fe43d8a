"""Packages that extend the toolkit: modules named in the ``prompttune.plugins`` entry-point group.

A plugin is a module whose import registers methods, backbone families, data sources, assets or CLI verbs. The
toolkit's own packages are declared in its ``pyproject.toml``; a third-party package adds itself the same way::

    [project.entry-points."prompttune.plugins"]
    my_methods = "my_package.prompt_methods"

A name from any installed plugin works in YAML and in Python: a registry lookup of a name not registered loads the
plugins first (:func:`lookup`). The CLIs load, before parsing their arguments, only the plugins that may add verbs
to them (:func:`load_plugins` with ``package``), so ``--help`` and config errors come without importing the other
packages of the toolkit (and the libraries they pull in, such as transformers).
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from .registry import Registry

T = TypeVar("T")

GROUP = "prompttune.plugins"
TOOLKIT = "prompttune"  # the distribution of the toolkit's own packages
_loaded: set[str] = set()


def load_plugins(package: str | None = None) -> list[str]:
    """Imports every plugin module (once per process); returns their module names.

    A plugin that fails to import is skipped with one warning naming it and the error, so a broken third-party
    package does not take the toolkit's own commands down with it.

    Args:
        package: only the plugins that can add verbs to this package's program: those inside ``package`` and those
            of other distributions. The toolkit's other packages (``textpt`` for ``vpt``) register verbs of their
            own program only, and are left to :func:`lookup`.
    """
    modules = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if package is not None and not _may_add_verbs(ep, package):
            continue
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


def _may_add_verbs(ep: EntryPoint, package: str) -> bool:
    """Whether plugin ``ep`` may register verbs of ``package``'s program (see :func:`load_plugins`)."""
    own = ep.dist is not None and ep.dist.name == TOOLKIT
    return not own or ep.value == package or ep.value.startswith(package + ".")


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
