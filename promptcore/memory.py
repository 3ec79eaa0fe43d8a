"""Checks of memory a user setting asks for, made before allocating it: a model size or shape, a prompt length
(:mod:`promptcore.prompts`) or a training batch (:func:`promptcore.preflight.batch_problem`) given in a config that
does not fit fails with one :class:`promptcore.errors.UserError` naming the setting and the bytes, not with the
allocator's error (or the kernel's out-of-memory kill) minutes later."""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from .errors import UserError


def available_memory() -> int | None:
    """Bytes of host memory available now (Linux ``MemAvailable``, else free physical pages), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """The bytes ``tensors`` hold (meta tensors included: their shapes and dtypes say it). A wrapper tensor subclass
    counts the inner tensors it holds, since its own ``element_size()`` is that of the dtype it stands for: a torchao
    quantized weight its data, scales and zero points; a DTensor this process's shard (itself quantized, for a sharded
    nf4 weight: the inner tensors of the shard)."""
    total = 0
    for t in tensors:
        if hasattr(t, "__tensor_flatten__"):
            inner = [getattr(t, name) for name in t.__tensor_flatten__()[0]]
            total += tensor_bytes(x for x in inner if isinstance(x, torch.Tensor))  # a DTensor also names its mesh
        else:
            total += t.numel() * t.element_size()
    return total


def module_bytes(module: nn.Module) -> int:
    """The bytes of ``module``'s parameters and buffers."""
    return tensor_bytes([*module.parameters(), *module.buffers()])


def batch_bytes(example: Mapping[str, Any], rows: int, hidden: int | None = None) -> int:
    """A lower bound of the memory a batch of ``rows`` examples like ``example`` takes: its inputs (tensors, and
    lists of numbers at 8 bytes each) and, for a model of width ``hidden``, the float32 embeddings of its
    ``input_ids`` (one hidden state; a forward keeps several per layer)."""
    per_example = 0
    for value in example.values():
        if isinstance(value, torch.Tensor):
            per_example += value.numel() * value.element_size()
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            per_example += 8 * len(value)
    ids = example.get("input_ids")
    if hidden and ids is not None:
        per_example += len(ids) * hidden * 4
    return rows * per_example


def check_fits(nbytes: int, setting: str, available: int | None = None) -> None:
    """Raises :class:`UserError` when ``nbytes`` (what ``setting`` asks for) exceed the memory available (host
    memory unless ``available`` is given); unknown available memory passes."""
    available = available_memory() if available is None else available
    if available is not None and nbytes > available:
        raise UserError(
            f"{setting}: asks for {_size(nbytes)} ({nbytes} bytes) but {_size(available)} of memory is available; "
            f"choose a smaller size"
        )


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


__all__ = ["available_memory", "batch_bytes", "check_fits", "module_bytes", "tensor_bytes"]
