"""Packages that extend the toolkit: modules named in the ``prompttune.plugins`` entry-point group.

A plugin is a module whose import registers methods, backbone families, data sources, assets or CLI verbs. The
toolkit's own packages are declared in its ``pyproject.toml``; a third-party package adds itself the same way::

    [project.entry-points."prompttune.plugins"]
    my_methods = "my_package.prompt_methods"

A name from any installed plugin works in YAML and in Python: a registry lookup of a name not registered loads the
plugins first (:func:`lookup`). The CLIs load only the plugins that may add verbs to them (:func:`load_plugins` with
``package``), so config errors come without importing the other packages of the toolkit (and the libraries they pull
in, such as transformers); and, before parsing their arguments, only the light part of those (``lazy``), so
``--help`` comes without importing torch.

The toolkit's packages defer their imports (:func:`lazy_exports`): importing ``vpt`` imports no torch and registers
its CLI verbs only; the first use of one of its names loads the rest, and registers its methods, backbone families,
data sources and assets as importing it did before. :func:`load_plugins` loads a plugin in full the same way.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Collection, Iterable, Mapping, TypeVar

from .registry import Registry

T = TypeVar("T")

GROUP = "prompttune.plugins"
TOOLKIT = "prompttune"  # the distribution of the toolkit's own packages
_loaded: set[str] = set()


def load_plugins(package: str | None = None, lazy: bool = False, skip: Collection[str] = ()) -> list[str]:
    """Loads every plugin module in full (once per process); returns their module names.

    A plugin that fails to import is skipped with one warning naming it and the error, so a broken third-party
    package does not take the toolkit's own commands down with it.

    Args:
        package: only the plugins that can add verbs to this package's program: those inside ``package`` and those
            of other distributions. The toolkit's other packages (``textpt`` for ``vpt``) register verbs of their
            own program only, and are left to :func:`lookup`.
        lazy: only import the modules: a package that defers its imports (:func:`lazy_exports`) then registers
            (or declares) its CLI verbs and nothing that needs torch. Without it, each module is loaded in full: every
            name of its ``__all__`` is looked up, as ``from plugin import *`` would.
        skip: plugin modules only imported (as with ``lazy``): those that declare what they register.
    """
    modules = []
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if package is not None and not _may_add_verbs(ep, package):
            continue
        modules.append(ep.value)
        if ep.value in _loaded:
            continue
        try:
            module = importlib.import_module(ep.value)
            if not lazy and ep.value not in skip:
                for name in getattr(module, "__all__", ()):
                    getattr(module, name)
        except Exception as e:  # noqa: BLE001 - any import failure of a third-party plugin is reported, not raised
            warnings.warn(f"plugin {ep.name!r} ({ep.value}) failed to import and is skipped: {type(e).__name__}: {e}", stacklevel=2)
            continue
        if not lazy and ep.value not in skip:
            _loaded.add(ep.value)
    return modules


def _may_add_verbs(ep: EntryPoint, package: str) -> bool:
    """Whether plugin ``ep`` may register verbs of ``package``'s program (see :func:`load_plugins`)."""
    own = ep.dist is not None and ep.dist.name == TOOLKIT
    return not own or ep.value == package or ep.value.startswith(package + ".")


def _toolkit_plugins() -> list[str]:
    """The plugin modules of the toolkit's own packages."""
    return [ep.value for ep in entry_points(group=GROUP) if ep.dist is not None and ep.dist.name == TOOLKIT]


def known(registry: Registry[Any], name: str) -> bool:
    """Whether ``name`` is registered or declared in ``registry`` (:meth:`~promptcore.registry.Registry.declare`),
    after loading the plugins that may add it when it is neither: each plugin's light part (the toolkit's packages
    declare there every name of the registry they register: the methods, the text tasks, the heads, the data
    sources, the vision-language families), then the plugins of other distributions in full. A name none of the
    toolkit's packages knows is so refused without importing torch; the record is registered by
    :meth:`~promptcore.registry.Registry.get`."""
    if not registry.knows(name):
        load_plugins(lazy=True)
    if not registry.knows(name):
        load_plugins(skip=_toolkit_plugins())
    return registry.knows(name)


def lookup(registry: Registry[T], name: str) -> T:
    """``registry.get(name)``, loading the plugins first when ``name`` is not registered (it may come with one), so a
    name from a config works in Python as it does on the command line.

    Raises:
        KeyError: (or the registry's error type) no plugin registers it either; the message lists close matches.
    """
    if name not in registry:
        load_plugins()
    return registry.get(name)


def lazy_exports(
    package: str, exports: Mapping[str, str], on_first_use: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` (PEP 562) of a package whose public names load on first use.

    ``import package`` then runs only the package's ``__init__`` (and what it imports itself, kept free of torch);
    the first lookup of an exported name imports the modules of ``on_first_use`` (those whose import registers
    methods, families, data sources, assets: a package's names come with its registrations, as when its
    ``__init__`` imported them all), then the module defining the name, and keeps the value in the package.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the module defining it (``".config"``, relative to ``package``, or absolute).
        on_first_use: modules (relative or absolute) imported, in order, before the first name is served.

    Example (a package's ``__init__``)::

        __getattr__, __dir__ = lazy_exports(__name__, {"VPTConfig": ".config"}, on_first_use=(".model",))
    """
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        for dependency in on_first_use:
            importlib.import_module(dependency, package)
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(exports))

    return __getattr__, __dir__


class Deferred:
    """A class attribute imported when first read (from the class or an instance), so the class's module needs no
    import of it: ``config_class = Deferred("vpt.run_config", "VisionRunConfig")`` on a CLI recipe keeps torch out
    until a verb runs.

    Args:
        module: the absolute name of the module defining the value.
        name: the value's name in it.
    """

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


__all__ = ["GROUP", "Deferred", "known", "lazy_exports", "load_plugins", "lookup"]
