"""What the sharding engines share: the ``train.fsdp`` / ``train.deepspeed`` sections (defined, free of torch, in
:mod:`promptcore.train_config`), the step as one module call, the shard units and FSDP2 sharding of the frozen
backbone.

The engines themselves (what differs between one process, DDP, FSDP2 and DeepSpeed ZeRO-3) live in
:mod:`promptcore.engines`, one file each. Under ``fsdp`` torch's FSDP2 (``fully_shard``) is applied the way
Accelerate's FSDP plugin v2 applies it: each transformer block (ViT block, CLIP resblock, decoder layer, ...) is
one unit, then the root takes the remaining frozen weights (embeddings, norms). Each process keeps ``1 / N`` of the
frozen weights and gathers one block at a time in its forward (and again for the backward through it). The prompts
and heads are left out of sharding (``ignored_params``): they are a few KB, so each process keeps them whole, the
optimizer and the prompt files see plain tensors, and the engine sums their gradients in the step's one collective
(frozen weights have none to reduce-scatter). Scalar weights, which FSDP cannot shard (CLIP's ``logit_scale``), and
the modules ``train.fsdp.keep_whole`` names stay whole too. A causal LM's token embedding and LM head may instead be
sharded by vocabulary rows, never gathered (``train.fsdp.shard_vocabulary``, :func:`vocabulary_layers_to_shard`,
:mod:`promptcore.vocab_parallel`). Under ``deepspeed`` the same units
(:func:`shard_units`) become ZeRO-3 leaf modules. A model built for sharded loading (whole on rank 0, on the meta device on the other
processes: ``train.fsdp.sharded_loading``) is sharded the same way and then filled in from rank 0
(:func:`load_sharded`).

The engines hook into module calls, so a training or evaluation step runs as one call of :class:`StepModule`, whose
``forward`` is the model's own ``training_step`` / ``eval_step``. Code that computes with a block's submodules
directly (the exact fast paths) goes through :func:`call_through`, so the block's sharded weights are gathered by
the engine's own hooks (FSDP's, or ZeRO-3's for a leaf module).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .errors import UserError
from .memory import tensor_bytes
from .train_config import DeepSpeedConfig, FSDPConfig  # noqa: F401 - the sections, defined free of torch there
from .vocab_parallel import check_vocabulary_layers, shard_vocabulary, vocabulary_shards

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


def on_main(fn: Callable[[], None], is_main: bool, world_size: int) -> None:
    """Runs ``fn`` on the main process; a user error it raises is raised on every process (as a
    :class:`~promptcore.runs.RunDirError`: none waits for the main one in a barrier it will never reach)."""
    import torch.distributed as dist

    from .runs import RunDirError

    error = None
    if is_main:
        try:
            fn()
        except UserError as e:
            if world_size == 1:
                raise
            error = str(e)
    if world_size > 1:
        shared = [error]
        dist.broadcast_object_list(shared, src=0)
        if shared[0] is not None:
            raise RunDirError(shared[0])


def gather_objects(obj: Any, world_size: int) -> list[Any]:
    """``obj`` of every process, by rank (pickled through the process group; ``[obj]`` in one process)."""
    if world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def check_same_frozen_weights(model: nn.Module, params: list[nn.Parameter], world_size: int) -> None:
    """Frozen weights are never synchronised, so they must match on every process from the start: compares a
    per-tensor checksum of every parameter and buffer of ``model`` but the prompt ``params`` (a randomly initialised
    backbone built without a common seed would silently differ). Every process calls it.

    Raises:
        UserError: naming the weights that differ.
    """
    import torch.distributed as dist

    prompt_ids = {id(p) for p in params}
    frozen = [(n, t) for n, t in [*model.named_parameters(), *model.named_buffers()] if id(t) not in prompt_ids]
    if not frozen:
        return
    sums = torch.stack([checksum(t.detach()) for _, t in frozen])
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    differ = [name for (name, _), a, b in zip(frozen, low.tolist(), high.tolist()) if a != b]
    if differ:
        raise UserError(
            f"frozen weights differ between the {world_size} processes ({', '.join(differ[:5])}"
            f"{' ...' if len(differ) > 5 else ''}); build the model identically on every process: load the same "
            f"pretrained weights, or seed (promptcore.trainer.seed_everything) before building a random one"
        )


def checksum(tensor: torch.Tensor) -> torch.Tensor:
    """The float64 sum of ``tensor``'s values; of a quantized one (a tensor subclass: torchao's int8, nf4), the sum of
    the sums of the tensors it stores (data and scales), which it cannot sum itself."""
    if type(tensor) is not torch.Tensor and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        stored = [getattr(tensor, name) for name in names]
        return torch.stack([checksum(t) for t in stored if isinstance(t, torch.Tensor)]).sum()
    return tensor.to(torch.float64).sum()


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
    ``fn(*args)``, and it is called so while ``torch.compile`` traces a block without hooks (the compiler cannot
    follow the swap of ``forward``, which changes nothing there). The hooks are read from ``nn.Module``'s private
    ``_forward_pre_hooks`` / ``_forward_hooks`` (torch 2.14.1, ``torch/nn/modules/module.py``; public replacement:
    none); ``tests/promptcore/test_compile.py`` runs VPT-deep's fast path compiled through here.
    """
    if torch.compiler.is_compiling() and not (module._forward_pre_hooks or module._forward_hooks):
        return fn(*args)
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


