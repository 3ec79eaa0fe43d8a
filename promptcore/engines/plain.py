"""``train.distributed: plain`` (``auto`` in one process): plain autograd and a plain optimizer step."""

from __future__ import annotations

from .base import Engine

PlainEngine = Engine

__all__ = ["PlainEngine"]
