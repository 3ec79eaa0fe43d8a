"""Several processes: data parallel through Accelerate's DDP, and FSDP2 or DeepSpeed ZeRO-3 sharding of the frozen
backbone.

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
- ``deepspeed``: DeepSpeed ZeRO-3 through ``accelerator.prepare(step, optimizer)``, for setups built on DeepSpeed.
  The same units (:func:`shard_units`) become ZeRO-3 leaf modules, whose weights DeepSpeed gathers together in the
  block's forward and again for its backward; every other weight, the prompts and heads included, is registered
  with the step (``register_external_parameter``), so it is whole for the whole step however a method reads it.
  Outside a step the prompts are partitioned like every weight: code that reads them there (prompt files, the
  training state) runs inside :func:`whole`. DeepSpeed owns the optimizer step: it averages the prompt gradients
  over the processes, clips them (``train.grad_clip``) and steps the trainer's optimizer over its flat fp32
  partitions, which is why the factored optimizers (Adafactor) are refused.

The engines hook into module calls, so a training or evaluation step runs as one call of :class:`StepModule`, whose
``forward`` is the model's own ``training_step`` / ``eval_step``. Code that computes with a block's submodules
directly (the exact fast paths) goes through :func:`call_through`, so the block's sharded weights are gathered by
the engine's own hooks (FSDP's, or ZeRO-3's for a leaf module).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn

from .errors import UserError
from .fingerprint import FINGERPRINT_KEY

Mode = Literal["none", "ddp", "fsdp", "deepspeed"]


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


@dataclass
class DeepSpeedConfig:
    """The ``train.deepspeed`` section (used with ``train.distributed: deepspeed``): DeepSpeed ZeRO stage 3.

    Only stage 3 partitions the frozen weights; stages 1 and 2 partition the optimizer state and gradients, which
    in prompt tuning exist for the prompts alone (a few KB), so they would save nothing over ``ddp``.

    Attributes:
        block_classes: class names of the modules whose weights ZeRO-3 gathers as one (its leaf modules), as
            ``train.fsdp.block_classes``. Empty: every entry of each list of identical blocks (:func:`shard_units`).
    """

    block_classes: list[str] = field(default_factory=list)


DEEPSPEED_EXTRA = "pip install 'prompttune[deepspeed]'"


def require_deepspeed() -> None:
    """Raises a :class:`UserError` naming the extra to install when DeepSpeed cannot be imported."""
    try:
        import deepspeed  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"train.distributed: deepspeed needs the deepspeed package, which cannot be imported ({e}); install it "
            f"with `DS_BUILD_OPS=0 {DEEPSPEED_EXTRA}`, or use train.distributed: fsdp, which shards the frozen "
            f"weights the same way"
        ) from None


def zero3_config(batch_size: int, grad_accum_steps: int, grad_clip: float | None) -> dict[str, Any]:
    """The DeepSpeed config of a ZeRO-3 run: the trainer's batch, accumulation and clipping, and no precision
    setting (DeepSpeed's bf16 / fp16 would cast the prompts with the model; they stay float32).

    The trainer owns the accumulation window (``managed_gradient_accumulation: false``: one ``engine.step()`` per
    window, whatever its length) and weights each loss itself, so DeepSpeed's loss scaling by the window length is
    turned off at each ``engine.backward``. No weight is persistent (``stage3_param_persistence_threshold: 0``), none
    is kept for its next use (``stage3_max_reuse_distance: 0``) and none is fetched ahead
    (``stage3_prefetch_bucket_size: 0``): a block's weights are gathered for its forward, freed after it and
    gathered again for its backward, as ``train.fsdp.reshard_after_forward: true`` does, so between steps and after
    an evaluation each process holds ``1 / N`` of every weight (with the defaults, DeepSpeed keeps the weights it
    prefetched for a next step that an evaluation does not take).
    """
    return {
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "managed_gradient_accumulation": False,
        "gradient_clipping": grad_clip or 0.0,
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,
            "stage3_max_reuse_distance": 0,
            "stage3_prefetch_bucket_size": 0,
        },
        # The trainer's optimizers are elementwise (Adam, AdamW, SGD); the factored ones are refused.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**62,
    }


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
    """Whether FSDP2 or DeepSpeed ZeRO-3 (whose parameters carry a ``ds_id``) shards ``module`` or a module inside it."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules()) or any(hasattr(p, "ds_id") for p in module.parameters())


def shard_units(model: nn.Module, block_classes: list[str] | tuple[str, ...] = (), section: str = "fsdp") -> list[nn.Module]:
    """The modules FSDP shards one by one: the frozen transformer blocks of ``model``.

    With ``block_classes`` every module of those class names; otherwise every entry of each ``nn.ModuleList`` / ``nn.Sequential`` of two
    or more modules of one class holding parameters (timm ViT ``blocks``, CLIP ``resblocks`` of both towers, HF
    ``layers`` / ``layer`` / ``h`` / ``block``). Prompt modules are never units, and a unit inside another is
    dropped (the outer one holds it). ``section`` is the config section named in the error (``fsdp``,
    ``deepspeed``).

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
            f"train.{section}: {what} found in {type(model).__name__} to shard; set train.{section}.block_classes to the class "
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


def check_plain_weights(model: nn.Module, mode: str) -> None:
    """Raises a :class:`UserError` when ``model``'s frozen weights are quantized or placed by a device map: the
    sharding engines (``mode``) partition plain float weights."""
    placed = getattr(model, "backbone_is_placed", lambda: False)()
    if placed or any(type(p.detach()) is not torch.Tensor for p in model.parameters()):
        raise UserError(
            f"train.distributed: {mode} shards plain float weights, and this model's frozen weights are quantized or "
            f"spread by a device map (model.quantization / model.device_map); use one or the other: {mode} over "
            f"several processes, or quantization / a device map in one process (train.distributed: auto)"
        )


def shard_model(root: nn.Module, model: nn.Module, config: FSDPConfig, world_size: int, device: torch.device) -> list[nn.Module]:
    """Applies FSDP2 to the prompted ``model`` inside ``root`` (the module that is called, e.g. a
    :class:`StepModule`): each block, then ``root`` with the prompt parameters left out; returns the block units."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    check_plain_weights(model, "fsdp")
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


def prepare_deepspeed(accelerator: Any, step: StepModule, optimizer: torch.optim.Optimizer, config: DeepSpeedConfig) -> nn.Module:
    """Puts ``step`` (the prompted model's step) and ``optimizer`` (over its prompts) under DeepSpeed ZeRO-3 through
    ``accelerator.prepare``; returns the engine, which is what is called, and which runs ``backward`` and ``step``.

    Each block (:func:`shard_units`) is a ZeRO-3 leaf module: its pre-forward hook gathers all its weights, so the
    fast paths that compute with a block's submodules inside :func:`call_through` find them whole. Every weight
    outside the blocks (embeddings, norms, prompts, heads) is an external parameter of ``step``: gathered for the
    step however it is read, then partitioned again.
    """
    import deepspeed
    from deepspeed.utils import set_z3_leaf_modules_by_name

    model = step.model
    check_plain_weights(model, "deepspeed")
    # Prompt files record the backbone's weights fingerprint; read it now, while the weights are whole.
    fingerprint = model.backbone_fingerprint() if hasattr(model, "backbone_fingerprint") else None
    if fingerprint is not None:
        model.record_in_prompt_files(**{FINGERPRINT_KEY: fingerprint})
    units = shard_units(model, config.block_classes, "deepspeed")
    names = {id(m): n for n, m in step.named_modules()}
    set_z3_leaf_modules_by_name(step, [names[id(u)] for u in units])
    in_units = {id(p) for u in units for p in u.parameters()}
    for p in step.parameters():
        if id(p) not in in_units:
            deepspeed.zero.register_external_parameter(step, p)
    engine, _ = accelerator.prepare(step, optimizer)
    return engine


def whole(params: list[nn.Parameter], mode: str, write: bool = False) -> Any:
    """A context in which ``params`` are whole on every process: ZeRO-3 gathers them on entry and partitions them
    again on exit (every process must enter it), keeping what rank 0 wrote into them when ``write``; a no-op for the
    other engines, which keep the prompts whole."""
    if mode != "deepspeed":
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if write else None)