def check_shardable_weights(model: nn.Module, mode: str, world_size: int = 1) -> None:
    """Raises a :class:`UserError` when the sharding engine ``mode`` (``fsdp``, ``deepspeed``) cannot partition
    ``model``'s frozen weights over ``world_size`` processes.

    FSDP2 shards plain float weights and torchao's ``NF4Tensor`` (``model.quantization: nf4``), whose type carries
    FSDP2's all-gather hooks (``fsdp_pre_all_gather`` / ``fsdp_post_all_gather``: the 4-bit data and its scales
    travel, and each process holds its rows' share of them); an nf4 weight needs rows and scale blocks that divide
    evenly among the processes. Other quantized types (torchao's int8, optimum-quanto's int4) have no such hooks,
    DeepSpeed's ZeRO-3 flattens weights into float partitions and takes no quantized type, and a model spread by a
    device map is already placed.
    """
    from .quantization import NF4_WEIGHTS_PER_SCALE, is_nf4

    placed = getattr(model, "backbone_is_placed", lambda: False)()
    quantized = {n: type(p.detach()).__name__ for n, p in model.named_parameters() if type(p.detach()) is not torch.Tensor}
    nf4 = {n for n, p in model.named_parameters() if is_nf4(p.detach())}
    if placed or (quantized and (mode != "fsdp" or set(quantized) != nf4)):
        found = "spread by a device map" if placed else f"quantized ({', '.join(sorted(set(quantized.values())))})"
        shards = (
            "plain float weights and nf4 weights (model.quantization: nf4)" if mode == "fsdp"
            else "plain float weights (ZeRO-3 flattens each into float partitions, which no quantized type survives)"
        )
        raise UserError(
            f"train.distributed: {mode} shards {shards}, and this model's frozen weights are {found} "
            f"(model.quantization / model.device_map); use model.quantization: nf4 under train.distributed: fsdp, any "
            f"quantization under ddp (each process holds the whole model), or a device map in one process "
            f"(train.distributed: auto)"
        )
    for name in sorted(nf4):
        weight = model.get_parameter(name)
        if weight.shape[0] % world_size or weight.numel() % (NF4_WEIGHTS_PER_SCALE * world_size):
            raise UserError(
                f"train.distributed: fsdp cannot shard the nf4 weight {name} {tuple(weight.shape)} over {world_size} "
                f"processes: each needs a whole number of its rows and of its {NF4_WEIGHTS_PER_SCALE}-value scale blocks "
                f"({weight.numel() // NF4_WEIGHTS_PER_SCALE} blocks); launch a number of processes that divides both, or "
                f"use train.distributed: ddp"
            )


