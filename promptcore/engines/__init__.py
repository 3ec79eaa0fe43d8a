"""Engines: one per ``train.distributed`` value, registered by name in :data:`ENGINES`.

``plain`` (one process), ``ddp``, ``fsdp`` and ``deepspeed`` are built in; ``auto`` is ``ddp`` with several
processes and ``plain`` with one (:func:`resolve_engine`). A new engine subclasses :class:`Engine` (or one of the
built-in ones) and is registered like every other extension::

    from promptcore.engines import ENGINES, Engine

    @ENGINES.register("my_engine")
    class MyEngine(Engine):
        ...

after which ``train.distributed: my_engine`` selects it (docs/extending.md). The registry is defined in
:mod:`promptcore.train_config` (free of torch), where the built-in names are declared, so a config's
``train.distributed`` is checked before this package loads.
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import UserError
from ..train_config import ENGINES, one_process_error
from .base import Engine
from .ddp import DDPEngine
from .deepspeed import DeepSpeedEngine
from .fsdp import FSDPEngine
from .plain import PlainEngine

ENGINES.add("plain", PlainEngine)
ENGINES.add("ddp", DDPEngine)
ENGINES.add("fsdp", FSDPEngine)
ENGINES.add("deepspeed", DeepSpeedEngine)


def resolve_engine(name: str, world_size: int, trains: bool = True) -> type[Engine]:
    """The engine of ``train.distributed: name`` for a run of ``world_size`` processes (``auto``: ``ddp`` with
    several, ``plain`` with one). A run that trains nothing (evaluation) in one process, as with the saved
    ``config.yaml`` of a sharded run outside a launcher, gets ``plain`` for an engine that needs several processes,
    said in one line.

    Raises:
        UserError: an unknown name (with the close matches), or an engine for several processes in a training run of one.
    """
    if name == "auto":
        name = "ddp" if world_size > 1 else "plain"
    engine = ENGINES.get(name)
    if engine.several_processes and world_size == 1:
        if not trains:
            print(
                f"train.distributed: {name} outside a launcher means one process: evaluating with the plain engine",
                file=sys.stderr,
            )
            return PlainEngine
        raise one_process_error(name)
    return engine


def build_engine(engine: type[Engine], config: Any, accelerator: Any, trains: bool) -> Engine:
    """The engine of a run (of class ``engine``, from :func:`resolve_engine`); a run that ``trains`` nothing (evaluation
    only) needs no engine that only reduces and steps (``training_only``) and gets the plain one.

    Raises:
        UserError: a 1-process engine asked to train in several processes.
    """
    world_size = accelerator.num_processes
    if engine.training_only and not trains:
        engine = PlainEngine
    if trains and world_size > 1 and not engine.several_processes:
        raise UserError(
            f"train.distributed: {config.distributed} trains in one process, this run has {world_size}; set "
            f"train.distributed: auto (ddp) or fsdp, or launch one process"
        )
    return engine(config, accelerator)


__all__ = ["DDPEngine", "DeepSpeedEngine", "ENGINES", "Engine", "FSDPEngine", "PlainEngine", "build_engine", "resolve_engine"]
