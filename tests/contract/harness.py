"""The contract every registered prompt method honours, and the record that tells the suite how to build one.

Each method registered in :data:`promptcore.METHODS` has a :class:`MethodCase` in :data:`CASES` under the same key
(``"vision:vpt_deep"``, ``"text:prompt_tuning"``; the case files next to this one register them; a method without a
case fails the suite). A case builds a tiny instance of the
method, seeded, with a few rows of data; :mod:`test_contract` then checks, for every method alike:

- after ``backward()`` only prompt parameters hold gradients, and they do;
- training with :class:`promptcore.Trainer` leaves the backbone bitwise unchanged (parameters and buffers);
- save -> load into a differently initialised model gives identical outputs;
- a prompt folder of another configuration, or a corrupt one, is refused with :class:`promptcore.PromptFileError`;
- where the method has a fast path, fast and plain agree in float64 (outputs and prompt gradients), and the fast
  path was seen to run.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from promptcore import PromptedModel
from promptcore.registry import Registry


@dataclass(frozen=True)
class MethodCase:
    """How to build and feed a tiny instance of one method.

    Attributes:
        build: ``build(seed, fast) -> model``: a fresh model whose prompt initialisation depends on ``seed`` only;
            ``fast`` chooses the fast path (``True``), the plain reference path (``False``), or the method's
            default (``None``). Methods without a fast path ignore it.
        data: ``data(model) -> (dataset, collate_fn)``: a few rows (at least 8) for training and evaluation.
        outputs: ``outputs(model, batch) -> tensor`` compared between paths and after save/load (default: the
            model's ``forward_batch``).
        foreign: ``foreign(seed) -> model`` of the same method but another size (another prompt length, depth or
            class count), whose prompt files the case's model must refuse.
        fast_spy: ``"module.function"`` called only on the fast path; the suite wraps it to see that the fast path
            ran. ``None``: the method has no fast path.
        sharded: whether the sharded contract (FSDP2, ``test_sharded_contract``) runs the case; ``False`` only for a
            method whose package does not support sharding yet, which its docs say.
    """

    build: Callable[[int, bool | None], PromptedModel]
    data: Callable[[PromptedModel], tuple[Dataset, Callable[[list[Any]], Any]]]
    foreign: Callable[[int], PromptedModel]
    outputs: Callable[[PromptedModel, Any], torch.Tensor] | None = None
    fast_spy: str | None = None
    sharded: bool = True

    def output(self, model: PromptedModel, batch: Any) -> torch.Tensor:
        return self.outputs(model, batch) if self.outputs is not None else model.forward_batch(batch)

    def batch(self, model: PromptedModel, size: int = 8) -> Any:
        dataset, collate = self.data(model)
        return collate([dataset[i] for i in range(min(size, len(dataset)))])


CASES: Registry[MethodCase] = Registry("contract case")
"""Cases by registered method name, plus variants ``"<method>/<variant>"`` (a method on another kind of backbone)."""


def method_of(case_name: str) -> str:
    """The registered method a case runs (a variant's name without its ``/<variant>``)."""
    return case_name.split("/")[0]


def variants(sharded: bool = False) -> list[str]:
    """The names of the variant cases (``sharded``: those the sharded contract runs)."""
    return [name for name in CASES.names() if "/" in name and (CASES.get(name).sharded or not sharded)]


class Spy:
    """Counts calls of a function while the ``with`` block runs (the function still runs).

    ``target`` is ``"package.module.function"`` or ``"package.module.Class.method"``; the attribute is replaced
    where it is looked up at call time, so name the module (or class) whose attribute the fast path calls.
    """

    def __init__(self, target: str) -> None:
        parts = target.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                owner: Any = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for name in parts[cut:-1]:
                owner = getattr(owner, name)
            break
        else:
            raise ValueError(f"fast_spy {target!r} names no importable module")
        self.module, self.attr = owner, parts[-1]
        self.calls = 0

    def __enter__(self) -> "Spy":
        self.original = self.module.__dict__[self.attr] if isinstance(self.module, type) else getattr(self.module, self.attr)

        @functools.wraps(self.original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return self.original(*args, **kwargs)

        setattr(self.module, self.attr, counted)
        return self

    def __exit__(self, *exc: Any) -> None:
        setattr(self.module, self.attr, self.original)


def to_float64(batch: Any) -> Any:
    """The batch with floating tensors in float64 (token ids and labels unchanged)."""
    if isinstance(batch, torch.Tensor):
        return batch.double() if batch.is_floating_point() else batch
    if isinstance(batch, dict):
        return {k: to_float64(v) for k, v in batch.items()}
    return batch
