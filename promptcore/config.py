"""Typed configs: dataclasses loaded from YAML, with every error reported at once and each naming its field.

A config is a tree of dataclasses. :func:`load_config` builds it from a YAML file (or a dict) plus
``--set a.b=value`` overrides; unknown keys are rejected with the closest valid key suggested, values are checked
against the field types (``int``, ``float``, ``str``, ``bool``, ``Optional``, ``Literal``, ``list``, ``dict``,
nested dataclasses, unions of dataclasses told apart by ``method``, and registry choices such as
:func:`promptcore.methods.method_config`), and a dataclass's ``__post_init__`` may raise ``ValueError`` to reject a
value. All problems are gathered into one :class:`ConfigError`. A check that needs a heavy library (transformers, to
know a model config's fields; torch, through the modules whose registries a name is checked against: the text tasks,
the vision heads and data sources) goes through :func:`library_check`: it runs once the rest of the config is valid,
so a typo elsewhere is reported without loading the library. The toolkit's config classes are defined in modules
free of torch, so a config is validated, and its errors reported, before torch loads.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, Sequence, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import MissingFileError, UserError
from .registry import did_you_mean

C = TypeVar("C")


class ConfigError(UserError):
    """One or more problems in a config; ``errors`` lists them, each starting with the field's dotted path."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = errors
        where = f" in {source}" if source else ""
        super().__init__(f"{len(errors)} problem(s){where}:\n" + "\n".join(f"  - {e}" for e in errors))


# The library checks of the config from_dict is building: [field path prefix or None (not yet known), check].
_DEFERRED: ContextVar[list[list] | None] = ContextVar("promptcore_library_checks", default=None)


