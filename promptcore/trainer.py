"""The trainer: trains the prompts (and head) of any :class:`~promptcore.model.PromptedModel`, nothing else.

Built on Hugging Face Accelerate for devices, mixed precision and multi-process launch (``accelerate launch``,
``torchrun``). What differs between one process, DDP, FSDP2 and DeepSpeed ZeRO-3 is an engine
(:mod:`promptcore.engines`, picked by ``train.distributed``), so this code reads the same for all of them: each
micro-batch is one call of the engine's step module and one backward, then one collective sums the step's loss and
stop flags, then the engine's optimizer step. A process whose slice of a global batch is empty (the last, short
batch of an epoch) runs a zero-weighted step on one row instead, so its collectives match the others'. Losses and
the NaN check stay on the device and are read every ``log_every_steps`` steps, at epoch ends and at checkpoints;
where they are read, a loss grown far over the first step's gets one ``warning:`` line (:mod:`promptcore.run_health`).

Data order is a function of ``(seed, epoch)`` (:mod:`promptcore.batches`), and the learning rate a pure function of
the step (:class:`~promptcore.optim.LRSchedule`), so a run resumed from its training state
(:mod:`promptcore.checkpoint`) ends bitwise equal to an uninterrupted run on CPU.

Extension points: engines, per-module learning rates (``train.param_groups``), callbacks
(:mod:`promptcore.callbacks`), schedules and optimizers (:mod:`promptcore.optim`).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from .batches import (
    EpochBatches, check_labels, epoch_generator, epoch_order, micro_batches, num_rows, seed_everything, set_determinism, to_device,
)
from .callbacks import Callback, CallbackList, StepInfo
from .checkpoint import (
    Progress,
    TrainingState,
    check_resume_settings,
    checkpoint_size,
    load_training_state,
    prepare_run_dir,
    record_config_changes,
    rng_state,
    save_training_state,
    set_rng_state,
)
from .config import to_dict, to_yaml
from .distributed import StepModule, check_same_frozen_weights, check_sharded_loading, gather_objects, on_main
from .engines import build_engine, resolve_engine
from .errors import UserError
from .model import PromptedModel
from .optim import LRSchedule, build_optimizer
from .param_groups import build_param_groups, check_optimizer_params
from .preflight import check_resume, metric_problem
from .runs import RunDir
from .run_health import batch_size_warning, divergence_warning
from .signals import StopSignals
from .train_config import TrainConfig


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the prompts were not updated and the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped training after ``last/`` and the training state were saved."""


class _Interrupted(Exception):
    """Internal: a stop was requested and every process reached a point where it can be honoured."""


