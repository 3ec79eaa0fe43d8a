"""Several processes: data parallel through Accelerate's DDP, and FSDP2 sharding of the frozen backbone.

``train.distributed`` picks the engine (:func:`resolve_mode`):

- ``ddp`` (``auto`` with several processes): the model goes through ``accelerator.prepare``, which wraps it in
  torch's ``DistributedDataParallel``. Every process holds the whole frozen backbone; DDP averages the prompt
  gradients in its buckets. The frozen parameters and every buffer are excluded from DDP
  (``_ddp_params_and_buffers_to_ignore``), so it neither broadcasts the backbone at start nor buckets it.
- ``fsdp``: torch's FSDP2 (``fully_shard``) the way Accelerate's FSDP plugin v2 applies it: each transformer block
  (ViT block, CLIP resblock, decoder layer, ...) is one unit, then the root takes the remaining frozen weights
  (embeddings, norms). Each process keeps ``1 / N`` of the frozen weights and gathers one block at a time in its
  forward (and again for the backward through it). The prompts and heads are left out of sharding
  (``ignored_params``): they are a few KB, so each process keeps them whole, the optimizer and the prompt files see
  plain tensors, and the trainer sums their gradients with one collective per step, the only gradients there are
  (frozen weights have none to reduce-scatter). Scalar weights, which FSDP cannot shard (CLIP's ``logit_scale``),
  and the modules ``train.fsdp.keep_whole`` names stay whole too.

Both engines hook into module calls, so a training or evaluation step runs as one call of :class:`StepModule`, whose
``forward`` is the model's own ``training_step`` / ``eval_step``. Code that computes with a block's submodules
directly (the exact fast paths) goes through :func:`call_through`, so the block's sharded weights are gathered the
FSDP way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn

from .errors import UserError

Mode = Literal["none", "ddp", "fsdp"]


@dataclass
class FSDPConfig:
    """The ``train.fsdp`` section (used with ``train.distributed: fsdp``).

    Attributes:
        block_classes: class names of the modules that each become one shard unit (``[Block]``,
            ``[LlamaDecoderLayer]``). Empty: every entry of each list of identical blocks in the frozen backbone
            (``blocks``, ``layers``, ``resblocks``, ``encoder.layer``, ``block`` ...), found by :func:`shard_units`.
        reshard_after_forward: free each block's gathered weights after its forward (and gather them again for
            the backward): the least memory. ``false`` keeps them until the backward, trading memory for one
            all-gather per block and step.
        cpu_offload: keep the shards in CPU memory and copy each block to the GPU for its use (FSDP2's
            ``CPUOffloadPolicy``); for GPUs only.
        keep_whole: modules (names as in ``model.named_modules()``, or their last parts: ``embed_tokens``) whose
            weights every process keeps whole instead of sharding. For a weight that is used whole anyway and is a
            large share of the model, such as a big vocabulary's embedding tied to the LM head, this trades its
            ``(N - 1) / N`` saving for the memory FSDP needs to gather it (the full matrix plus its buffers) and one
            all-gather per forward and backward.
    """

    block_classes: list[str] = field(default_factory=list)
    reshard_after_forward: bool = True
    cpu_offload: bool = False
    keep_whole: list[str] = field(default_factory=list)


def resolve_mode(requested: str, world_size: int, device: torch.device) -> Mode:
    """The engine of a run with ``world_size`` processes, or a :class:`UserError` naming the fix."""
    if requested == "auto":
        return "ddp" if world_size > 1 else "none"
    if world_size == 1:
        raise UserError(
            f"train.distributed: {requested} needs several processes, this run has 1; launch it with "
            f"`torchrun --nproc_per_node N ...` or `accelerate launch --num_processes N ...`, or set "
            f"train.distributed: auto for one process"
        )
    return requested  # type: ignore[return-value]


class StepModule(nn.Module):
    """A training or evaluation step as one module call, so the engines' hooks run around it: DDP prepares its
    gradient reduction in ``forward``, and FSDP2's root gathers its weights in its forward hooks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any, mode: str = "train") -> Any:
        return self.model.training_step(batch) if mode == "train" else self.model.eval_step(batch)


def call_through(module: nn.Module, fn: Callable[..., Any], *args: Any) -> Any:
    """Runs ``fn(*args)`` as ``module``'s forward, so the hooks on ``module`` run around it.

    Under FSDP2 a block's weights are sharded outside its forward; code that uses the block's submodules directly
    (a fast path computing attention itself) must run inside this call, where the block's pre-forward hook has
    gathered them and its post-forward hook sets up the gathering for the backward. Without hooks it is
    ``fn(*args)``.
    """
    own = module.__dict__.get("forward")
    module.forward = fn
    try:
        return module(*args)
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


