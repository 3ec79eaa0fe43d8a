"""Prompt methods by name: one :class:`Method` record per method in :data:`METHODS`, and :func:`wrap`.

A method is a config class (a dataclass whose ``method`` field holds the method's name) and a builder
``build(backbone, config, **context) -> PromptedModel``. Adding a method is one file and one line::

    register_method("my_method", MyConfig, MyModel, kind="vision", summary="what it does")

after which ``wrap(backbone, MyConfig(...))`` builds it, and a run config's ``prompt:`` section with
``method: my_method`` loads ``MyConfig`` (the section's type is :func:`method_config`).

A package that defers its imports (:func:`promptcore.plugins.lazy_exports`), whose methods register when their
torch modules load, also declares each method where its light modules can list it (:func:`declare_method`, as
:func:`promptcore.cli.declare_command` does for CLI verbs): the config class is then found without importing the
method's module, so a run config is validated, and its errors reported, before torch is imported::

    declare_method("my_method", "vision", config=("my_package.config", "MyConfig"), module="my_package.my_method")

Names are unique within a kind: ``vpt`` and ``textpt`` both have a ``linear_probe``. :data:`METHODS` keys each
record by ``"<kind>:<name>"`` (``"vision:linear_probe"``, ``"text:linear_probe"``); YAML and configs use the bare
name, and the run config's kind tells which one is meant.

This module imports no torch: configs can be validated before the heavy libraries load.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, get_args, get_origin, get_type_hints

from .plugins import known, load_plugins
from .registry import Declaration, Registry, did_you_mean

if TYPE_CHECKING:
    from torch import nn

    from .model import PromptedModel

Kind = Literal["vision", "text"]
KINDS: tuple[str, ...] = ("vision", "text")


@dataclass(frozen=True)
class Method:
    """One prompt method.

    Attributes:
        name: the value of ``method:`` in YAML and of the config's ``method`` field.
        config_class: its config dataclass (one class may serve several names, e.g. ``vpt_shallow``/``vpt_deep``).
        build: ``build(backbone, config, **context)`` returns the prompted model; ``context`` carries what a
            package passes (a tokenizer, the task, the backbone's name).
        kind: ``vision`` (``vpt`` run configs and CLI, CLIP methods included) or ``text`` (``textpt``).
        summary: one line for listings and error messages.
        trains: whether the method has parameters to train (``False`` for zero-shot baselines).
    """

    name: str
    config_class: type
    build: Callable[..., "PromptedModel"]
    kind: str
    summary: str = ""
    trains: bool = True


METHODS: Registry[Method] = Registry("prompt method", on_miss=lambda key: load_plugins())
"""Every registered method, keyed ``"<kind>:<name>"`` (:func:`method_key`); the declared ones
(:func:`declare_method`) register when first asked for."""


def method_key(kind: str, name: str) -> str:
    """The key of method ``name`` of ``kind`` in :data:`METHODS` (``"vision:vpt_deep"``)."""
    return f"{kind}:{name}"


def recorded_method_config(meta: dict[str, Any], kind: str, source: str, rebuild_hint: str) -> Any:
    """The method config a prompt folder's metadata (``meta``: its ``method`` and ``method_config``) records,
    validated against the config class its ``kind`` method registers (plugins loaded when the name is unknown).

    Args:
        source: how errors name the folder.
        rebuild_hint: what to do instead when the folder records no method config (one written before prompt
            folders recorded it).

    Raises:
        promptcore.files.PromptFileError: an unknown method, or no recorded config.
        promptcore.config.ConfigError: a recorded config that does not validate.
    """
    from .config import from_dict
    from .files import PromptFileError

    method = str(meta.get("method"))
    key = method_key(kind, method)
    if key not in METHODS:
        load_plugins()
    if key not in METHODS:
        known = [k.split(":", 1)[1] for k in METHODS.names() if k.startswith(f"{kind}:")]
        raise PromptFileError(
            f"{source}: method {method!r} is not a registered {kind} method (install or import the package that "
            f"registers it).{did_you_mean(method, known)}"
        )
    recorded = meta.get("method_config")
    if not isinstance(recorded, dict):
        raise PromptFileError(f"{source} records no method_config (it was saved before prompt folders recorded it): {rebuild_hint}")
    return from_dict(METHODS.get(key).config_class, recorded, source=f"{source} method_config")


def _method_values(config_class: type) -> tuple[str, ...]:
    """The names a config class's ``method`` field admits (``Literal`` arguments, else its default)."""
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"a method's config class must be a dataclass, got {config_class!r}")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    if "method" not in fields:
        raise TypeError(f"{config_class.__name__} has no 'method' field; a method config names its method in 'method'")
    hint = get_type_hints(config_class).get("method")
    if get_origin(hint) is Literal:
        return tuple(str(a) for a in get_args(hint))
    default = fields["method"].default
    return (default,) if isinstance(default, str) else ()


