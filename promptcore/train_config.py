"""The trainer's typed config (the ``train:`` section of every run config) and its ``fsdp`` and ``deepspeed`` sections.

It imports no torch (nor the engines), so a config is validated before the libraries load: the engines' registry
(:data:`ENGINES`, filled by :mod:`promptcore.engines`) is defined here with the built-in names declared, and the
callbacks' module (:mod:`promptcore.callbacks`) imports no torch either."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from .callbacks import check_callback_specs
from .config import ConfigError
from .errors import UserError
from .plugins import known
from .registry import Registry, did_you_mean

if TYPE_CHECKING:
    from .engines import Engine


@dataclass(frozen=True)
class EngineTraits:
    """What a config check needs of an engine, known without importing it (the record of its declaration in
    :data:`ENGINES`; a test checks it against the engine class).

    Attributes:
        several_processes: the engine runs over several processes and refuses to train in one
            (:attr:`promptcore.engines.Engine.several_processes`).
    """

    several_processes: bool


ENGINES: Registry[type["Engine"]] = Registry("engine (train.distributed)")
"""``train.distributed`` name -> its engine class (:class:`promptcore.engines.Engine`), registered by
:mod:`promptcore.engines` (which imports torch); the built-in names are declared here with their
:class:`EngineTraits`, so ``train.distributed`` is checked before torch is imported."""
ENGINES.declare("plain", "promptcore.engines", EngineTraits(several_processes=False))
ENGINES.declare("ddp", "promptcore.engines", EngineTraits(several_processes=True))
ENGINES.declare("fsdp", "promptcore.engines", EngineTraits(several_processes=True))
ENGINES.declare("deepspeed", "promptcore.engines", EngineTraits(several_processes=True))


@dataclass
class FSDPConfig:
    """The ``train.fsdp`` section (used with ``train.distributed: fsdp``).

    Attributes:
        block_classes: class names of the modules that each become one shard unit (``[Block]``,
            ``[LlamaDecoderLayer]``). Empty: every entry of each list of identical blocks in the frozen backbone
            (``blocks``, ``layers``, ``resblocks``, ``encoder.layer``, ``block`` ...), found by
            :func:`promptcore.distributed.shard_units`.
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
        sharded_loading: whether only rank 0 builds the whole frozen model (reads the checkpoint, or draws the
            random weights) while every other process builds it on the meta device and receives only its shards
            from rank 0, one weight at a time (:func:`promptcore.distributed.load_sharded`). ``auto``: where the
            model's loader supports it (Hugging Face text models, :func:`textpt.sharded_loading`); ``true``: the
            same, refused for a model that was built whole on every process; ``false``: every process builds the
            whole model, as without FSDP.
        shard_vocabulary: whether each process keeps only its rows of a language model's token embedding and LM
            head (``1 / N`` of the vocabulary; one tensor when they are tied) instead of FSDP gathering them whole
            in every forward: the embedding lookup, the logits and the loss run vocabulary-parallel, exactly as
            unsharded (:mod:`promptcore.vocab_parallel`). ``auto``: on where the model offers them (text models of
            ``model.task: causal_lm`` with a plain embedding and a bias-free head) and their weights are at least
            twice the largest transformer block, the most FSDP gathers at once otherwise (Qwen2.5-0.5B: 136M
            against 15M; off for the tiny test models); ``true``: on, refused with the reason for a model that
            cannot; ``false``: FSDP shards and gathers them as any weight.
    """

    block_classes: list[str] = field(default_factory=list)
    reshard_after_forward: bool = True
    cpu_offload: bool = False
    keep_whole: list[str] = field(default_factory=list)
    sharded_loading: bool | str = "auto"
    shard_vocabulary: bool | str = "auto"

    def __post_init__(self) -> None:
        for name in ("sharded_loading", "shard_vocabulary"):
            if getattr(self, name) not in (True, False, "auto"):
                raise UserError(f"{name}: expected auto, true or false, got {getattr(self, name)!r}")


@dataclass
class DeepSpeedConfig:
    """The ``train.deepspeed`` section (used with ``train.distributed: deepspeed``): DeepSpeed ZeRO stage 3.

    Only stage 3 partitions the frozen weights; stages 1 and 2 partition the optimizer state and gradients, which
    in prompt tuning exist for the prompts alone (a few KB), so they would save nothing over ``ddp``.

    Attributes:
        block_classes: class names of the modules whose weights ZeRO-3 gathers as one (its leaf modules), as
            ``train.fsdp.block_classes``. Empty: every entry of each list of identical blocks
            (:func:`promptcore.distributed.shard_units`).
    """

    block_classes: list[str] = field(default_factory=list)


# The optimizers that take ``betas`` and ``eps``.
ADAM_OPTIMIZERS = ("adam", "adamw")
# What a ``param_groups`` entry may override.
GROUP_KEYS = ("lr", "weight_decay")


@dataclass
class TrainConfig:
    """How prompts are trained. Sizes are per process unless noted.

    Learning rate: ``lr``, or with ``lr_scaling: linear`` ``lr * global_batch / 256`` (VPT's base-lr rule).
    ``param_groups`` gives trainable modules of the model (the keys of ``model.prompt_modules()``: ``prompts``,
    ``head``, ``prompt_proj`` ...) their own ``lr`` / ``weight_decay``; every module then trains in its own optimizer
    group and the other modules use ``lr`` / ``weight_decay``. Example::

        train: {lr: 1.0e-2, param_groups: {head: {lr: 1.0e-3}}}

    The schedule scales each group's rate, and ``lr_scaling`` applies to every group.

    Schedule (see :mod:`promptcore.optim`): ``scheduler`` after a warmup of ``warmup_epochs`` (+ ``warmup_steps``),
    stepped per optimizer step, or per epoch with ``schedule_unit: epoch`` (Dassl's rule, used by CoOp, CoCoOp,
    MaPLe and IVLP: whole warmup epochs, then cosine over ``epochs`` recounted from the end of the warmup).
    ``warmup_type: linear`` ramps up to the rate; ``constant`` holds every group at ``warmup_lr`` (an absolute rate,
    not scaled). Dassl's CoOp preset is::

        train: {optimizer: sgd, lr: 0.002, epochs: 200, scheduler: cosine, schedule_unit: epoch,
                warmup_epochs: 1, warmup_type: constant, warmup_lr: 1.0e-5}

    Optimizers: ``adamw``, ``adam`` (``torch.optim.Adam``: ``weight_decay`` is an L2 term added to the gradient,
    not AdamW's decoupled decay), ``sgd`` (with ``momentum``), ``adafactor`` (``torch.optim.Adafactor``: relative step
    size ``min(lr, 1/sqrt(t))`` times the parameter's RMS), ``adafactor_t5x`` (:class:`promptcore.optim.AdafactorT5X`,
    Lester et al.'s prompt tuning recipe: ``lr`` is the step size itself; ``weight_decay`` is T5X's decoupled
    rate, not scaled by ``lr``; ``adafactor_start_step`` as there described). ``betas`` and ``eps`` set Adam's and
    AdamW's moment decays and denominator term (``null``: torch's ``(0.9, 0.999)`` and ``1e-8``); other optimizers
    refuse them.

    Data order: each epoch's rows are cut into batches of ``batch_size`` per process; ``drop_last`` leaves out the
    epoch's last batch when it is short, as Dassl's train loader does (the CLIP presets that follow Dassl set it).

    Callbacks (:mod:`promptcore.callbacks`) by registered name, with their arguments in a mapping::

        train: {callbacks: [step_timer, {name: early_stopping, patience: 3}]}

    Several processes (:mod:`promptcore.engines`, docs/scaling.md): ``distributed`` names a registered engine.
    ``auto`` trains data parallel (``ddp``, DDP through Accelerate) when launched with several processes and with
    ``plain`` in one; ``fsdp`` also shards the frozen backbone over
    them with FSDP2, one unit per transformer block, set by the ``fsdp`` section::

        train: {distributed: fsdp, fsdp: {reshard_after_forward: true}}

    ``deepspeed`` shards it with DeepSpeed ZeRO-3 through Accelerate instead (the ``deepspeed`` section), for setups
    built on DeepSpeed; it needs the ``prompttune[deepspeed]`` extra.

    ``compile: true`` runs each step through ``torch.compile`` (:meth:`promptcore.engines.Engine.compile`) with
    dynamic shapes, so that batches of other sizes and lengths reuse the compiled code; ``compile_mode`` is
    torch's mode (``reduce-overhead`` adds CUDA graphs, ``max-autotune`` tries kernel choices too). Under
    ``deepspeed`` it is refused (torch.compile breaks the step at every ZeRO-3 hook).
    """

    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs when reached first)
    batch_size: int = 32  # global batch = batch_size * processes * grad_accum_steps
    drop_last: bool = False  # leave out each epoch's last micro-batch when it is short (Dassl's train loader does)
    eval_batch_size: int | None = None  # default: batch_size
    optimizer: Literal["adamw", "adam", "sgd", "adafactor", "adafactor_t5x"] = "adamw"
    lr: float = 1e-3
    lr_scaling: Literal["none", "linear"] = "none"
    weight_decay: float = 0.0
    param_groups: dict[str, dict[str, float]] = field(default_factory=dict)  # module -> {lr, weight_decay}
    momentum: float = 0.9  # SGD only
    betas: tuple[float, float] | None = None  # adam / adamw only; null: torch's (0.9, 0.999)
    eps: float | None = None  # adam / adamw only; null: torch's 1e-8
    adafactor_start_step: int = 0  # adafactor_t5x only: steps its second-moment decay counts as done
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    schedule_unit: Literal["step", "epoch"] = "step"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0  # added to warmup_epochs' steps (schedule_unit step only)
    warmup_type: Literal["linear", "constant"] = "linear"
    warmup_lr: float | None = None  # constant warmup's rate; first epoch's rate of a linear per-epoch warmup
    min_lr_ratio: float = 0.0  # cosine/linear decay floor, as a fraction of lr
    grad_clip: float | None = None  # max global grad norm
    grad_accum_steps: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms + cudnn settings
    eval_every_epochs: int = 1  # 0: no evaluation during training
    metric: str = "accuracy"  # metric that selects best/ (one of model.metric_names())
    metric_mode: Literal["max", "min"] = "max"
    save_every_steps: int = 0  # also checkpoint the training state every N steps (0: at epoch ends only)
    log_every_steps: int = 10
    num_workers: int = 0
    tensorboard: bool = True
    progress_bar: bool = True
    callbacks: list[str | dict[str, Any]] = field(default_factory=list)  # names, or {name: ..., arg: value}
    distributed: str = "auto"  # an engine of promptcore.engines.ENGINES; auto: ddp with several processes, else plain
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)  # distributed: fsdp only
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)  # distributed: deepspeed only
    compile: bool = False  # torch.compile the step (training and evaluation), with dynamic shapes
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"  # compile: true only

    def __post_init__(self) -> None:
        """Checks every field and raises one error that lists all the problems (a :class:`ConfigError` when there
        are several), each starting with the field's name."""
        errors: list[str] = []
        for name in ("epochs", "batch_size", "grad_accum_steps", "log_every_steps"):
            if getattr(self, name) <= 0:
                errors.append(f"{name}: must be positive, got {getattr(self, name)}")
        for name in ("eval_every_epochs", "save_every_steps", "num_workers", "adafactor_start_step", "warmup_steps"):
            if getattr(self, name) < 0:
                errors.append(f"{name}: must not be negative, got {getattr(self, name)}")
        _check_rate("lr", self.lr, errors)
        _check_decay("weight_decay", self.weight_decay, errors)
        for name in ("momentum", "warmup_epochs"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                errors.append(f"{name}: must be a finite number >= 0, got {value}")
        if not (math.isfinite(self.min_lr_ratio) and 0.0 <= self.min_lr_ratio <= 1.0):
            errors.append(f"min_lr_ratio: must lie in [0, 1] (a fraction of lr), got {self.min_lr_ratio}")
        if self.max_steps is not None and self.max_steps <= 0:
            errors.append(f"max_steps: must be positive or null, got {self.max_steps}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            errors.append(f"grad_clip: must be a positive finite number or null, got {self.grad_clip}")
        if self.eval_batch_size is not None and self.eval_batch_size <= 0:
            errors.append(f"eval_batch_size: must be positive or null, got {self.eval_batch_size}")
        if self.adafactor_start_step and self.optimizer != "adafactor_t5x":
            errors.append(f"adafactor_start_step: only adafactor_t5x uses it (optimizer is {self.optimizer}); remove it")
        self._check_adam_settings(errors)
        self._check_param_groups(errors)
        self._check_warmup(errors)
        engine_known = self._check_engine(errors)
        self._check_sections(errors, engine_known)
        if self.distributed == "deepspeed":
            self._check_deepspeed(errors)
        self._check_compile(errors)
        if self.callbacks:
            try:
                check_callback_specs(self.callbacks)
            except UserError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise UserError(errors[0])
        if errors:
            raise ConfigError(errors, "TrainConfig")

    def _check_adam_settings(self, errors: list[str]) -> None:
        """``betas`` and ``eps``: Adam's and AdamW's moment decays and denominator term, refused for the others."""
        for name in ("betas", "eps"):
            if getattr(self, name) is not None and self.optimizer not in ADAM_OPTIMIZERS:
                errors.append(
                    f"{name}: only {' and '.join(ADAM_OPTIMIZERS)} use it (optimizer is {self.optimizer}, which has no "
                    f"{name} setting here); remove train.{name} or set train.optimizer: adamw"
                )
                return
        if self.betas is not None:
            betas = list(self.betas)
            if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
                errors.append(f"betas: expected two numbers in [0, 1) (beta1, beta2), e.g. [0.9, 0.999], got {self.betas!r}")
            else:
                self.betas = (float(betas[0]), float(betas[1]))
        if self.eps is not None and not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
            errors.append(f"eps: must be a positive finite number (torch's default is 1e-8), got {self.eps!r}")

    def _check_param_groups(self, errors: list[str]) -> None:
        for module, overrides in self.param_groups.items():
            if not isinstance(overrides, dict):
                errors.append(f"param_groups.{module}: expected a mapping of {' / '.join(GROUP_KEYS)}, found {overrides!r}")
                continue
            for key, value in overrides.items():
                if key not in GROUP_KEYS:
                    errors.append(
                        f"param_groups.{module}.{key}: unknown setting.{did_you_mean(str(key), list(GROUP_KEYS))} "
                        f"A group sets {', '.join(GROUP_KEYS)}"
                    )
                else:
                    (_check_rate if key == "lr" else _check_decay)(f"param_groups.{module}.{key}", value, errors)

    def _check_engine(self, errors: list[str]) -> bool:
        """Whether ``distributed`` names an engine, registered or declared (else the problem is in ``errors``); the
        engines are not imported."""
        if self.distributed == "auto" or known(ENGINES, self.distributed):
            return True
        names = ["auto", *ENGINES.known_names()]
        errors.append(
            f"distributed: unknown engine {self.distributed!r}.{did_you_mean(str(self.distributed), names)} "
            f"Known: {', '.join(names)} (a new engine is registered in promptcore.engines.ENGINES)"
        )
        return False

    def _check_sections(self, errors: list[str], engine_known: bool) -> None:
        """The ``fsdp`` and ``deepspeed`` sections: built from mappings, and set only for their engine."""
        for section, kind in (("fsdp", FSDPConfig), ("deepspeed", DeepSpeedConfig)):
            value = getattr(self, section)
            if isinstance(value, dict):  # TrainConfig(fsdp={...}) from Python, as YAML gives it
                known = [f.name for f in fields(kind)]
                unknown = sorted(set(value) - set(known))
                if unknown:
                    errors.append(f"{section}.{unknown[0]}: unknown setting.{did_you_mean(str(unknown[0]), known)} The {section} section sets {', '.join(known)}")
                    continue
                try:
                    setattr(self, section, kind(**value))
                except UserError as e:
                    errors.append(str(e))
                    continue
            if engine_known and self.distributed != section and getattr(self, section) != kind():
                errors.append(
                    f"{section}: set, but train.distributed is {self.distributed!r}; set train.distributed: {section} "
                    f"or remove the {section} section"
                )

    def _check_deepspeed(self, errors: list[str]) -> None:
        if self.optimizer in ("adafactor", "adafactor_t5x"):
            errors.append(
                f"optimizer: {self.optimizer} factors each prompt's second moment by the prompt's shape, and DeepSpeed "
                f"ZeRO-3 steps the optimizer over flat partitions that have none; use adamw, adam or sgd with "
                f"train.distributed: deepspeed, or keep {self.optimizer} with train.distributed: fsdp"
            )
        if self.mixed_precision != "no":
            errors.append(
                f"mixed_precision: {self.mixed_precision} under train.distributed: deepspeed would make DeepSpeed cast "
                f"the prompts with the model, and the prompts, heads and their optimizer state stay float32 here; set "
                f"mixed_precision: no, or use train.distributed: fsdp"
            )

    def _check_compile(self, errors: list[str]) -> None:
        if self.compile_mode != "default" and not self.compile:
            errors.append(f"compile_mode: {self.compile_mode} is a mode of train.compile, which is false; set train.compile: true or remove it")
        if not self.compile:
            return
        if self.distributed == "deepspeed":
            errors.append(
                "compile: under DeepSpeed ZeRO-3 torch.compile breaks the step at each of ZeRO-3's hooks that gather "
                "and release weights, which reach torch's recompile limit and run uncompiled, so compiling gains "
                "nothing; set train.compile: false, or use train.distributed: fsdp with compile"
            )
        if sys.platform == "win32":
            errors.append(
                "compile: torch.compile's inductor backend needs a C++ compiler and Triton, which this toolkit does not "
                "set up on Windows; set train.compile: false, or train under Linux or WSL"
            )

    def _check_warmup(self, errors: list[str]) -> None:
        has_warmup = self.warmup_epochs > 0 or self.warmup_steps > 0
        if self.schedule_unit == "epoch":
            if self.warmup_steps:
                errors.append("warmup_steps: schedule_unit epoch warms up over whole epochs; use warmup_epochs")
            if not float(self.warmup_epochs).is_integer():
                errors.append(f"warmup_epochs: schedule_unit epoch warms up over whole epochs, got {self.warmup_epochs}")
        if self.warmup_lr is not None:
            _check_rate("warmup_lr", self.warmup_lr, errors)
            if not has_warmup:
                errors.append("warmup_lr: set, but there is no warmup (warmup_epochs and warmup_steps are 0); remove it or add a warmup")
            elif self.warmup_type == "linear" and self.schedule_unit == "step":
                errors.append(
                    "warmup_lr: a linear per-step warmup starts at lr / warmup steps and uses no warmup_lr; set "
                    "warmup_type: constant (hold warmup_lr) or schedule_unit: epoch (warmup_lr is the first epoch's rate)"
                )
        elif has_warmup and (self.warmup_type == "constant" or self.schedule_unit == "epoch"):
            what = "a constant warmup holds" if self.warmup_type == "constant" else "a linear per-epoch warmup starts at"
            errors.append(f"warmup_lr: required, {what} warmup_lr (Dassl's CoOp presets use 1.0e-5)")


def one_process_error(name: str) -> UserError:
    """The refusal of a training run in one process with ``train.distributed: name``, an engine for several."""
    return UserError(
        f"train.distributed: {name} needs several processes, this run has 1; launch it with "
        f"`torchrun --nproc_per_node N ...` or `accelerate launch --num_processes N ...`, or set "
        f"train.distributed: auto for one process"
    )


def check_training_processes(distributed: Any, world_size: int) -> None:
    """Refuses, before torch is imported, what :func:`promptcore.engines.resolve_engine` refuses of a training run of
    ``world_size`` processes (the launcher's ``WORLD_SIZE``): an engine for several processes in one.

    Args:
        distributed: ``train.distributed`` as the config gives it; a value that names no engine is left to the
            config's own checks.

    Raises:
        UserError: :func:`one_process_error`.
    """
    if world_size != 1 or not isinstance(distributed, str) or distributed == "auto" or not known(ENGINES, distributed):
        return
    traits = ENGINES.declaration(distributed).record if distributed not in ENGINES else None
    if (traits or ENGINES.get(distributed)).several_processes:  # an engine declared without traits is imported
        raise one_process_error(distributed)


def _check_rate(name: str, value: float, errors: list[str]) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        errors.append(f"{name}: must be a positive finite number, got {value!r}")


def _check_decay(name: str, value: float, errors: list[str]) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        errors.append(f"{name}: must be a finite number >= 0, got {value!r}")
