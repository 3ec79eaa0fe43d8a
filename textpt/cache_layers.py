"""The transformers cache layers of :mod:`textpt.fast_prefix`'s prefixes.

A module of their own because they subclass transformers' ``DynamicLayer``: :mod:`textpt.fast_prefix` imports them
when it builds a cache, so importing ``textpt`` does not load transformers.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class PrefixLayer(DynamicLayer):
    """One layer's fixed prefix: ``update`` returns ``prefix + new`` and keeps nothing (stateless)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


class RecordingLayer(DynamicLayer):
    """Keeps the keys and values of the last call, replacing them (so a checkpointed re-run leaves the same state)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = key_states, value_states
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True
        return key_states, value_states


__all__ = ["PrefixLayer", "RecordingLayer"]