def register_method(
    name: str,
    config_class: type,
    build: Callable[..., "PromptedModel"],
    kind: str,
    summary: str = "",
    trains: bool = True,
) -> Method:
    """Registers a prompt method (see :class:`Method`); a name can be registered once per kind.

    Raises:
        KeyError: the name is taken for this kind.
        TypeError / ValueError: the config class cannot carry ``method: name``, or ``kind`` is unknown.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    values = _method_values(config_class)
    if name not in values:
        raise ValueError(
            f"{config_class.__name__}.method admits {list(values)}, not {name!r}: declare "
            f"method: Literal[{name!r}] = {name!r} (or add {name!r} to its Literal)"
        )
    return METHODS.add(method_key(kind, name), Method(name, config_class, build, kind, summary, trains))


def method_names(kind: str) -> list[str]:
    """The registered method names of ``kind``, sorted."""
    return [m.name for _, m in METHODS.items() if m.kind == kind]


def method_of(config: Any) -> Method:
    """The :class:`Method` record of a config object: its ``method`` name, of the kind whose config class it is.

    Raises:
        TypeError: the object is not a registered method's config.
    """
    name = getattr(config, "method", None)
    if isinstance(name, str) and not any(m.name == name for _, m in METHODS.items()):
        load_plugins()  # the package registers it when loaded in full (its config module alone may not)
    records = [m for _, m in METHODS.items() if m.name == name] if isinstance(name, str) else []
    for record in records:
        if isinstance(config, record.config_class):
            return record
    if records:
        takes = " or ".join(f"{r.config_class.__name__} ({r.kind})" for r in records)
        raise TypeError(f"method {name!r} takes a {takes}, got a {type(config).__name__}; build the config with that class")
    known = ", ".join(METHODS.names()) or "none yet"
    raise TypeError(
        f"{type(config).__name__} is not the config of a registered prompt method (method={name!r}); "
        f"registered: {known}. Import the package that registers it (vpt, vpt.clip, textpt) or register_method() it."
    )


def wrap(backbone: "nn.Module", config: Any, **context: Any) -> "PromptedModel":
    """Wraps a frozen ``backbone`` with the prompts that ``config`` describes.

    ``config`` is a registered method's config (``vpt``, ``vpt.clip`` and ``textpt`` register theirs when
    imported); ``context`` goes to the method's builder (``tokenizer=``, ``task=``, ``name=`` for text methods).
    The backbone's parameters are frozen; only the prompts (and the head, where the method has one) train. The
    prompts are put on the backbone's device (:meth:`promptcore.PromptedModel.follow_backbone_device`).
    """
    model = method_of(config).build(backbone, config, **context)
    follow = getattr(model, "follow_backbone_device", None)
    return follow() if follow is not None else model


@dataclass(frozen=True)
class MethodDeclaration:
    """The record of a declared method (:func:`declare_method`): where its config class is defined, in a module that
    imports no torch.

    Attributes:
        kind: the method's kind.
        config_module: the module defining its config class, imported to validate a config.
        config_name: the config class's name there.
    """

    kind: str
    config_module: str
    config_name: str

    def config_class(self) -> type:
        """The config class (importing :attr:`config_module`)."""
        return getattr(importlib.import_module(self.config_module), self.config_name)


def declare_method(name: str, kind: str, config: tuple[str, str], module: str) -> Declaration:
    """Makes method ``name`` of ``kind`` known to run configs (:func:`method_config`) without importing ``module``,
    which registers it; ``config`` is ``(module, class name)`` of its config class, a module free of torch. For
    the methods of a package that defers its imports: a :meth:`~promptcore.registry.Registry.declare` of
    :data:`METHODS` whose record is a :class:`MethodDeclaration` (a test checks that the declarations match what the
    modules register).

    Raises:
        KeyError: the name is declared already for this kind.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    return METHODS.declare(method_key(kind, name), module, MethodDeclaration(kind, *config))