def _flat_partitions(engine: Any, group: int) -> list[torch.Tensor]:
    """This process's flat fp32 partitions of optimizer group ``group`` (ZeRO-3 steps the optimizer over them)."""
    zero = engine.optimizer
    return [flat for i, flat in enumerate(zero.fp32_partitioned_groups_flat) if zero.sub_group_to_group_id[i] == group]


def zero3_optimizer_state(engine: Any, group_params: list[list[nn.Parameter]]) -> dict[str, Any]:
    """The state dict a 1-process optimizer over ``group_params`` would give, gathered from the ZeRO-3 ``engine``'s
    flat fp32 partitions (every process calls it: each state tensor is one all-gather).

    ZeRO-3 steps the optimizer over flat partitions of each group's prompts; the per-element state (Adam's moments,
    SGD's momentum) is cut back into each prompt's shape, and the per-group values (the step count) are given to
    each prompt, as a plain optimizer keeps them.
    """
    from deepspeed.utils import safe_get_full_optimizer_state

    optimizer = engine.optimizer.optimizer
    state: dict[int, dict[str, Any]] = {}
    groups = []
    index = 0
    for g, (group, params) in enumerate(zip(optimizer.param_groups, group_params)):
        shared = optimizer.state.get(_flat_partitions(engine, g)[0], {})
        first = index
        for p in params:
            entry = {}
            for key, value in shared.items():
                if _per_element(value):
                    entry[key] = safe_get_full_optimizer_state(p, key).view(p.ds_shape).cpu()
                else:
                    entry[key] = value.clone() if isinstance(value, torch.Tensor) else value
            if entry:
                state[index] = entry
            index += 1
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": list(range(first, index))})
    return {"state": state, "param_groups": groups}


