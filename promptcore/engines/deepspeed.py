"""``train.distributed: deepspeed``: DeepSpeed ZeRO-3 through ``accelerator.prepare(step, optimizer)``, for setups
built on DeepSpeed (the ``prompttune[deepspeed]`` extra, the ``train.deepspeed`` section).

The blocks (:func:`promptcore.distributed.shard_units`) become ZeRO-3 leaf modules, whose weights DeepSpeed gathers
together in the block's forward and again for its backward; every other weight, the prompts and heads included, is
registered with the step (``register_external_parameter``), so it is whole for the whole step however a method reads
it. Outside a step the prompts are partitioned like every weight: prompt files and the training state read them
inside :meth:`DeepSpeedEngine.whole`. DeepSpeed owns the backward and the optimizer step: it averages the prompt
gradients over the processes, clips them (``train.grad_clip``) and steps the trainer's optimizer over its flat fp32
partitions, which is why the factored optimizers (Adafactor) are refused.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch import nn

from ..distributed import StepModule, check_shardable_weights, require_deepspeed, shard_units, zero3_config
from ..errors import UserError
from ..fingerprint import FINGERPRINT_KEY
from ..library_notes import hold_back_deepspeed_cpu_note
from .base import Engine, reset_accelerate_state


def prepare_deepspeed(accelerator: Any, step: StepModule, optimizer: torch.optim.Optimizer, block_classes: list[str]) -> nn.Module:
    """Puts ``step`` and ``optimizer`` (over its prompts) under ZeRO-3 through ``accelerator.prepare``; returns the
    DeepSpeed engine, which is what is called, and which runs ``backward`` and ``step``."""
    import deepspeed
    from deepspeed.utils import set_z3_leaf_modules_by_name

    model = step.model
    check_shardable_weights(model, "deepspeed")
    # Prompt files record the backbone's weights fingerprint; read it now, while the weights are whole.
    fingerprint = model.backbone_fingerprint() if hasattr(model, "backbone_fingerprint") else None
    if fingerprint is not None:
        model.record_in_prompt_files(**{FINGERPRINT_KEY: fingerprint})
    units = shard_units(model, block_classes, "deepspeed")
    names = {id(m): n for n, m in step.named_modules()}
    set_z3_leaf_modules_by_name(step, [names[id(u)] for u in units])
    in_units = {id(p) for u in units for p in u.parameters()}
    for p in step.parameters():
        if id(p) not in in_units:
            deepspeed.zero.register_external_parameter(step, p)
    engine, _ = accelerator.prepare(step, optimizer)
    return engine


def flat_partitions(engine: Any, group: int) -> list[torch.Tensor]:
    """This process's flat fp32 partitions of optimizer group ``group`` (ZeRO-3 steps the optimizer over them).

    Private API, read from deepspeed 0.19.8 (``deepspeed/runtime/zero/stage3.py``, ``DeepSpeedZeroOptimizer_Stage3``):
    ``fp32_partitioned_groups_flat`` and ``sub_group_to_group_id``. Public replacement: ``deepspeed.utils``'
    ``safe_get_full_optimizer_state`` / ``safe_set_full_optimizer_state`` cover per-element state but not the
    per-group values (Adam's step count), nor creating the state before a first step. ``tests/promptcore/
    test_engines.py`` fails when the names disappear.
    """
    zero = engine.optimizer
    return [flat for i, flat in enumerate(zero.fp32_partitioned_groups_flat) if zero.sub_group_to_group_id[i] == group]


def _per_element(value: Any) -> bool:
    """Whether an optimizer state value holds one number per element (moments, momentum), not one per group."""
    return isinstance(value, torch.Tensor) and value.dim() > 0


def _fresh(value: Any, flat: torch.Tensor) -> Any:
    return torch.zeros_like(flat) if _per_element(value) else value.clone() if isinstance(value, torch.Tensor) else value


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
        shared = optimizer.state.get(flat_partitions(engine, g)[0], {})
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


def load_zero3_optimizer_state(engine: Any, group_params: list[list[nn.Parameter]], saved: dict[str, Any]) -> None:
    """Puts a state dict of :func:`zero3_optimizer_state` (or of a plain optimizer over the same prompts) into
    ZeRO-3's partitions: the fp32 master copy of each prompt, from its module value, which every process must hold
    whole (inside :meth:`DeepSpeedEngine.whole`), and the optimizer state. Each process writes its own partition."""
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
            for flat in flat_partitions(engine, g):
                optimizer.state[flat] = {k: _fresh(v, flat) for k, v in entries[0].items()}
            for p, entry in zip(params, entries):
                for key, value in entry.items():
                    if _per_element(value):
                        safe_set_full_optimizer_state(p, value.to(p.ds_tensor.device).reshape(-1), key)
        index += len(params)


def without_shared_memory_kernel() -> None:
    """CPU processes: DeepSpeed's collectives go through gloo, without DeepSpeed's shared-memory all-reduce kernel.

    DeepSpeed compiles that kernel (a C++ extension, with ninja and the system compiler) when a CPU process group
    starts for the first time on a machine, and again whenever its build came from another ninja: about a minute of
    two cores before the first step, and an error where no compiler is installed. The collectives are the same
    operations over gloo (the equality tests of tests/promptcore/test_deepspeed.py run this way).
    Private API (deepspeed 0.19.8): ``deepspeed.comm.torch.build_shm_op`` builds the kernel only when
    ``deepspeed.ops.__compatible_ops__`` says it is compatible. Public replacement: none.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def forget_zero3_model_building() -> None:
    """Accelerate's DeepSpeed plugin registers its ZeRO-3 config with transformers (``HfDeepSpeedConfig``, a
    process-wide reference that the plugin keeps alive), and from then on transformers builds every model of the
    process partitioned under ``deepspeed.zero.Init``: a later model of the same process (a second run from Python,
    the next command of a script) fails to load ("Cannot copy out of meta tensor"). The toolkit builds its model
    before the engine and partitions it in ``deepspeed.initialize``, so the registration is dropped at once, with
    transformers' own ``unset_hf_deepspeed_config``."""
    integration = sys.modules.get("transformers.integrations.deepspeed")  # what the plugin registers through
    if integration is not None:
        integration.unset_hf_deepspeed_config()


class DeepSpeedEngine(Engine):
    several_processes = True
    training_only = True
    averages = True
    pads_eval = True
    shards_weights = True

    @classmethod
    def make_accelerator(cls, config: Any) -> Any:
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

        hold_back_deepspeed_cpu_note()
        require_deepspeed()
        reset_accelerate_state()
        plugin = DeepSpeedPlugin(hf_ds_config=zero3_config(config.batch_size, config.grad_accum_steps, config.grad_clip))
        # Accelerate takes its DeepSpeed path for accelerator processes only; CPU processes (DeepSpeed's CPU
        # accelerator) get it when given their backend, gloo.
        gloo = [] if torch.cuda.is_available() else [InitProcessGroupKwargs(backend="gloo")]
        if gloo:
            without_shared_memory_kernel()
        # Accelerate marks the whole process as DeepSpeed's: ``Accelerator(deepspeed_plugin=...)`` sets the environment
        # variable ACCELERATE_USE_DEEPSPEED, which every later Accelerator of the process follows (read from
        # accelerate 1.16.0, ``accelerate/accelerator.py``). A later Trainer of another engine must not inherit it.
        # Public replacement: none; a per-Accelerator setting would make this unnecessary.
        marked = os.environ.get("ACCELERATE_USE_DEEPSPEED")
        accelerator = Accelerator(deepspeed_plugin=plugin, kwargs_handlers=gloo)
        if marked is None:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        forget_zero3_model_building()
        if accelerator.distributed_type != "DEEPSPEED":
            raise UserError(
                f"train.distributed: deepspeed: Accelerate set up {accelerator.distributed_type} instead of DeepSpeed "
                f"(a launch that forces CPU processes, such as `accelerate launch --cpu`, keeps it from DeepSpeed); "
                f"launch with torchrun or `deepspeed --no_local_rank`"
            )
        return accelerator

    def prepare(self, step: StepModule, optimizer: torch.optim.Optimizer | None) -> None:
        assert optimizer is not None
        self.module = prepare_deepspeed(self.accelerator, step, optimizer, self.config.deepspeed.block_classes)

    def backward(self, loss: torch.Tensor) -> None:
        self.module.backward(loss, scale_wrt_gas=False)  # the trainer's weighting already counts the window

    def step(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], finite: torch.Tensor) -> None:
        # The trainer reads the flags of every multi-process step before this call, so a non-finite step never
        # gets here. DeepSpeed clips (train.grad_clip), steps over the partitions and zeroes the gradients.
        self.module.step()

    def optimizer_state(self, optimizer: torch.optim.Optimizer, group_params: list[list[nn.Parameter]]) -> dict[str, Any]:
        return zero3_optimizer_state(self.module, group_params)

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, group_params: list[list[nn.Parameter]], state: dict[str, Any]) -> None:
        load_zero3_optimizer_state(self.module, group_params, state)

    def whole(self, params: list[nn.Parameter], write: bool = False) -> Any:
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if write else None)

    def eval_call(self, model: Any, batch: Any) -> dict[str, torch.Tensor]:
        return self.module(batch, "eval")  # ZeRO-3's hooks gather the weights


__all__ = ["DeepSpeedEngine", "load_zero3_optimizer_state", "prepare_deepspeed", "zero3_optimizer_state"]
