"""Engines: one per ``train.distributed`` value, registered by name in :data:`ENGINES`.

``plain`` (one process), ``ddp``, ``fsdp`` and ``deepspeed`` are built in; ``auto`` is ``ddp`` with several
processes and ``plain`` with one (:func:`resolve_engine`). A new engine subclasses :class:`Engine` (or one of the
built-in ones) and is registered like every other extension::

    from promptcore.engines import ENGINES, Engine

    @ENGINES.register("my_engine")
    class MyEngine(Engine):
        ...

after which ``train.distributed: my_engine`` selects it (docs/extending.md).
"""

from __future__ import annotations

from ..errors import UserError
from ..registry import Registry
from .base import Engine
from .ddp import DDPEngine
from .deepspeed import DeepSpeedEngine
from .fsdp import FSDPEngine
from .plain import PlainEngine

ENGINES: Registry[type[Engine]] = Registry("engine (train.distributed)")
ENGINES.add("plain", PlainEngine)
ENGINES.add("ddp", DDPEngine)
ENGINES.add("fsdp", FSDPEngine)
ENGINES.add("deepspeed", DeepSpeedEngine)


def resolve_engine(name: str, world_size: int) -> type[Engine]:
    """The engine class of ``train.distributed: name`` for a run of ``world_size`` processes (``auto``: ``ddp``
    with several, ``plain`` with one).

    Raises:
        UserError: an unknown name (with the close matches), or an engine for several processes in a run of one.
    """
    if name == "auto":
        name = "ddp" if world_size > 1 else "plain"
    engine = ENGINES.get(name)
    if engine.several_processes and world_size == 1:
        raise UserError(
            f"train.distributed: {name} needs several processes, this run has 1; launch it with "
            f"`torchrun --nproc_per_node N ...` or `accelerate launch --num_processes N ...`, or set "
            f"train.distributed: auto for one process"
        )
    return engine


__all__ = ["DDPEngine", "DeepSpeedEngine", "ENGINES", "Engine", "FSDPEngine", "PlainEngine", "resolve_engine"]