def on_mesh_device(model: nn.Module, device: torch.device) -> None:
    """Moves ``model``'s nf4 weights to ``device``, the device FSDP2 takes from its mesh (``cpu``, without an index).

    torchao's ``NF4Tensor`` keeps the index of the device it was moved to (``cpu:0``, a CPU process's device), where
    a plain tensor drops it; FSDP2 then finds the weight on another device and moves it itself, as a new
    ``nn.Parameter`` that requires a gradient, which the frozen 4-bit weight cannot have.
    """
    from .quantization import is_nf4

    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if is_nf4(p) and p.device != device:
                torch.utils.swap_tensors(p, nn.Parameter(p.to(device), requires_grad=False))


def shard_model(root: nn.Module, model: nn.Module, config: FSDPConfig, world_size: int, device: torch.device) -> list[nn.Module]:
    """Applies FSDP2 to the prompted ``model`` inside ``root`` (the module that is called, e.g. a
    :class:`StepModule`): each block, then ``root`` with the prompt parameters left out; returns the block units.
    The token embedding and LM head ``train.fsdp.shard_vocabulary`` picks (:func:`vocabulary_layers_to_shard`)
    are first replaced by their vocabulary-parallel versions, which FSDP leaves alone."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    check_shardable_weights(model, "fsdp", world_size)
    if config.cpu_offload and device.type != "cuda":
        raise UserError(
            f"train.fsdp.cpu_offload: the processes already run on the {device.type}; it offloads GPU weights to "
            f"the CPU, remove it"
        )
    units = shard_units(model, config.block_classes)
    mesh = init_device_mesh(device.type, (world_size,))
    on_mesh_device(model, torch.device("cpu") if device.type == "cpu" else device)
    offload = CPUOffloadPolicy() if config.cpu_offload else OffloadPolicy()
    layers = vocabulary_layers_to_shard(model, config, world_size, units)
    if layers is not None:
        import torch.distributed as dist

        shard_vocabulary(model, *layers, world_size, dist.get_rank())
    # Left whole on every process: the prompts, scalar weights (CLIP's logit_scale), which FSDP cannot shard, and
    # the modules the config keeps whole. Left to themselves: the vocabulary shards, already this process's rows.
    kept = set(model.prompt_parameters()) | {p for p in model.parameters() if p.dim() == 0}
    kept |= {p for module in whole_modules(model, config.keep_whole) for p in module.parameters()}
    kept |= {p for module in vocabulary_shards(model) for p in module.parameters()}
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=config.reshard_after_forward, offload_policy=offload, ignored_params=kept)
    fully_shard(root, mesh=mesh, reshard_after_forward=config.reshard_after_forward, offload_policy=offload, ignored_params=kept)
    return units


def vocabulary_layers_to_shard(model: nn.Module, config: FSDPConfig, world_size: int, units: list[nn.Module]) -> tuple[nn.Module, nn.Module] | None:
    """The token embedding and LM head of ``model`` that ``train.fsdp.shard_vocabulary`` shards by vocabulary
    (:mod:`promptcore.vocab_parallel`) over ``world_size`` processes, or None.

    A model offers them through ``model.vocabulary_layers()`` (text models of ``model.task: causal_lm``), which
    raises a :class:`UserError` saying why where it cannot. ``auto`` shards them when it can and their weights (the
    embedding, and the head unless tied) are at least twice the largest of the block ``units``: FSDP gathers one
    unit at a time, so a vocabulary matrix larger than a block, gathered whole, sets the peak, and sharding it
    saves the difference; below twice a block that saving is small next to the activations it sends (the tiny
    test models, whose vocabulary is about one block, stay unsharded). A module named in ``train.fsdp.keep_whole``
    is kept whole.

    Raises:
        UserError: ``shard_vocabulary: true`` for a model that cannot be sharded by vocabulary (the reason named).
    """
    if config.shard_vocabulary is False or world_size == 1:
        return None
    try:
        offer = getattr(model, "vocabulary_layers", None)
        if offer is None:
            raise UserError(
                f"train.fsdp.shard_vocabulary: {type(model).__name__} has no token embedding and LM head to shard (text "
                f"models of model.task: causal_lm have); set train.fsdp.shard_vocabulary: auto or false"
            )
        embedding, head = offer()
        check_vocabulary_layers(embedding, head)
        whole = {id(m) for m in whole_modules(model, config.keep_whole)}
        if id(embedding) in whole or id(head) in whole:
            raise UserError(
                "train.fsdp.shard_vocabulary: train.fsdp.keep_whole names the token embedding or the LM head, which "
                "vocabulary sharding splits; drop it from keep_whole, or set train.fsdp.shard_vocabulary: auto or false"
            )
    except UserError:
        if config.shard_vocabulary is True:
            raise
        return None
    if config.shard_vocabulary == "auto":
        vocabulary = tensor_bytes({id(p): p for p in (embedding.weight, head.weight)}.values())
        if vocabulary < 2 * max(tensor_bytes(unit.parameters()) for unit in units):
            return None
    return embedding, head


def local_bytes(tensors: Any) -> int:
    """Bytes this process holds of ``tensors`` (its shard of a sharded one; the 4-bit data and scales of an nf4
    one): :func:`promptcore.memory.tensor_bytes`."""
    return tensor_bytes(tensors)


# ----- sharded loading -----------------------------------------------------------------------------------------------
SHARDED_LOADING_ATTR = "promptcore_sharded_loading"
"""The attribute a loader sets (``True``) on a frozen model it built for sharded loading: whole on rank 0, on the
meta device on every other process (:func:`textpt.sharded_loading`). :func:`load_sharded` fills in the others."""


def uses_sharded_loading(distributed: str, fsdp: FSDPConfig, world_size: int, quantization: str | None = None) -> bool:
    """Whether a loader should build the model of a run for sharded loading: ``train.distributed: fsdp`` over
    several processes with ``train.fsdp.sharded_loading`` ``auto`` or ``true``, and frozen weights that are not
    quantized (``model.quantization``): every process quantizes the whole model, then FSDP shards it.

    Raises:
        UserError: ``train.fsdp.sharded_loading: true`` with a ``quantization``.
    """
    if quantization is not None and fsdp.sharded_loading is True and distributed == "fsdp":
        raise UserError(
            f"train.fsdp.sharded_loading: true, but model.quantization: {quantization} quantizes the whole model on every "
            f"process before FSDP shards it; set train.fsdp.sharded_loading: auto or false"
        )
    return distributed == "fsdp" and world_size > 1 and fsdp.sharded_loading in (True, "auto") and quantization is None


def loads_sharded(model: nn.Module) -> bool:
    """Whether ``model`` holds a module built for sharded loading (:data:`SHARDED_LOADING_ATTR`)."""
    return any(getattr(m, SHARDED_LOADING_ATTR, False) for m in model.modules())


def check_sharded_loading(model: nn.Module, engine: type, fsdp: FSDPConfig, world_size: int) -> bool:
    """Whether the trainer's ``model`` was built for sharded loading, checked against the run's ``engine`` (a class
    of :mod:`promptcore.engines`; those that can fill it in have ``loads_sharded``) and ``train.fsdp``.

    Raises:
        UserError: a model built for sharded loading under an engine that cannot fill it in, or
            ``train.fsdp.sharded_loading: true`` with a model built whole on every process.
    """
    lazy = loads_sharded(model)
    if lazy and not (getattr(engine, "loads_sharded", False) and world_size > 1):
        raise UserError(
            f"{type(model).__name__} was built for sharded loading (whole on rank 0, on the meta device elsewhere), "
            f"which only train.distributed: fsdp over several processes fills in; this run uses {engine.__name__} with "
            f"{world_size} process(es). Build the model without sharded loading (textpt.sharded_loading(False)), or "
            f"launch several processes with train.distributed: fsdp"
        )
    if fsdp.sharded_loading is True and world_size > 1 and not lazy:
        raise UserError(
            f"train.fsdp.sharded_loading: true, but {type(model).__name__} was built whole on every process: sharded "
            f"loading covers Hugging Face text models (textpt); set train.fsdp.sharded_loading: auto or false"
        )
    return lazy


def _structure(module: nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [(n, tuple(t.shape), str(t.dtype)) for n, t in [*module.named_parameters(), *module.named_buffers()]]


def load_sharded(root: nn.Module, model: nn.Module, config: FSDPConfig, world_size: int, device: torch.device) -> list[nn.Module]:
    """Shards a model built for sharded loading and fills in every process's shards from rank 0's whole model;
    returns the block units (as :func:`shard_model`). Every process calls it.

    Rank 0 holds ``model`` whole (loaded or drawn as without sharding), the other processes the same modules on the
    meta device. After FSDP2 sharding (:func:`shard_model`) the others allocate their shards (``to_empty``); then
    rank 0 broadcasts its weights one at a time and each process copies its shard of each into place, so no
    process but rank 0 holds more than its shards and one whole weight in flight (Accelerate's
    ``cpu_ram_efficient_loading`` sends rank 0's weights the same way). Every parameter and buffer is sent, the
    non-persistent buffers (rotary ``inv_freq``), the prompts and the weights kept whole included; tied weights are
    one parameter, sent once. A weight sharded by vocabulary keeps its rows of what rank 0 sends.

    Raises:
        UserError: the modules built on another process differ from rank 0's (names, shapes or dtypes).
    """
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    rank = dist.get_rank()
    shared = [_structure(root) if rank == 0 else None]
    dist.broadcast_object_list(shared, src=0)
    ours = _structure(root)
    if ours != shared[0]:
        first = next((a, b) for a, b in zip([*ours, None], [*shared[0], None]) if a != b)
        raise UserError(
            f"train.fsdp.sharded_loading: the model built on process {rank} differs from rank 0's (here {first[0]}, on "
            f"rank 0 {first[1]}): the meta-device build must match the loaded one; set train.fsdp.sharded_loading: false"
        )
    # Rank 0's whole weights, held here while sharding replaces the module's parameters with their shards.
    whole = {name: t.detach() for name, t in [*root.named_parameters(), *root.named_buffers()]} if rank == 0 else {}
    units = shard_model(root, model, config, world_size, device)
    for p in root.parameters():
        if not isinstance(p, DTensor) and p.device != device:
            # Kept whole (the prompts): moved as the trainer moves them, the same objects (the trainer holds them).
            torch.utils.swap_tensors(p, nn.Parameter(torch.empty_like(p, device=device) if p.is_meta else p.to(device), p.requires_grad))
    if rank != 0:
        root.to_empty(device=device)
    vocabulary = {id(m.weight): m for m in vocabulary_shards(root)}
    with torch.no_grad():
        for name, target in [*root.named_parameters(), *root.named_buffers()]:
            # a sharded parameter's shape is the whole one; a vocabulary shard's its rows
            shape = (vocabulary[id(target)].vocab_size, target.shape[1]) if id(target) in vocabulary else target.shape
            sent = whole.pop(name).to(device) if rank == 0 else torch.empty(shape, dtype=target.dtype, device=device)
            dist.broadcast(sent, src=0)
            if isinstance(target, DTensor):
                # This process's shard, cut from its own copy as FSDP2 cut it: DTensor's Shard(dim) is torch.chunk's
                # piece of this rank (none for a rank past the last piece). distribute_tensor would first copy every
                # piece, padded: a second whole weight.
                (placement,) = target.placements
                pieces = torch.chunk(sent, world_size, dim=placement.dim)
                piece = pieces[rank] if rank < len(pieces) else sent.narrow(placement.dim, 0, 0)
                local = target.to_local()
                if piece.shape != local.shape:
                    raise RuntimeError(f"sharded loading of {name}: shard {tuple(local.shape)}, cut {tuple(piece.shape)}")
                local.copy_(piece)
            elif id(target) in vocabulary:  # sharded by vocabulary: this process's rows
                target.copy_(sent[vocabulary[id(target)].start : vocabulary[id(target)].stop])
            else:
                target.copy_(sent)
            del sent
    return units