def _config_class(key: str) -> type | None:
    """The config class of the method ``key`` names, registered or declared; None when it is neither."""
    if key in METHODS:
        return METHODS.get(key).config_class
    if METHODS.knows(key):
        return METHODS.declaration(key).record.config_class()
    return None


def _known_names(kind: str) -> list[str]:
    """The method names of ``kind`` that are registered or declared, sorted."""
    return sorted(key.split(":", 1)[1] for key in METHODS.known_names() if key.startswith(f"{kind}:"))


@dataclass(frozen=True)
class MethodChoice:
    """Marks a config field whose value is a method config chosen by its ``method:`` key (see :func:`method_config`).

    :func:`promptcore.config.from_dict` calls :meth:`resolve` to pick the dataclass to build.

    Attributes:
        kind: the kind of methods the field admits.
        default: the method of a section without a ``method`` key (its config class's ``method`` defaults to
            it), or None to require the key.
    """

    kind: str
    default: str | None = None

    def names(self) -> list[str]:
        """The methods the field admits: the registered and the declared ones of its kind."""
        return _known_names(self.kind)

    def accepts(self, value: Any) -> bool:
        config_class = _config_class(method_key(self.kind, str(getattr(value, "method", ""))))
        return config_class is not None and isinstance(value, config_class)

    def resolve(self, value: dict, path: str) -> tuple[type | None, str | None]:
        """``(config class, None)`` for the method ``value['method']`` names, else ``(None, error message)``.

        A method that is neither registered nor declared yet may come with a plugin (:func:`promptcore.plugins.known`
        loads their light parts, where the toolkit's packages declare theirs, then the others in full), so a name
        none of the toolkit's packages knows is refused without importing torch.
        """
        method = value.get("method", self.default)
        key = method_key(self.kind, str(method))
        known(METHODS, key)
        names = self.names()
        listing = ", ".join(map(repr, names)) or "none registered"
        if method is None:
            return None, f"{path}.method: required to choose the method; one of {listing}"
        if method not in names:
            hint = did_you_mean(str(method), names)
            kinds = [kind for kind in KINDS if method in _known_names(kind)]
            other = f" ({method!r} is a {' and '.join(kinds)} method)" if kinds else ""
            return None, f"{path}.method: unknown {self.kind} method {method!r}{other}.{hint} Known: {listing}"
        return _config_class(key), None


def method_config(kind: str, default: str | None = None) -> Any:
    """The type of a run config's ``prompt:`` field: any registered ``kind`` method's config, chosen by ``method``
    (``default`` when the section has no ``method`` key; required when ``default`` is None).

    Example::

        @dataclass
        class VisionRunConfig:
            prompt: method_config("vision")
    """
    return Annotated[Any, MethodChoice(kind, default)]


__all__ = [
    "METHODS",
    "Method",
    "MethodChoice",
    "MethodDeclaration",
    "declare_method",
    "method_config",
    "method_key",
    "method_names",
    "method_of",
    "register_method",
    "wrap",
]
