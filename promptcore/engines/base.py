"""The engine protocol: what differs between one process, DDP, FSDP2 and DeepSpeed ZeRO-3 for the trainer.

An :class:`Engine` is picked by ``train.distributed`` (:func:`promptcore.engines.resolve_engine`) and owns, for one
run: the Accelerate object, the module a step calls (:class:`~promptcore.distributed.StepModule`, wrapped or
sharded as the engine needs), the backward, the one collective per step, the optimizer step, the optimizer state
out / in, the prompts made whole for reading or writing, the evaluation call and padding, and with ``train.compile``
the step under ``torch.compile`` (:meth:`Engine.compile`). The trainer reads the same for every engine; a new engine
is one subclass registered in :data:`promptcore.engines.ENGINES`.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..distributed import StepModule
from ..errors import UserError

if TYPE_CHECKING:
    from ..model import PromptedModel
    from ..train_config import TrainConfig


# The torch.compile backend of ``train.compile``; the tests swap in ``aot_eager`` (the same graphs, no code
# generation) where inductor's C++ compilation would take minutes on their CPUs.
COMPILE_BACKEND = "inductor"
# More compilations of the step than this after its first one (evaluation, a batch of one row) get one warning line.
RECOMPILE_WARNING = 4


def compile_module(module: nn.Module, mode: str) -> nn.Module:
    """``module`` under ``torch.compile`` with dynamic shapes: the batch size and the sequence lengths are symbols,
    so a short last batch or a longer text reuses the compiled code (a size of 1 still compiles once more: torch
    specialises on it)."""
    return torch.compile(module, backend=COMPILE_BACKEND, mode=None if mode == "default" else mode, dynamic=True)


def compile_counts() -> tuple[int, int]:
    """How many frames (functions, or their parts between graph breaks) torch.compile has compiled in this
    process, and how many times a function reached ``torch._dynamo.config.recompile_limit`` (it then runs
    uncompiled).

    Private API, read from torch 2.14.1 (``torch/_dynamo/convert_frame.py``): the counters
    ``torch._dynamo.utils.counters["frames"]["total"]`` and ``counters["unimplemented"]``, whose key for the limit
    starts "Dynamo recompile limit exceeded". Public replacement: none that counts without logging;
    ``tests/promptcore/test_compile.py`` fails when the names disappear.
    """
    from torch._dynamo.utils import counters

    limits = sum(n for key, n in counters["unimplemented"].items() if key.startswith("Dynamo recompile limit exceeded"))
    return counters["frames"]["total"], limits


def reset_accelerate_state() -> None:
    """Gives the next ``Accelerator`` a clean process-wide state.

    Accelerate keeps its state in singletons; each Trainer starts from a clean one so several trainers (with
    different precisions or engines) can run in one process. An existing process group is kept.

    Private API, read from accelerate 1.16.0 (``accelerate/state.py``): ``AcceleratorState._reset_state``. Public
    replacement: none yet; Accelerate's own tests call the same method
    (``accelerate.test_utils.testing.AccelerateTestCase.tearDown``). ``tests/promptcore/test_engines.py`` fails
    when the name disappears.
    """
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


class Engine:
    """One process, and the base of every engine: plain autograd and a plain optimizer step.

    Subclasses override what their wrapper does differently. Class attributes:

    Attributes:
        several_processes: runs over several processes and refuses a 1-process run (DDP, FSDP, DeepSpeed); an
            engine without it trains in one process only.
        training_only: with nothing to train (evaluation only) the run uses the plain engine instead.
        averages: its backward averages the prompt gradients over the processes (DDP, DeepSpeed); the trainer then
            scales each process's loss by the number of processes so the result is the mean over the global batch.
        pads_eval: every process takes part in every evaluation forward (its weights are gathered with the others):
            a process with fewer eval batches runs padding batches.
        shards_weights: each process holds a shard of the frozen weights (FSDP, DeepSpeed ZeRO-3).
    """

    several_processes: ClassVar[bool] = False
    training_only: ClassVar[bool] = False
    averages: ClassVar[bool] = False
    pads_eval: ClassVar[bool] = False
    shards_weights: ClassVar[bool] = False

    def __init__(self, config: "TrainConfig", accelerator: Any) -> None:
        self.config = config
        self.accelerator = accelerator
        self.world_size: int = accelerator.num_processes
        self.device: torch.device = accelerator.device
        self.scaler = accelerator.scaler  # a GradScaler for fp16 on GPUs, else None
        self.module: nn.Module | None = None
        self.eval_module: nn.Module | None = None  # the compiled step evaluation calls (train.compile), else None
        self._counts_at_compile = (0, 0)  # compile_counts() when the step was compiled
        self._first_frames = 0  # the frames its first training step compiled
        self._warned_recompiles = False

    # ----- set-up --------------------------------------------------------------------------------------------------
    @classmethod
    def make_accelerator(cls, config: "TrainConfig") -> Any:
        """The Accelerate object of the run: devices, mixed precision, the process group."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        reset_accelerate_state()
        # On a machine without GPUs, a multi-process launch (torchrun) must be told to use CPU processes (gloo).
        cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        # Some prompts may go unused in a step (a prompt bank's other tasks): DDP must not wait for their gradients.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        accelerator = Accelerator(cpu=cpu, mixed_precision=config.mixed_precision, kwargs_handlers=[ddp])
        if config.mixed_precision == "fp16" and accelerator.scaler is None:
            raise UserError(
                f"mixed_precision: fp16 needs a CUDA GPU with a gradient scaler, found device {accelerator.device}; "
                f"use bf16 (works on CPU and recent GPUs) or no"
            )
        return accelerator

    def prepare(self, step: StepModule, optimizer: torch.optim.Optimizer | None) -> None:
        """Sets :attr:`module`, what a step calls. ``optimizer`` is ``None`` when nothing trains."""
        self.module = step

    def prepare_model(self, step: StepModule) -> None:
        """Work on the model before the optimizer is built (FSDP shards here); nothing by default."""

    def compile(self, step: StepModule) -> None:
        """``train.compile``: puts :attr:`module` under ``torch.compile`` (after :meth:`prepare`, so around the
        engine's wrapper or sharding) and evaluation calls the same compiled step, in ``"eval"`` mode."""
        self._counts_at_compile = compile_counts()
        self.module = compile_module(self.module, self.config.compile_mode)
        self.eval_module = self.module

    def recompile_warning(self) -> str | None:
        """Called after each training step of a compiled run: one warning line, once, when the step has been
        compiled more than :data:`RECOMPILE_WARNING` times after its first (as many frames again as the first step
        compiled, each time), or a function of it reached torch's recompile limit; else ``None``."""
        frames, limits = (now - then for now, then in zip(compile_counts(), self._counts_at_compile))
        if not self._first_frames:
            self._first_frames = max(frames, 1)
            return None
        more = frames // self._first_frames - 1
        if self._warned_recompiles or (more <= RECOMPILE_WARNING and not limits):
            return None
        self._warned_recompiles = True
        from torch._dynamo import config as dynamo_config

        limit = f"torch._dynamo.config.recompile_limit ({dynamo_config.recompile_limit})"
        hit = f"{limits} of its functions reached {limit} and now run uncompiled" if limits else f"a function compiled {limit} times runs uncompiled after that"
        return (
            f"warning: train.compile: the step was compiled about {more} more times after its first (torch.compile "
            f"specialises on a value or shape that keeps changing); {hit}; run with TORCH_LOGS=recompiles to see "
            f"why, or set train.compile: false"
        )

    # ----- a training step -------------------------------------------------------------------------------------------
    def no_sync(self, last: bool) -> Any:
        """The context of one micro-batch's forward and backward; ``last`` is the accumulation window's last one."""
        return nullcontext()

    @contextmanager
    def out_of_memory_levers(self, step: int, rows: int) -> Iterator[None]:
        """Turns running out of device or host memory in training step ``step`` (``rows`` rows in this process) into
        one line naming the settings that lower memory use."""
        try:
            yield
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
                raise
            config = self.config
            levers = [f"train.batch_size (now {config.batch_size}; raise train.grad_accum_steps to keep the global batch)"]
            if not config.gradient_checkpointing:
                levers.append("train.gradient_checkpointing: true")
            if not self.shards_weights:
                levers.append("train.distributed: fsdp over several processes (shards the frozen weights)")
            levers.append("model.dtype: bfloat16 or model.quantization: int8 or nf4 for the frozen weights")
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"out of memory in training step {step} ({rows} rows in this process): {first}; lower it with " + "; ".join(levers)) from None

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def reduce(self, loss_sum: torch.Tensor, flags: list[float], params: list[nn.Parameter]) -> torch.Tensor:
        """Sums ``[loss_sum, *flags]`` over the processes in one collective and returns it (on the device); one
        process returns it unchanged without leaving the device."""
        if self.world_size == 1:
            return loss_sum.float().view(1)
        flat = torch.cat([loss_sum.float().view(1), torch.tensor(flags, device=self.device, dtype=torch.float32)])
        dist.all_reduce(flat)
        return flat

    def step(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], finite: torch.Tensor) -> None:
        """The optimizer step over the reduced gradients, then the gradients are cleared. ``finite`` is a boolean
        on the device: where false (a non-finite loss in this step or an earlier unread one), the gradients are
        zeroed first, so nothing non-finite reaches the prompts without the host reading the flag."""
        for p in params:
            if p.grad is not None:
                p.grad.masked_fill_(~finite, 0.0)
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def discard(self, optimizer: torch.optim.Optimizer) -> None:
        """Drops the gradients of a step that is not taken: a stop agreed in its collective, after which training
        ends (under DeepSpeed the gradients it reduced into its partitions stay there, never applied)."""
        optimizer.zero_grad(set_to_none=True)

    # ----- state -----------------------------------------------------------------------------------------------------
    def optimizer_state(self, optimizer: torch.optim.Optimizer, group_params: list[list[nn.Parameter]]) -> dict[str, Any]:
        """The state dict a 1-process optimizer gives; every process calls it (inside :meth:`whole`)."""
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, group_params: list[list[nn.Parameter]], state: dict[str, Any]) -> None:
        """Puts a state of :meth:`optimizer_state` back; every process calls it, inside ``whole(write=True)``."""
        optimizer.load_state_dict(state)

    def whole(self, params: list[nn.Parameter], write: bool = False) -> Any:
        """A context in which ``params`` are whole on every process (every process must enter it), keeping what
        rank 0 wrote into them when ``write``. The prompts are whole already except under ZeRO-3."""
        return nullcontext()

    # ----- evaluation ------------------------------------------------------------------------------------------------
    def eval_call(self, model: "PromptedModel", batch: Any) -> dict[str, torch.Tensor]:
        """One evaluation batch; engines whose hooks gather weights call through :attr:`module`, and a compiled
        step (``train.compile``) through :attr:`eval_module`."""
        if self.eval_module is not None:
            return self.eval_module(batch, "eval")
        return model.eval_step(batch)

    def reduce_metrics(self, sums: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Sums each process's evaluation ``sums`` over the processes (rank 0's keys; a key a process lacks counts
        as 0 there)."""
        if self.world_size == 1:
            return sums
        shared = [sorted(sums)]
        dist.broadcast_object_list(shared, src=0)
        keys = shared[0]
        stacked = torch.stack([sums.get(k, torch.zeros((), device=self.device, dtype=dtype)) for k in keys])
        dist.all_reduce(stacked)
        return dict(zip(keys, stacked))

    def eval_padding(self, num_rows: int, batch_size: int, num_batches: int) -> int:
        """How many one-row batches this process runs (and discards) after its ``num_batches`` so that it takes
        part in as many forwards as rank 0, which has the most."""
        if not self.pads_eval:
            return 0
        return math.ceil(math.ceil(num_rows / self.world_size) / batch_size) - num_batches
