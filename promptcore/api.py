"""``wrap(backbone, config)``: the one entry point that turns a frozen model into a prompted one."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .model import PromptedModel

_WRAPPERS: dict[type, Callable[[nn.Module, Any], PromptedModel]] = {}


def register_wrapper(config_type: type) -> Callable:
    """Registers the function that wraps a backbone for prompt configs of ``config_type`` (once per type)."""

    def decorator(fn: Callable[[nn.Module, Any], PromptedModel]) -> Callable[[nn.Module, Any], PromptedModel]:
        if config_type in _WRAPPERS:
            raise KeyError(f"a wrapper for {config_type.__name__} is already registered ({_WRAPPERS[config_type]!r})")
        _WRAPPERS[config_type] = fn
        return fn

    return decorator


def wrap(backbone: nn.Module, config: Any) -> PromptedModel:
    """Wraps a frozen ``backbone`` with the prompts that ``config`` describes.

    ``config`` is a method config of ``vpt`` (vision) or ``textpt`` (text); importing the package registers it.
    The backbone's parameters are frozen; only the prompts (and the head, where the method has one) train.
    """
    for cls in type(config).__mro__:
        if cls in _WRAPPERS:
            return _WRAPPERS[cls](backbone, config)
    known = ", ".join(sorted(c.__name__ for c in _WRAPPERS)) or "none yet"
    raise TypeError(
        f"no prompt method is registered for config type {type(config).__name__}; registered: {known}. "
        f"Import vpt or textpt (they register their configs), or pass one of their config objects."
    )