def _per_element(value: Any) -> bool:
    """Whether an optimizer state value holds one number per element (moments, momentum), not one per group."""
    return isinstance(value, torch.Tensor) and value.dim() > 0


def _fresh(value: Any, flat: torch.Tensor) -> Any:
    return torch.zeros_like(flat) if _per_element(value) else value.clone() if isinstance(value, torch.Tensor) else value


def load_zero3_optimizer_state(engine: Any, group_params: list[list[nn.Parameter]], saved: dict[str, Any]) -> None:
    """Puts a state dict of :func:`zero3_optimizer_state` (or of a plain optimizer over the same prompts) into
    ZeRO-3's partitions: the fp32 master copy of each prompt, from its module value, which every process must hold
    whole (inside :func:`whole`), and the optimizer state. Each process writes its own partition."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    optimizer = engine.optimizer.optimizer
    index = 0
    for g, params in enumerate(group_params):
        for p in params:
            safe_set_full_fp32_param(p, p.data.detach().reshape(-1))
        entries = [saved["state"].get(index + i, {}) for i in range(len(params))]
        if entries and entries[0]:
            # The state a first step would create (per-element tensors, the shared step count), then each prompt's
            # part of each per-element tensor.
            for flat in _flat_partitions(engine, g):
                optimizer.state[flat] = {k: _fresh(v, flat) for k, v in entries[0].items()}
            for p, entry in zip(params, entries):
                for key, value in entry.items():
                    if _per_element(value):
                        safe_set_full_optimizer_state(p, value.to(p.ds_tensor.device).reshape(-1), key)
        index += len(params)


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