def is_sharded(module: nn.Module) -> bool:
    """Whether FSDP2 shards ``module`` or any module inside it."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())


def shard_units(model: nn.Module, block_classes: list[str] | tuple[str, ...] = ()) -> list[nn.Module]:
    """The modules FSDP shards one by one: the frozen transformer blocks of ``model``.

    With ``block_classes`` every module of those class names; otherwise every entry of each ``nn.ModuleList`` / ``nn.Sequential`` of two
    or more modules of one class holding parameters (timm ViT ``blocks``, CLIP ``resblocks`` of both towers, HF
    ``layers`` / ``layer`` / ``h`` / ``block``). Prompt modules are never units, and a unit inside another is
    dropped (the outer one holds it).

    Raises:
        UserError: no such module was found.
    """
    prompt_modules = model.prompt_modules().values() if hasattr(model, "prompt_modules") else []
    excluded = {id(m) for pm in prompt_modules for m in pm.modules()}
    if block_classes:
        found = [m for m in model.modules() if type(m).__name__ in block_classes and id(m) not in excluded]
    else:
        found = []
        for m in model.modules():
            if (
                isinstance(m, (nn.ModuleList, nn.Sequential))
                and len(m) >= 2
                and id(m) not in excluded
                and len({type(c) for c in m}) == 1
                and any(True for _ in m.parameters())
            ):
                found.extend(m)
    inner: set[int] = set()
    for unit in found:
        inner.update(id(sub) for sub in unit.modules() if sub is not unit)
    units = [u for u in found if id(u) not in inner]
    if not units:
        what = f"no module of class {', '.join(block_classes)}" if block_classes else "no list of identical blocks"
        raise UserError(
            f"train.fsdp: {what} found in {type(model).__name__} to shard; set train.fsdp.block_classes to the class "
            f"names of its transformer blocks (e.g. [Block] for timm ViTs, [LlamaDecoderLayer]), or use "
            f"train.distributed: ddp"
        )
    return units


def whole_modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """The modules ``train.fsdp.keep_whole`` names: each name is a module path or its last parts
    (``embed_tokens`` matches ``backbone.model.embed_tokens``).

    Raises:
        UserError: a name matches no module.
    """
    found = []
    paths = [n for n, _ in model.named_modules() if n]
    for name in names:
        matches = [m for n, m in model.named_modules() if n and (n == name or n.endswith("." + name))]
        if not matches:
            from .registry import did_you_mean

            last = sorted({p.rsplit(".", 1)[-1] for p in paths})
            raise UserError(f"train.fsdp.keep_whole: no module named {name!r} in {type(model).__name__}.{did_you_mean(name, last)}")
        found += matches
    return found


def shard_model(root: nn.Module, model: nn.Module, config: FSDPConfig, world_size: int, device: torch.device) -> list[nn.Module]:
    """Applies FSDP2 to the prompted ``model`` inside ``root`` (the module that is called, e.g. a
    :class:`StepModule`): each block, then ``root`` with the prompt parameters left out; returns the block units."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    placed = getattr(model, "backbone_is_placed", lambda: False)()
    if placed or any(type(p.detach()) is not torch.Tensor for p in model.parameters()):
        raise UserError(
            "train.distributed: fsdp shards plain float weights, and this model's frozen weights are quantized or "
            "spread by a device map (model.quantization / model.device_map); use one or the other: fsdp over several "
            "processes, or quantization / a device map in one process (train.distributed: auto)"
        )
    if config.cpu_offload and device.type != "cuda":
        raise UserError(
            f"train.fsdp.cpu_offload: the processes already run on the {device.type}; it offloads GPU weights to "
            f"the CPU, remove it"
        )
    units = shard_units(model, config.block_classes)
    mesh = init_device_mesh(device.type, (world_size,))
    offload = CPUOffloadPolicy() if config.cpu_offload else OffloadPolicy()
    # Left whole on every process: the prompts, scalar weights (CLIP's logit_scale), which FSDP cannot shard, and
    # the modules the config keeps whole.
    kept = set(model.prompt_parameters()) | {p for p in model.parameters() if p.dim() == 0}
    kept |= {p for module in whole_modules(model, config.keep_whole) for p in module.parameters()}
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=config.reshard_after_forward, offload_policy=offload, ignored_params=kept)
    fully_shard(root, mesh=mesh, reshard_after_forward=config.reshard_after_forward, offload_policy=offload, ignored_params=kept)
    return units


def ignore_frozen_in_ddp(step: StepModule) -> None:
    """Leaves every frozen parameter and every buffer out of DDP: nothing but the prompts is broadcast or reduced."""
    trainable = {id(p) for p in step.model.prompt_parameters()}
    names = [n for n, p in step.named_parameters() if id(p) not in trainable]
    names += [n for n, _ in step.named_buffers()]
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(step, names)


def local_bytes(tensors: Any) -> int:
    """Bytes this process holds of ``tensors`` (its shard of a sharded one)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        local = t.to_local() if isinstance(t, DTensor) else t
        total += local.numel() * local.element_size()
    return total
