"""``train.distributed: ddp`` (``auto`` with several processes): torch's ``DistributedDataParallel`` through
``accelerator.prepare``. Every process holds the whole frozen backbone; DDP averages the prompt gradients in its
buckets during the backward of each accumulation window's last micro-batch. The frozen parameters and every buffer
are left out of DDP, so it neither broadcasts the backbone at start nor buckets it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ..distributed import StepModule
from .base import Engine, compile_module


def ignore_frozen_in_ddp(step: StepModule) -> None:
    """Leaves every frozen parameter and every buffer out of DDP: nothing but the prompts is broadcast or reduced.

    Private API, read from torch 2.14.1 (``torch/nn/parallel/distributed.py``):
    ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model``, which sets the module attribute
    ``_ddp_params_and_buffers_to_ignore`` that DDP reads. Public replacement: none in torch; wrapping only the
    prompt modules in DDP would need the model's forward split around them. ``tests/promptcore/test_engines.py``
    fails when the name disappears.
    """
    trainable = {id(p) for p in step.model.prompt_parameters()}
    names = [n for n, p in step.named_parameters() if id(p) not in trainable]
    names += [n for n, _ in step.named_buffers()]
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(step, names)


class DDPEngine(Engine):
    several_processes = True
    training_only = True
    averages = True

    def prepare(self, step: StepModule, optimizer: torch.optim.Optimizer | None) -> None:
        ignore_frozen_in_ddp(step)
        self.module = self.accelerator.prepare_model(step)

    def compile(self, step: StepModule) -> None:
        # PyTorch's order for DDP: compile the wrapped module, so that the compiler splits the graph at DDP's
        # gradient buckets and the reduction overlaps the backward. Evaluation calls the step compiled without DDP.
        super().compile(step)
        self.eval_module = compile_module(step, self.config.compile_mode)

    def no_sync(self, last: bool) -> Any:
        # DDP reduces the gradients in the backward of the window's last micro-batch only.
        return nullcontext() if last else self.module.no_sync()


__all__ = ["DDPEngine", "ignore_frozen_in_ddp"]
