"""``train.distributed: fsdp``: torch's FSDP2 (``fully_shard``) shards the frozen backbone, one unit per
transformer block (:func:`promptcore.distributed.shard_model`, the ``train.fsdp`` section).

The prompts and heads are left out of sharding: each process keeps them whole, and their gradients (the only ones
there are) are summed in the step's one collective together with the loss and the flags. Every process takes part
in every evaluation forward, so a process with fewer eval batches runs padding batches. A model built for sharded
loading (``train.fsdp.sharded_loading``: whole on rank 0 only) is sharded, then filled in from rank 0
(:func:`promptcore.distributed.load_sharded`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..distributed import StepModule, load_sharded, loads_sharded, shard_model
from ..fingerprint import FINGERPRINT_KEY
from .base import Engine


class FSDPEngine(Engine):
    several_processes = True
    pads_eval = True
    shards_weights = True
    loads_sharded = True  # fills in a model built for sharded loading (promptcore.distributed.load_sharded)

    def prepare_model(self, step: StepModule) -> None:
        model = step.model
        lazy = loads_sharded(model)
        record_fingerprint(model, lazy)
        if lazy:
            load_sharded(step, model, self.config.fsdp, self.world_size, self.device)
        else:
            shard_model(step, model, self.config.fsdp, self.world_size, self.device)

    def reduce(self, loss_sum: torch.Tensor, flags: list[float], params: list[nn.Parameter]) -> torch.Tensor:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # one buffer in float32, or wider where a gradient is (a float64 run sums its gradients in float64)
        wide = functools.reduce(torch.promote_types, (g.dtype for g in grads), torch.float32)
        head = torch.cat([loss_sum.to(wide).view(1), torch.tensor(flags, device=self.device, dtype=wide)])
        flat = torch.cat([head, *(g.to(wide).flatten() for g in grads)])
        dist.all_reduce(flat)
        offset = head.numel()
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).to(g.dtype)
            offset += n
        return flat[: head.numel()]

    def eval_call(self, model: Any, batch: Any) -> dict[str, torch.Tensor]:
        return self.module(batch, "eval")  # FSDP's hooks gather the weights


def record_fingerprint(model: nn.Module, from_rank0: bool) -> None:
    """Records the backbone's weights fingerprint in the prompt files, read now, while the weights are whole; with
    ``from_rank0`` (sharded loading: only rank 0 holds them) rank 0's, sent to every process."""
    fingerprint = model.backbone_fingerprint() if hasattr(model, "backbone_fingerprint") else None
    if from_rank0:
        shared = [fingerprint]
        dist.broadcast_object_list(shared, src=0)
        fingerprint = shared[0]
    if fingerprint is not None:
        model.record_in_prompt_files(**{FINGERPRINT_KEY: fingerprint})


__all__ = ["FSDPEngine"]