def library_check(check: Callable[[], None]) -> None:
    """Runs ``check``, a validation that imports a heavy library: now, or, while :func:`from_dict` builds a config,
    after the rest of the config is found valid (a config error elsewhere, such as ``--set train.lr=abc``, is then
    reported without importing the library; the check's own problems follow once the others are fixed).

    Args:
        check: raises ``ValueError`` (:class:`UserError`) whose message starts with the field's name within its
            dataclass, as a ``__post_init__`` check does.
    """
    deferred = _DEFERRED.get()
    if deferred is None:
        check()
    else:
        deferred.append([None, check])


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    origin = get_origin(tp)
    if origin is Annotated:
        choice = _choice_of(tp)
        return f"a {choice.kind} method config" if choice is not None else _type_name(get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    return str(tp).replace("typing.", "")


DISCRIMINATOR = "method"
_NO_ARM = object()


def _choice_of(tp: Any) -> Any:
    """The registry choice in an ``Annotated[...]`` type (metadata with ``resolve``/``accepts``), or None."""
    return next((m for m in get_args(tp)[1:] if hasattr(m, "resolve") and hasattr(m, "accepts")), None)


def _convert_choice(value: Any, choice: Any, path: str, errors: list[str]) -> Any:
    """A field whose dataclass is chosen by a registry from the value's ``method`` key."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if not choice.accepts(value):
            errors.append(f"{path}: {type(value).__name__} is not a registered {choice.kind} method config")
        return value
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a mapping with a 'method' key, found {type(value).__name__} {value!r}")
        return value
    cls, problem = choice.resolve(value, path)
    if problem is not None:
        errors.append(problem)
        return value
    return _build(cls, value, path, errors)


def _discriminated_arm(value: Any, args: tuple, path: str, errors: list[str]) -> Any:
    """For a union of dataclasses told apart by a ``method: Literal[...]`` field, the arm ``value['method']`` names.

    Returns None when the union is not of that form (the caller tries each arm), ``_NO_ARM`` after recording an
    error when the method is missing or unknown.
    """
    arms = [a for a in args if a is not type(None)]
    if not arms or not all(dataclasses.is_dataclass(a) for a in arms) or not isinstance(value, dict):
        return None
    by_method: dict[str, Any] = {}
    for arm in arms:
        hint = get_type_hints(arm).get(DISCRIMINATOR)
        if hint is None or get_origin(hint) is not Literal:
            return None
        for m in get_args(hint):
            by_method[m] = arm
    method = value.get(DISCRIMINATOR)
    if method is None:
        errors.append(f"{path}.{DISCRIMINATOR}: required to choose the method; one of {', '.join(map(repr, by_method))}")
        return _NO_ARM
    if method not in by_method:
        errors.append(
            f"{path}.{DISCRIMINATOR}: unknown method {method!r}.{did_you_mean(str(method), list(by_method))} "
            f"Known: {', '.join(map(repr, by_method))}"
        )
        return _NO_ARM
    return by_method[method]


def _convert(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Checks ``value`` against ``tp`` and converts it (dicts become dataclasses); appends problems to ``errors``."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is Annotated:
        choice = _choice_of(tp)
        if choice is not None:
            return _convert_choice(value, choice, path, errors)
        return _convert(value, get_args(tp)[0], path, errors)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        arm = _discriminated_arm(value, args, path, errors)
        if arm is not None:
            return _convert(value, arm, path, errors) if arm is not _NO_ARM else value
        trial: list[str] = []
        for arg in args:
            if arg is type(None):
                continue
            sub: list[str] = []
            out = _convert(value, arg, path, sub)
            if not sub:
                return out
            trial.extend(sub)
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            errors.extend(trial)
        else:
            errors.append(f"{path}: expected {_type_name(tp)}, found {value!r}")
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            hint = did_you_mean(str(value), [str(a) for a in allowed])
            errors.append(f"{path}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}.{hint}")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected a list, found {type(value).__name__} {value!r}")
            return value
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                errors.append(f"{path}: expected {len(args)} items, found {len(value)}")
                return value
            return tuple(_convert(v, a, f"{path}[{i}]", errors) for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        out = [_convert(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, found {type(value).__name__} {value!r}")
            return value
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return {k: _convert(v, val_tp, f"{path}.{k}", errors) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping of {tp.__name__} fields, found {type(value).__name__} {value!r}")
            return value
        return _build(tp, value, path, errors)
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            errors.append(f"{path}: expected an integer, found {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML 1.1 reads '1e-3' as a string
                except ValueError:
                    pass
            errors.append(f"{path}: expected a number, found {type(value).__name__} {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, found {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        errors.append(f"{path}: expected {tp.__name__}, found {type(value).__name__} {value!r}")
    return value


def _build(cls: type[C], data: dict, path: str, errors: list[str]) -> C:
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{path}." if path else ""
    n_before = len(errors)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            errors.append(f"{prefix}{key}: unknown key for {cls.__name__}.{did_you_mean(str(key), list(fields))}")
            continue
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}", errors)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(f"{prefix}{name}: required field is missing ({_type_name(hints[name])})")
    if len(errors) > n_before:
        # Building with bad values would only add confusing errors from __post_init__.
        return _Invalid(cls)  # type: ignore[return-value]
    deferred = _DEFERRED.get()
    start = len(deferred) if deferred is not None else 0
    try:
        cfg = cls(**kwargs)
        for entry in (deferred or [])[start:]:  # the library checks of this dataclass's __post_init__
            if entry[0] is None:
                entry[0] = prefix
        return cfg
    except ConfigError as e:  # a config whose checks list several problems
        errors.extend(f"{prefix}{problem}" for problem in e.errors)
        return _Invalid(cls)  # type: ignore[return-value]
    except ValueError as e:
        errors.append(f"{prefix}{e}")
        return _Invalid(cls)  # type: ignore[return-value]


class _Invalid:
    """Placeholder for a dataclass that could not be built; never escapes :func:`from_dict`."""

    def __init__(self, cls: type) -> None:
        self.cls = cls


def from_dict(cls: type[C], data: dict, source: str | None = None, problems: Sequence[str] = ()) -> C:
    """Builds config ``cls`` from a plain dict, raising one :class:`ConfigError` that lists every problem.

    Args:
        problems: problems the caller found already, listed first (the checks that need a library then wait, as
            after any problem).
    """
    errors: list[str] = list(problems)
    if not isinstance(data, dict):
        raise ConfigError([f"top level: expected a mapping, found {type(data).__name__}"], source)
    token = _DEFERRED.set([])
    try:
        cfg = _build(cls, data, "", errors)
    finally:
        deferred = _DEFERRED.get() or []
        _DEFERRED.reset(token)
    if not errors:
        failed: list[str] = []  # the sections whose checks failed
        for prefix, check in deferred:
            prefix = prefix or ""
            if any(section.startswith(prefix) for section in failed):
                continue  # a section's (or a containing config's) further checks would see an invalid value, as in _build
            n_before = len(errors)
            try:
                check()
            except ConfigError as e:
                errors.extend(f"{prefix}{problem}" for problem in e.errors)
            except ValueError as e:
                errors.append(f"{prefix}{e}")
            if len(errors) > n_before:
                failed.append(prefix)
    if errors:
        raise ConfigError(errors, source)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses ``a.b.c=value`` (value read as YAML, so ``3``, ``1e-3``, ``[1, 2]``, ``null`` keep their types)."""
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=0.01"])
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError([f"--set {text!r}: empty key before '='"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError([
            f"--set {text!r}: the value is not valid YAML; quote it, e.g. --set '{key}=\"{raw}\"'"
        ]) from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Returns a copy of ``data`` with each ``a.b=value`` override applied (creating nested mappings as needed)."""
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                nxt = {}
                node[k] = nxt
            node = nxt
        node[keys[-1]] = value
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"config file {str(path)!r} does not exist (check the path given with -c/--config)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError([f"not valid YAML: {e}"], str(path)) from None
    return data or {}


def load_config(cls: type[C], source: str | os.PathLike | dict | None = None, overrides: list[str] = ()) -> C:
    """Loads config ``cls`` from a YAML file or dict, applies ``--set`` style overrides and validates it all."""
    if source is None:
        data, name = {}, None
    elif isinstance(source, dict):
        data, name = source, None
    else:
        data, name = read_yaml(source), str(source)
    return from_dict(cls, apply_overrides(data, list(overrides)), name)


def to_dict(cfg: Any) -> Any:
    """Plain-data form of a config (for YAML/JSON)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def check_sources(cfg: Any, sources: dict[str, str]) -> None:
    """Validates a run config's provenance block (its ``source:`` mapping).

    A paper preset says where each value comes from: ``source`` maps a dotted field path of the run config
    (``train.lr``, ``prompt.num_tokens``) to its origin, as a repository and path (``KMnP/vpt configs/base-prompt.yaml``),
    a paper's table, or ``differs: <reason>`` / ``local: <reason>`` for a deliberate choice of this preset.

    Raises:
        ValueError: naming each key that is not a field of ``cfg``, or an empty origin.
    """
    problems = []
    for key, origin in sources.items():
        if not is_field_path(cfg, key):
            problems.append(f"source.{key}: not a field of the run config (give a dotted path such as 'train.lr')")
        if not isinstance(origin, str) or not origin.strip():
            problems.append(f"source.{key}: give the value's origin (repository and path, paper table, or 'differs: why')")
    if problems:
        raise UserError("; ".join(problems))


def check_grid(cfg: Any, grid: dict[str, list[Any]]) -> None:
    """Validates a run config's sweep grid (its ``sweep:`` mapping): a dotted field path (``train.lr``) -> the
    values to try, a non-empty list. Whether each value fits its field is checked when a grid point's config is
    built (:func:`grid_points` gives them as ``--set`` overrides).

    Raises:
        ValueError: naming each key that is not a field of ``cfg`` or has no values.
    """
    problems = []
    for key, values in grid.items():
        if not is_field_path(cfg, key) or key.split(".")[0] in ("source", "sweep"):
            problems.append(f"sweep.{key}: not a field of the run config (give a dotted path such as 'train.lr')")
        if not isinstance(values, list) or not values:
            problems.append(f"sweep.{key}: give a non-empty list of the values to try, e.g. [0.1, 0.5]")
    if problems:
        raise UserError("; ".join(problems))


def grid_points(grid: dict[str, list[Any]]) -> list[list[str]]:
    """Every point of ``grid`` (the product of its lists, the last key varying fastest) as ``key=value`` overrides
    (values written as YAML, so :func:`parse_override` reads them back with their types)."""
    import itertools

    keys = list(grid)
    return [
        [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in zip(keys, values)]
        for values in itertools.product(*(grid[k] for k in keys))
    ]  # an empty grid has one point: no overrides


def is_field_path(cfg: Any, key: str) -> bool:
    """Whether the dotted ``key`` (``train.lr``) names a field of the dataclass tree ``cfg``."""
    node: Any = cfg
    for part in key.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return False
        node = getattr(node, part)
    return True


def unknown_fields(values: Iterable[str], config: Any) -> tuple[list[str], str]:
    """The keys of ``values`` that are not fields of the (transformers-style) ``config`` object, and a hint naming
    each one's close matches: such a config keeps unknown keys as unused attributes and builds its default size
    without a word. ``config`` is an instance of its class built with defaults (``to_dict``, ``attribute_map`` and
    the constructor's parameters count as fields)."""
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {})) | set(inspect.signature(type(config).__init__).parameters)
    unknown = [k for k in values if k not in known]
    hint = " ".join(f"{k!r}:{did_you_mean(k, sorted(known)) or ' no close match.'}" for k in unknown)
    return unknown, hint


def check_distinct_ids(field: str, names: Sequence[str], ids: Sequence[Sequence[int]], tokenizer: str, fix: str) -> None:
    """Raises :class:`UserError` naming ``field`` when two of ``names`` (class names, label words) tokenize to the
    same ids with ``tokenizer`` (how the message names it): their classes would always get the same score. ``fix``
    ends the message."""
    same = first_same_ids(names, ids)
    if same is not None:
        other, name, row = same
        raise UserError(
            f"{field}: {other!r} and {name!r} are the same tokens {row} for {tokenizer}, so their classes would "
            f"always get the same score; {fix}"
        )


def first_same_ids(names: Sequence[str], ids: Sequence[Sequence[int]]) -> tuple[str, str, list[int]] | None:
    """The first two of ``names`` whose token ids are equal (their classes would always score the same), with those
    ids, or None when every name's ids differ."""
    seen: dict[tuple[int, ...], str] = {}
    for name, row in zip(names, ids):
        other = seen.setdefault(tuple(row), name)
        if other != name:
            return other, name, list(row)
    return None


__all__ = [
    "ConfigError",
    "apply_overrides",
    "check_distinct_ids",
    "check_grid",
    "check_sources",
    "from_dict",
    "grid_points",
    "is_field_path",
    "load_config",
    "parse_override",
    "read_yaml",
    "to_dict",
    "to_yaml",
    "unknown_fields",
]