class Trainer:
    """Trains the prompt parameters of ``model``; the backbone stays frozen, in eval mode and bitwise unchanged.

    Everything a run could be refused for (config values, ``train.metric`` against ``model.metric_names()``,
    ``train.param_groups`` against the model's trainable modules, callbacks, an unwritable run directory or a disk
    without room for a checkpoint) is checked here, before the run directory is written and before training.

    Args:
        model: any :class:`PromptedModel`; its ``training_step(batch)`` gives the loss and ``eval_step(batch)``
            per-batch metric sums plus ``count``.
        config: the ``train:`` section.
        train_dataset: map-style dataset of dict items (``None`` for evaluation only).
        eval_dataset: evaluated every ``config.eval_every_epochs`` epochs and at the end; selects ``best/``.
        collate_fn: list of items -> batch dict (default: torch's default collate).
        run_dir: where the run is written (see :mod:`promptcore.runs`); ``None`` trains in memory only.
        run_config: the whole run config, written to ``config.yaml`` (default: ``{"train": config}``).
        resume: continue the run in ``run_dir`` from its training state. The config may differ from the run's in
            anything but the data order (``seed``, ``batch_size``, ``grad_accum_steps``, the number of processes,
            the dataset size), the optimizer and its groups, and the metric that selects ``best/``: the new values
            apply from the current step (a new ``epochs`` / ``max_steps`` recomputes the learning-rate schedule for
            the new length), one line names the changes, and ``config.yaml`` is updated (the first config is kept
            in ``config.original.yaml``). A run a callback stopped (early stopping) stays finished.
        overwrite: replace a run already in ``run_dir`` instead of refusing.
        callbacks: :class:`~promptcore.callbacks.Callback` objects, run after those named in ``config.callbacks``
            (and after the built-in progress bar and TensorBoard ones).
        batch_order: the train data's order, for a loop ported from code that gives its own: a callable
            ``epoch -> row indices`` (0-based epoch; one index in ``[0, len(train_dataset))`` per row, a
            permutation or drawn with replacement), or a torch ``Sampler`` (iterated once per epoch, after
            ``set_epoch(epoch)`` where it has one). The indices are cut into batches as the default order is
            (:class:`~promptcore.batches.EpochBatches`), and must be the same on every process and for a given
            epoch on every call, so that a resumed run finds its place. Default: a permutation drawn from
            ``(seed, epoch)``.

    Example::

        model = wrap(backbone, VPTConfig(num_tokens=10, num_classes=10))
        trainer = Trainer(model, TrainConfig(epochs=5, lr=0.1), train_ds, eval_ds, run_dir="runs/demo")
        result = trainer.fit()            # {"step": ..., "epoch": ..., "eval": {...}, "best": {...}, "stopped": None, ...}
        trainer.evaluate(test_ds)         # {"loss": ..., "accuracy": ..., "count": ...}
    """

    def __init__(
        self,
        model: PromptedModel,
        config: TrainConfig,
        train_dataset: Dataset | None,
        eval_dataset: Dataset | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        run_dir: str | os.PathLike | None = None,
        run_config: Any = None,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
        batch_order: Callable[[int], Sequence[int]] | Sampler | None = None,
    ) -> None:
        if not isinstance(model, PromptedModel):
            raise TypeError(f"Trainer needs a PromptedModel (from promptcore.wrap or a subclass), got {type(model).__name__}")
        if resume and run_dir is None:
            raise UserError("resume=True needs the run_dir of the run to continue")
        if resume and overwrite:
            raise UserError("resume and overwrite exclude each other: resume continues the run in run_dir, overwrite replaces it")
        self.model, self.config, self.batch_order = model, config, epoch_order(batch_order)
        self.train_dataset, self.eval_dataset, self.collate_fn = train_dataset, eval_dataset, collate_fn
        self.num_train = num_rows(train_dataset, "train") if train_dataset is not None else 0
        if eval_dataset is not None:
            num_rows(eval_dataset, "eval")
            problem = metric_problem(model, config)
            if problem:
                raise UserError(problem)

        engine_class = resolve_engine(config.distributed, int(os.environ.get("WORLD_SIZE", "1")), trains=train_dataset is not None)
        self.accelerator = engine_class.make_accelerator(config)
        self.device = self.accelerator.device
        self.world_size = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        self.scaler = self.accelerator.scaler  # a GradScaler for fp16 on GPUs, else None
        set_determinism(config.deterministic)

        model.freeze_backbone()
        if config.gradient_checkpointing:
            try:
                model.enable_gradient_checkpointing()
            except NotImplementedError as e:
                raise UserError(f"gradient_checkpointing: {e}; set train.gradient_checkpointing: false") from None
        # A model built for sharded loading is moved and filled in by the engine, which sends rank 0's weights.
        lazy = check_sharded_loading(model, engine_class, config.fsdp, self.world_size)
        if not lazy:
            model.to(self.device)
        self.params = list(model.prompt_parameters())
        if not self.params and train_dataset is not None:
            raise UserError(
                f"{type(model).__name__} has no prompt parameters to train (prompt_module_names="
                f"{model.prompt_module_names}); a method that trains nothing (zero-shot) is only evaluated: "
                f"Trainer(model, config, None, eval_dataset).evaluate(), or the eval command"
            )
        if self.world_size > 1 and not lazy:
            check_same_frozen_weights(model, self.params, self.world_size)
            # Every process starts from rank 0's prompts, whatever each one's initialisation drew.
            for p in self.params:
                dist.broadcast(p.data, src=0)
        trains = bool(self.params) and train_dataset is not None
        self.engine = build_engine(engine_class, config, self.accelerator, trains)
        # A step is one call of this module (the engines' hooks run around calls).
        self.step_module = StepModule(model)
        self.engine.prepare_model(self.step_module)
        self._dummy: dict[str, Any] = {}
        num_classes = model.prompt_config().get("num_classes")
        self.num_classes = num_classes if isinstance(num_classes, int) and num_classes > 0 else None

        self.global_batch = config.batch_size * self.world_size * config.grad_accum_steps
        lr_scale = self.global_batch / 256 if config.lr_scaling == "linear" else 1.0
        self.lr = config.lr * lr_scale
        # A model with nothing to train gets no optimizer: it can only be evaluated.
        self.optimizer = build_optimizer(build_param_groups(model, config, lr_scale), config, self.lr) if self.params else None
        if self.optimizer is not None:
            check_optimizer_params(self.optimizer, model)
        # Each group's settings as the config gives them; a resumed run puts them back over the loaded state.
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        self._group_settings = [{k: v for k, v in g.items() if k != "params"} for g in groups]
        # While the prompts are whole on every process.
        modules = [m.state_dict() for m in model.prompt_modules().values()]
        self._checkpoint_bytes = checkpoint_size(model.prompt_state_dict(), modules, self.params, config.optimizer, self.world_size)
        # The prompts of each optimizer group (DeepSpeed replaces them in the groups by flat partitions).
        self._group_params = [list(g["params"]) for g in groups]
        self.engine.prepare(self.step_module, self.optimizer if trains else None)
        if config.compile:
            self.engine.compile(self.step_module)
        rows_per_micro = config.batch_size * self.world_size
        micro_per_epoch = micro_batches(self.num_train, rows_per_micro, config.drop_last)
        if trains and self.is_main and (line := batch_size_warning(config.batch_size, self.world_size, self.num_train)):
            print(line, file=sys.stderr)
        self.steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum_steps)
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.schedule = LRSchedule.from_config(config, self.total_steps, self.steps_per_epoch)
        self.warmup_steps = self.schedule.warmup if config.schedule_unit == "step" else self.schedule.warmup * self.steps_per_epoch

        self.callbacks = CallbackList.for_run(config.progress_bar, config.tensorboard, config.callbacks, callbacks)

        self.progress = Progress()
        self._boundary = copy.copy(self.progress)
        self._boundary_callbacks: dict[str, Any] = {}
        self.resumed = False
        self._signals = StopSignals()  # Ctrl-C / SIGTERM
        # Device-side: the first step whose loss was not finite (-1: none yet) and that loss; read at log lines,
        # epoch ends and checkpoints. Loss sums are float64 (float32 where the device has no float64: mps).
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        self._bad_loss = torch.zeros((), device=self.device)
        self._sum_dtype = torch.float64 if self.device.type != "mps" else torch.float32
        self._warned_divergence = False
        self._stop_reason: str | None = None  # a callback's request_stop
        self._last_records: dict[str, dict[str, Any]] = {}  # the latest metrics line of each split
        self._checkpoint_step: int | None = None  # step of the last training state written
        self.run = RunDir(run_dir) if run_dir is not None else None
        self._callback("on_init")
        if self.run is not None:
            config_text = to_yaml(run_config) if run_config is not None else to_yaml({"train": to_dict(config)})
            on_main(lambda: prepare_run_dir(self.run, resume, overwrite, config_text, self._checkpoint_bytes), self.is_main, self.world_size)
            if resume:
                self._load_state(run_config)
            self.accelerator.wait_for_everyone()
        self._apply_lr(max(self.progress.step - 1, 0))  # the rate of the last step done (logged with its window)

    # ----- set-up ----------------------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        # Accelerate's autocast() rebuilds its state object on every call; without mixed precision skip it.
        return self.accelerator.autocast() if self.config.mixed_precision != "no" else nullcontext()

    def _set_train_mode(self) -> None:
        """Prompt modules train; every other top-level module (backbone and any frozen helper) stays in eval."""
        self.model.train()
        prompt_names = set(self.model.prompt_modules())
        for name, child in self.model.named_children():
            if name not in prompt_names:
                child.eval()

    def _apply_lr(self, step: int) -> None:
        """Sets every group's rate for optimizer step ``step`` (0-based)."""
        for group, settings in zip(self.optimizer.param_groups if self.optimizer is not None else [], self._group_settings):
            group["lr"] = self.schedule.lr(step, settings["lr"])

    # ----- callbacks -------------------------------------------------------------------------------------------
    def _callback(self, hook: str, *args: Any) -> None:
        self.callbacks.call(hook, self, *args)

    def request_stop(self, reason: str) -> None:
        """Asks training to stop after the current step or epoch end; the run then saves, and ``fit()`` returns
        with ``result["stopped"] == reason``. Callbacks call it (see :mod:`promptcore.callbacks`)."""
        if self._stop_reason is None:
            self._stop_reason = reason

    def _agree_stop(self) -> bool:
        """Whether any process asked to stop; every process gets the same answer (and the same reason). A collective
        with several processes: run at epoch ends and at the end of training, not per step."""
        requested = self._stop_reason is not None
        if self.world_size > 1 and self.engine.reduce(torch.zeros((), device=self.device), [float(requested)], [])[1].item() > 0:
            self._share_stop_reason()
            return True
        return requested

    def _share_stop_reason(self) -> None:
        """Every process takes the stop reason of the first process that gave one."""
        self._stop_reason = next(r for r in gather_objects(self._stop_reason, self.world_size) if r is not None)

    def _mark_boundary(self) -> None:
        """Records a point a Ctrl-C can save: the progress and the callbacks' states after the step just done."""
        self._boundary = copy.copy(self.progress)
        self._boundary_callbacks = self.callbacks.state_dict()

    # ----- checkpoints -----------------------------------------------------------------------------------------
    def _save_checkpoint(self, progress: Progress, callback_states: dict[str, Any] | None = None) -> None:
        """Writes ``last/`` and ``state/`` for ``progress`` (main process; all processes share RNG states)."""
        if self.run is None:
            return
        self._check_finite()
        rngs = gather_objects(rng_state(), self.world_size)
        with self.engine.whole(self.params):
            optimizer_state = self.engine.optimizer_state(self.optimizer, self._group_params)
            if self.is_main:
                self.model.save_prompts(self.run.last, extra={"step": progress.step, "epoch": progress.last_epoch})
                state = TrainingState(
                    progress=progress.as_dict(),
                    world_size=self.world_size,
                    num_train=self.num_train,
                    train=to_dict(self.config),
                    groups=[g["name"] for g in self.optimizer.param_groups],
                    callbacks=self.callbacks.state_dict() if callback_states is None else callback_states,
                    rng=rngs,
                    prompts={name: m.state_dict() for name, m in self.model.prompt_modules().items()},
                    optimizer=optimizer_state,
                    scaler=self.scaler.state_dict() if self.scaler is not None else {},
                )
                save_training_state(self.run, state)
        self._checkpoint_step = progress.step
        self.accelerator.wait_for_everyone()
        self._callback("on_save", self.run.last, "last")

    def _load_state(self, run_config: Any) -> None:
        assert self.run is not None
        state = load_training_state(self.run)
        # Checkpoints of earlier versions lack the newer keys: they ran with their defaults.
        saved = {**to_dict(TrainConfig()), **state.train}
        current = to_dict(self.config)
        groups = [g["name"] for g in self.optimizer.param_groups]
        check_resume_settings(state, saved, current, self.world_size, self.num_train, groups, self.run.path)
        with self.engine.whole(self.params, write=True):
            check_resume(self.model, state.prompts, self.run.last, self.run.path)
            for name, module in self.model.prompt_modules().items():
                module.load_state_dict(state.prompts[name])
            self.engine.load_optimizer_state(self.optimizer, self._group_params, state.optimizer)
        for group, settings in zip(self.optimizer.param_groups, self._group_settings):
            group.update(settings)  # the config's values (a resumed run may change lr or weight_decay)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        set_rng_state(*state.rng[self.rank])
        self.progress = Progress(**state.progress)
        dropped = self.callbacks.load_state_dict(state.callbacks)
        if dropped and self.is_main:
            print(f"resume: the run's callbacks {', '.join(dropped)} are not used any more; their state is dropped", file=sys.stderr)
        self._boundary = copy.copy(self.progress)
        self._boundary_callbacks = self.callbacks.state_dict()
        self._checkpoint_step = self.progress.step
        if self.is_main:
            # Lines written after the checkpoint are redone by the resumed run, so the file ends as if never killed.
            self.run.truncate_metrics(self.progress.metrics_lines)
        self._last_records = {r["split"]: r for r in self.run.read_metrics()[: self.progress.metrics_lines]}
        self.resumed = True
        if self.is_main:
            self._record_config_changes(saved, current, run_config)

    def _record_config_changes(self, saved: dict[str, Any], current: dict[str, Any], run_config: Any) -> None:
        """Main process, on resume: names what the config changed, and records the new config in config.yaml."""
        assert self.run is not None
        changes = record_config_changes(self.run, saved, current, run_config)
        if not changes:
            return
        lr = ", ".join(f"{s['name']} {self.schedule.lr(self.progress.step, s['lr']):.4g}" for s in self._group_settings)
        print(
            f"resume {self.run.path} at step {self.progress.step} with a changed config ({'; '.join(changes)}): the lr "
            f"schedule is recomputed, {self.schedule.describe()}, and continues from step {self.progress.step} (next lr: {lr}); "
            f"config.yaml records the new config, config.original.yaml the first",
            file=sys.stderr,
        )

    # ----- logging ---------------------------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        self.progress.metrics_lines += 1
        self._last_records[record["split"]] = record
        if self.run is not None and self.is_main:
            self.run.append_metrics(record)
        self._callback("on_log", record)

    def _flush_window(self) -> None:
        p = self.progress
        if p.window_steps:
            # The rate the window's last step used: ``lr``, or ``lr/<group>`` for each of several groups.
            groups = self.optimizer.param_groups
            lrs = {"lr": groups[0]["lr"]} if len(groups) == 1 else {f"lr/{g['name']}": g["lr"] for g in groups}
            self._check_finite()
            loss = float(p.window_loss) / p.window_steps
            self._check_divergence(loss)
            self._log({"split": "train", "epoch": p.epoch, "step": p.step, "loss": loss, **lrs})
            p.window_loss, p.window_steps = 0.0, 0

    def _check_divergence(self, loss: float) -> None:
        """Warns once, in one line, when a log window's mean loss has grown far over the first step's
        (:func:`promptcore.run_health.divergence_warning`)."""
        p = self.progress
        if self._warned_divergence or p.start_loss is None:
            return
        line = divergence_warning(float(p.start_loss), loss, p.step, self.config.lr)
        if line is not None:
            self._warned_divergence = True
            if self.is_main:
                print(line, file=sys.stderr)

    # ----- training --------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_sampler: Any, generator: torch.Generator) -> DataLoader:
        # An explicit generator: creating an iterator draws a seed from it, which would otherwise come from (and
        # shift) the global torch RNG that prompt dropout uses.
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
        )

    def _dummy_batch(self, dataset: Dataset, split: str) -> Any:
        """One row of ``dataset`` as a batch: what a process with an empty slice runs (zero-weighted) so that its
        collectives match the other processes'."""
        if split not in self._dummy:
            self._dummy[split] = (self.collate_fn or torch.utils.data.default_collate)([dataset[0]])
        return self._dummy[split]

    def _count_loss(self, loss: torch.Tensor, step: int) -> None:
        """Adds step ``step``'s global mean loss to the window and epoch sums and, when it is the first non-finite
        one, keeps the step and the value; all on the device, nothing is read."""
        p = self.progress
        bad = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(bad, step, self._first_bad)
        self._bad_loss = torch.where(bad, loss.detach(), self._bad_loss)
        p.add_loss(loss.detach().to(self._sum_dtype))
        if p.start_loss is None:
            p.start_loss = loss.detach().to(self._sum_dtype)

    def _check_finite(self) -> None:
        """Raises :class:`NonFiniteLossError` naming the first step whose loss was NaN or infinite (reads the device)."""
        first = int(self._first_bad)
        if first < 0:
            return
        self.optimizer.zero_grad(set_to_none=True)
        where = ""
        if self.run is not None:
            kept = f"keeps the checkpoint of step {self._checkpoint_step}" if self._checkpoint_step is not None else "has no checkpoint yet"
            where = f" (run directory {self.run.path} {kept})"
        raise NonFiniteLossError(
            f"loss is {float(self._bad_loss)} at step {first} (epoch {(first - 1) // self.steps_per_epoch}); training "
            f"stopped, and no gradient of that step or a later one reached the prompts{where}. Lower the learning "
            f"rate (train.lr, now {self.config.lr:g}), enable train.grad_clip, or use bf16 instead of fp16"
        )

    def _optimizer_step(self, batches: Iterator[Any], sampler: EpochBatches, micro: range) -> tuple[torch.Tensor, bool] | None:
        """One optimizer step over micro-batches ``micro`` of the epoch; returns the global mean loss (on the device)
        and whether a Ctrl-C asks to stop, or None when the step's collective tells that a callback of another process
        asked to stop after the previous step: the step is then not taken."""
        p, engine = self.progress, self.engine
        total = sum(sampler.global_size(j) for j in micro)
        loss_sum = torch.zeros((), device=self.device)
        for j in micro:
            n = sampler.local_size(j)
            if n == 0:
                batch = self._dummy_batch(self.train_dataset, "train")
            else:
                batch = next(batches)
                check_labels(batch, self.num_classes, f"training batch {j} of epoch {p.epoch}")
            batch = to_device(batch, self.device)
            with engine.no_sync(j == micro[-1]), engine.out_of_memory_levers(p.step + 1, n):
                with self._autocast():
                    loss = engine.module(batch)
                if loss.dim() != 0:
                    raise ValueError(f"{type(self.model).__name__}.training_step returned shape {tuple(loss.shape)}; it must return the mean loss, a scalar")
                # Weighted by this slice's share of the step's global samples, so the summed gradient is the mean
                # over the global batch, whatever the split across processes and micro-batches. Engines that average
                # over the processes instead of summing (DDP, DeepSpeed) get their share scaled by the number.
                share = n / total * (self.world_size if engine.averages else 1)
                wide = loss.to(torch.promote_types(loss.dtype, torch.float32))  # a 16-bit loss in float32; float64 kept
                engine.backward(weighted := wide if share == 1 else wide * share)
            loss_sum += wide.detach() * (n / total) if engine.averages else weighted.detach()
        # One collective: the loss and both stop flags (Ctrl-C, a callback's request after the previous step).
        reduced = engine.reduce(loss_sum, [float(self._signals.requested), float(self._stop_reason is not None)], self.params)
        interrupted = self._signals.requested
        if self.world_size > 1:
            # Every process must stop after the same step, so the agreed flags are read: the collective's one wait.
            interrupted, asked = (flag > 0 for flag in reduced[1:3].tolist())
            if asked:
                engine.discard(self.optimizer)
                return None
        self._count_loss(reduced[0], p.step + 1)
        if self.world_size > 1:
            self._check_finite()  # read with the flags: a non-finite step is refused before it is taken
        engine.step(self.optimizer, self.params, self._first_bad < 0)
        if self.config.compile and (line := engine.recompile_warning()) and self.is_main:
            print(line, file=sys.stderr)
        return reduced[0], interrupted

    def _train_epoch(self) -> bool:
        """Runs the rest of ``progress.epoch``; returns False when max_steps or a stop request ended training
        inside it."""
        cfg, p = self.config, self.progress
        sampler = EpochBatches(
            self.num_train, cfg.batch_size, self.world_size, self.rank, cfg.seed, p.epoch, start=p.micro,
            order=self.batch_order(p.epoch), drop_last=cfg.drop_last,
        )
        self._callback("on_epoch_begin")
        batches = iter(self._loader(self.train_dataset, sampler, epoch_generator(cfg.seed, p.epoch)))
        accum = cfg.grad_accum_steps
        tick = time.perf_counter()
        while p.micro < sampler.num_micro:
            if p.step >= self.total_steps:
                return False
            micro = range(p.micro, min(p.micro + accum, sampler.num_micro))
            self._apply_lr(p.step)
            taken = self._optimizer_step(batches, sampler, micro)
            if taken is None:
                self._share_stop_reason()
                p.stop_reason = self._stop_reason
                self._mark_boundary()
                return False
            loss, interrupted = taken
            p.step += 1
            p.micro = micro.stop
            now = time.perf_counter()
            info = StepInfo(step=p.step, epoch=p.epoch, loss=loss, samples=sum(sampler.global_size(j) for j in micro), seconds=now - tick)
            tick = now
            self._callback("on_step_end", info)
            if p.step % cfg.log_every_steps == 0:
                self._flush_window()
            # One process knows its callbacks' requests at once; several agree on them in the next step's collective.
            stopped = self.world_size == 1 and self._stop_reason is not None
            if stopped:
                p.stop_reason = self._stop_reason
            self._mark_boundary()
            if stopped:
                return False
            if cfg.save_every_steps and p.step % cfg.save_every_steps == 0 and p.micro < sampler.num_micro:
                self._save_checkpoint(p)
            if interrupted:
                raise _Interrupted
        if self.world_size > 1 and self._agree_stop():  # a request after the epoch's last step
            p.stop_reason = self._stop_reason
            self._mark_boundary()
            return False
        return True

    def _end_epoch(self) -> None:
        cfg, p = self.config, self.progress
        self._flush_window()
        if p.epoch_steps:
            self._log({"split": "epoch", "epoch": p.epoch, "step": p.step, "loss": float(p.epoch_loss) / p.epoch_steps})
        self._callback("on_epoch_end")
        if self.eval_dataset is not None and cfg.eval_every_epochs and (p.epoch + 1) % cfg.eval_every_epochs == 0:
            self._evaluate_and_keep_best()
        p.epoch += 1
        p.micro, p.epoch_loss, p.epoch_steps = 0, 0.0, 0
        if self._agree_stop():
            p.stop_reason = self._stop_reason
        self._save_checkpoint(p)
        self._mark_boundary()

    def _evaluate_and_keep_best(self) -> dict[str, float]:
        cfg, p = self.config, self.progress
        metrics = self.evaluate()
        if cfg.metric not in metrics:
            reported = [k for k in metrics if k != "count"]
            raise UserError(
                f"metric: {type(self.model).__name__}.eval_step reported {', '.join(reported)} but not train.metric "
                f"{cfg.metric!r}, which its metric_names() lists; set train.metric to one of {', '.join(reported)} "
                f"(and make metric_names() return the keys eval_step reports)"
            )
        self._log({"split": "eval", "epoch": p.epoch, "step": p.step, **metrics})
        p.last_eval_step = p.step
        value = metrics[cfg.metric]
        better = p.best_value is None or (value > p.best_value if cfg.metric_mode == "max" else value < p.best_value)
        if better:
            p.best_value, p.best_step, p.best_epoch = value, p.step, p.epoch
            if self.run is not None:
                with self.engine.whole(self.params):
                    if self.is_main:
                        self.model.save_prompts(self.run.best, extra={"step": p.step, "epoch": p.epoch, "metric": cfg.metric, "value": value})
                self._callback("on_save", self.run.best, "best")
        self._callback("on_evaluate", metrics)
        return metrics

    def fit(self) -> dict[str, Any]:
        """Trains until ``epochs`` or ``max_steps``, or until a callback stops the run; returns the last step, its
        epoch, the whole epochs done (``epochs_done``), the final eval metrics, the best, and why a callback stopped it
        (``stopped``, else ``None``). Epochs are numbered from 0 here as in ``metrics.jsonl``, ``best/`` and ``last/``:
        after ``epochs: 2`` the result has ``"epoch": 1, "epochs_done": 2``.

        Raises:
            NonFiniteLossError: the loss became NaN/inf (the run directory keeps the last good checkpoint).
            TrainingInterrupted: Ctrl-C or SIGTERM; ``last/`` and the training state were saved first.
        """
        if self.train_dataset is None:
            raise UserError("fit() needs a train dataset; this Trainer was built with train_dataset=None (evaluation only)")
        cfg, p = self.config, self.progress
        if not self.resumed and p.step == 0:
            seed_everything(cfg.seed)
        self._set_train_mode()
        self._signals.install()
        try:
            self._callback("on_train_begin")
            while p.epoch < cfg.epochs and p.step < self.total_steps and p.stop_reason is None:
                if not self._train_epoch():
                    break
                self._end_epoch()
            if p.stop_reason is None and self._agree_stop():  # a request after the last step (max_steps)
                p.stop_reason = self._stop_reason
            self._flush_window()
            if self.eval_dataset is not None and p.last_eval_step != p.step:
                self._evaluate_and_keep_best()
            self._save_checkpoint(p)
        except _Interrupted:
            self._save_checkpoint(self._boundary, self._boundary_callbacks)
            if self.run is None:
                raise TrainingInterrupted(f"training interrupted at step {self._boundary.step} (no run_dir: nothing was saved)") from None
            raise TrainingInterrupted(
                f"training interrupted at step {self._boundary.step}: last/ and the training state were saved; "
                f"continue with resume=True / --resume {self.run.path}"
            ) from None
        finally:
            self._signals.restore()
            self._callback("on_train_end")
        if self.run is not None and self.is_main:
            from .plots import plot_curves

            plot_curves(self.run.read_metrics(), self.run.curves, cfg.metric)
        self.accelerator.wait_for_everyone()
        best = None
        if p.best_value is not None:
            best = {"metric": cfg.metric, "value": p.best_value, "step": p.best_step, "epoch": p.best_epoch}
        final = self._last_records.get("eval", {})
        return {
            "step": p.step,
            "epoch": p.last_epoch,
            "epochs_done": p.epoch,
            "train_loss": self._last_records.get("train", {}).get("loss"),
            "eval": {k: v for k, v in final.items() if k not in ("split", "step", "epoch")},
            "best": best,
            "stopped": p.stop_reason,
            "run_dir": str(self.run.path) if self.run is not None else None,
        }

    # ----- evaluation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, dataset: Dataset | None = None) -> dict[str, float]:
        """Sums ``model.eval_step`` over ``dataset`` (default: the eval dataset) and all processes.

        Returns:
            ``{metric: sum / count}`` for each key the model reports, plus ``count`` (samples evaluated).
        """
        dataset = self.eval_dataset if dataset is None else dataset
        if dataset is None:
            raise UserError("no eval dataset: pass one to evaluate(dataset) or to Trainer(eval_dataset=...)")
        n = num_rows(dataset, "eval")
        size = self.config.eval_batch_size or self.config.batch_size
        # Strided shards: every sample is evaluated once, and rank 0 always has one when the dataset has any.
        indices = list(range(self.rank, n, self.world_size))
        batches = [indices[i : i + size] for i in range(0, len(indices), size)]
        # Under FSDP and DeepSpeed every process takes part in every forward (each gathers the blocks' weights with
        # the others): a process with fewer batches than rank 0 runs one row for each missing batch and discards it.
        padding = self.engine.eval_padding(n, size, len(batches))
        was_training = self.model.training
        self.model.eval()
        acc_dtype = torch.float64 if self.device.type != "mps" else torch.float32
        sums: dict[str, torch.Tensor] = {}
        # Evaluation draws nothing from the training RNG streams, so how often it runs cannot change training.
        fork_devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=fork_devices):
                for i, batch in enumerate(self._loader(dataset, batches, torch.Generator())):
                    if self._signals.requested and self.world_size == 1:
                        raise _Interrupted
                    check_labels(batch, self.num_classes, f"eval batch {i}")
                    with self._autocast():
                        out = self.engine.eval_call(self.model, to_device(batch, self.device))
                    for key, value in out.items():
                        value = torch.as_tensor(value, device=self.device).detach().to(acc_dtype)
                        sums[key] = sums[key] + value if key in sums else value
                for _ in range(padding):
                    with self._autocast():
                        self.engine.eval_call(self.model, to_device(self._dummy_batch(dataset, f"eval{id(dataset)}"), self.device))
        finally:
            if was_training:
                self._set_train_mode()
        sums = self.engine.reduce_metrics(sums, acc_dtype)
        if "count" not in sums:
            raise ValueError(
                f"{type(self.model).__name__}.eval_step returned {list(sums)} without 'count'; it must return per-batch sums "
                f"of each metric plus 'count' (the number of samples) so the trainer can average them"
            )
        count = float(sums["count"])
        if count <= 0:
            raise ValueError(f"{type(self.model).__name__}.eval_step reported a total count of {count}; expected the number of samples")
        metrics = {k: float(v) / count for k, v in sums.items() if k != "count"}
        metrics["count"] = int(count)
        return self.model.summarize_metrics(metrics)


__all__ = [
    "EpochBatches",
    "NonFiniteLossError",
    "Trainer",
    "TrainingInterrupted",
    "build_param_groups",
    "check_optimizer_params",
    "epoch_generator",
    "seed_everything",
    "set_determinism",
]
