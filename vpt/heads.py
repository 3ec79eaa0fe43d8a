"""Heads of :class:`vpt.model.VisualPromptModel` by name (``prompt.head``), and the per-task linear classifier.

Each head is a :class:`VPTHead` record in :data:`HEADS`: what it reads from the encoder and the module that turns
that into logits. The toolkit's own are ``linear`` (the class token, or the backbone's pooling without one),
``prompt_mean`` (the mean of the last block's prompt outputs) and ``backbone_pool`` (the backbone's own pooling);
:mod:`vpt.clip` adds ``zeroshot``. Another package adds a head the same way: ``HEADS.add("name", VPTHead(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from promptcore.errors import UserError
from promptcore.plugins import lookup

from .config import HEADS

if TYPE_CHECKING:
    from .backbones import TokenBackbone
    from .config import VPTConfig


@dataclass(frozen=True)
class VPTHead:
    """One head of a VPT model.

    Attributes:
        build: ``build(tokens, config) -> module``; the module's ``forward(features, task_ids)`` gives logits
            ``[B, num_classes]`` (``task_ids [B]`` with a prompt bank, else ``None``).
        features: ``features(tokens, x, prompt_out) -> [B, D]``: what the head reads, from the last block's output
            with the prompts removed (``x``) and the last block's prompt outputs (``prompt_out``).
        summary: one line for listings and docs.
        check: ``check(config)`` raises ``ValueError("field: ...")`` for settings the head cannot take.
        reads_prompt_outputs: whether ``features`` reads ``prompt_out``; the fast VPT-deep path never computes prompt
            outputs, so the last block then runs the plain path.
    """

    build: Callable[["TokenBackbone", "VPTConfig"], nn.Module]
    features: Callable[["TokenBackbone", torch.Tensor, torch.Tensor | None], torch.Tensor]
    summary: str = ""
    check: Callable[["VPTConfig"], None] = lambda config: None
    reads_prompt_outputs: bool = False


def head_named(name: str) -> VPTHead:
    """The head registered as ``name``; installed plugins are loaded first if it is not (``zeroshot`` comes with
    :mod:`vpt.clip`).

    Raises:
        KeyError: no head of that name (the message lists the close matches and the known heads).
    """
    return lookup(HEADS, name)


class TaskLinearHead(nn.Module):
    """One linear classifier per task: ``weight [num_tasks, num_classes, dim]``, ``bias [num_tasks, num_classes]``.

    Without ``task_ids`` it is an ordinary linear layer (task 0); with them, each image uses its task's classifier,
    so a batch can mix tasks (a prompt bank). Every image goes through every task's classifier (``num_tasks`` small
    matrices) and keeps its own task's logits, so no per-image weight copy is made.

    Args:
        dim, num_classes, num_tasks: the sizes.
        init: ``trunc_normal`` (weights N(0, 0.02²) truncated, zero bias: VPT's heads) or ``linear``
            (``nn.Linear``'s own initialisation, per task: the pixel prompts' heads).
    """

    def __init__(self, dim: int, num_classes: int, num_tasks: int = 1, init: Literal["trunc_normal", "linear"] = "trunc_normal") -> None:
        super().__init__()
        self.dim, self.num_classes, self.num_tasks = dim, num_classes, num_tasks
        self.weight = nn.Parameter(torch.empty(num_tasks, num_classes, dim))
        self.bias = nn.Parameter(torch.zeros(num_tasks, num_classes))
        if init == "linear":
            for t in range(num_tasks):
                layer = nn.Linear(dim, num_classes)
                self.weight.data[t].copy_(layer.weight.data)
                self.bias.data[t].copy_(layer.bias.data)
        else:
            nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``features [B, dim]`` -> logits ``[B, num_classes]``; ``task_ids [B]`` picks each image's classifier."""
        # Heads may stay float32 on a bfloat16 (or float64) backbone: compute in the features' dtype.
        weight, bias = self.weight.to(features.dtype), self.bias.to(features.dtype)
        if task_ids is None:
            return F.linear(features, weight[0], bias[0])
        logits = torch.einsum("bd,tkd->btk", features, weight) + bias
        return logits[torch.arange(features.shape[0], device=features.device), task_ids]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}, num_tasks={self.num_tasks}"


def linear_head(width: Callable[["TokenBackbone"], int]) -> Callable[["TokenBackbone", "VPTConfig"], nn.Module]:
    """The ``build`` of a trained linear head on features ``width(tokens)`` wide."""

    def build(tokens: "TokenBackbone", config: "VPTConfig") -> nn.Module:
        if config.num_classes is None:
            raise UserError(
                f"num_classes: the {config.head!r} head needs the number of classes; set prompt.num_classes "
                f"(the vpt CLI fills it from the data when it is null)"
            )
        return TaskLinearHead(width(tokens), config.num_classes, config.num_tasks)

    return build


# The registry is defined in vpt.config (free of torch) and these names declared in vpt's __init__, so a config is
# checked against them before torch is imported.
HEADS.add("linear", VPTHead(
    build=linear_head(lambda tb: tb.width if tb.has_class_token else tb.pool_dim),
    features=lambda tb, x, prompt_out: tb.class_feature(x),
    summary="linear on the normalised class token (on the backbone's pooling when it has none)",
))
HEADS.add("prompt_mean", VPTHead(
    build=linear_head(lambda tb: tb.width),
    features=lambda tb, x, prompt_out: tb.final_norm(prompt_out).mean(dim=1),
    summary="linear on the mean of the last block's prompt outputs",
    reads_prompt_outputs=True,
))
HEADS.add("backbone_pool", VPTHead(
    build=linear_head(lambda tb: tb.pool_dim),
    features=lambda tb, x, prompt_out: tb.pool(x),
    summary="linear on the backbone's own pooling",
))
