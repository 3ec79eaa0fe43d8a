"""The trainer: trains the prompts (and head) of any :class:`~promptcore.model.PromptedModel`, nothing else.

Built on Hugging Face Accelerate for devices, mixed precision and multi-process launch (``accelerate launch``,
``torchrun``). Only the prompts train, so their gradients are a few KB: after each accumulation window the
trainer sums them across processes with one ``all_reduce`` of a flat buffer instead of wrapping the model in DDP.
That keeps the model's own ``training_step``/``eval_step`` methods callable as they are (DDP only synchronises
through ``forward``), costs one small collective per optimizer step, and lets the same buffer carry the loss and
the Ctrl-C flag so every process agrees on both.

Data order is a function of ``(seed, epoch)``: each epoch's permutation is drawn from its own generator and cut
into global batches of ``batch_size * processes`` samples, of which each process takes its slice. A resumed run
therefore starts its sampler at the saved position without loading the batches it skips, and ends bitwise equal
to an uninterrupted run on CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import signal
import sys
import threading
import time
from contextlib import nullcontext
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import to_dict, to_yaml
from .model import PromptedModel
from .runs import RunDir, RunDirError
from .train_config import TrainConfig

# The fields a resumed run must share with the saved one: they fix the data order and the global batch.
RESUME_KEYS = ("seed", "batch_size", "grad_accum_steps")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the prompts were not updated and the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped training after ``last/`` and the training state were saved."""


class _Interrupted(Exception):
    """Internal: a stop was requested and every process reached a point where it can be honoured."""


# ----- pure helpers ------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(enabled: bool) -> None:
    """Switches torch to deterministic kernels (and cuDNN off autotuning) when ``enabled``; it fails loudly on an
    op that has no deterministic implementation. Process-wide: affects everything torch runs afterwards."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic matmuls
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's data order: a function of ``(seed, epoch)`` only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Learning-rate multiplier of optimizer step ``step`` (0-based).

    Linear warmup reaches the full rate on the last warmup step (the first step already moves the prompts), then
    ``cosine`` or ``linear`` decay to ``min_lr_ratio`` at ``total_steps``, or ``constant``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(max((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0), 1.0)
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        decay = 1.0 - progress
    else:
        raise ValueError(f"scheduler: unknown schedule {schedule!r}; choose cosine, linear or constant")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def build_optimizer(params: list[torch.nn.Parameter], config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW, SGD with momentum, or Adafactor over ``params`` (one group)."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adafactor":
        return torch.optim.Adafactor(params, lr=lr, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer: unknown optimizer {config.optimizer!r}; choose adamw, sgd or adafactor")


def check_optimizer_params(optimizer: torch.optim.Optimizer, model: PromptedModel) -> None:
    """Raises unless ``optimizer`` holds exactly the model's prompt parameters (by identity) and nothing else of
    the model requires gradients."""
    held = [p for group in optimizer.param_groups for p in group["params"]]
    expected = {id(p) for p in model.prompt_parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    problems = []
    if len(held) != len({id(p) for p in held}):
        problems.append("the optimizer holds a parameter twice")
    extra = [names.get(id(p), "<not a model parameter>") for p in held if id(p) not in expected]
    held_ids = {id(p) for p in held}
    missing = [names[id(p)] for p in model.prompt_parameters() if id(p) not in held_ids]
    frozen_trainable = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in expected]
    if extra:
        problems.append(f"it holds non-prompt parameters {extra}")
    if missing:
        problems.append(f"it misses prompt parameters {missing}")
    if frozen_trainable:
        problems.append(f"frozen parameters still require grad {frozen_trainable}")
    if problems:
        raise RuntimeError("optimizer does not hold exactly the prompt parameters: " + "; ".join(problems))


def _num_rows(dataset: Dataset, split: str) -> int:
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"{split} dataset {type(dataset).__name__} has no len(); the trainer needs a map-style dataset "
            f"(random access by index) to fix the data order and resume mid-epoch"
        ) from None
    if n == 0:
        raise ValueError(f"{split} dataset has no rows; check the data source, split name and filters of the {split} data")
    return n


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class EpochBatches(Sampler[list[int]]):
    """This process's micro-batches of one epoch, from micro-batch ``start`` on.

    The epoch's permutation (from :func:`epoch_generator`) is cut into global micro-batches of
    ``batch_size * world_size`` samples (the last may be shorter); process ``rank`` takes the contiguous slice
    ``[rank * m // world, (rank + 1) * m // world)`` of each global micro-batch of size ``m``. Slices that are
    empty (a last global batch smaller than the world) are not yielded; :meth:`local_size` tells the trainer.
    """

    def __init__(self, num_rows: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int, start: int = 0) -> None:
        self.num_rows, self.world_size, self.rank = num_rows, world_size, rank
        self.global_batch = batch_size * world_size
        self.num_micro = math.ceil(num_rows / self.global_batch)
        self.start = start
        self.order = torch.randperm(num_rows, generator=epoch_generator(seed, epoch))

    def global_size(self, j: int) -> int:
        return min(self.global_batch, self.num_rows - j * self.global_batch)

    def _bounds(self, j: int) -> tuple[int, int]:
        m = self.global_size(j)
        return self.rank * m // self.world_size, (self.rank + 1) * m // self.world_size

    def local_size(self, j: int) -> int:
        lo, hi = self._bounds(j)
        return hi - lo

    def __iter__(self) -> Iterator[list[int]]:
        for j in range(self.start, self.num_micro):
            lo, hi = self._bounds(j)
            if hi > lo:
                base = j * self.global_batch
                yield self.order[base + lo : base + hi].tolist()

    def __len__(self) -> int:
        return sum(1 for j in range(self.start, self.num_micro) if self.local_size(j) > 0)


@dataclasses.dataclass
class _Progress:
    """Where training stands; a copy taken after each optimizer step is what a checkpoint records."""

    epoch: int = 0
    micro: int = 0  # micro-batches of ``epoch`` already consumed
    step: int = 0  # optimizer steps done
    window_loss: float = 0.0  # sum of step losses since the last train line
    window_steps: int = 0
    epoch_loss: float = 0.0
    epoch_steps: int = 0
    metrics_lines: int = 0  # lines of metrics.jsonl written up to this point
    last_eval_step: int = -1
    best_value: float | None = None
    best_step: int = -1
    best_epoch: int = -1


class Trainer:
    """Trains the prompt parameters of ``model``; the backbone stays frozen, in eval mode and bitwise unchanged.

    Args:
        model: any :class:`PromptedModel`; its ``training_step(batch)`` gives the loss and ``eval_step(batch)``
            per-batch metric sums plus ``count``.
        config: the ``train:`` section.
        train_dataset: map-style dataset of dict items (``None`` for evaluation only).
        eval_dataset: evaluated every ``config.eval_every_epochs`` epochs and at the end; selects ``best/``.
        collate_fn: list of items -> batch dict (default: torch's default collate).
        run_dir: where the run is written (see :mod:`promptcore.runs`); ``None`` trains in memory only.
        run_config: the whole run config, written to ``config.yaml`` (default: ``{"train": config}``).
        resume: continue the run in ``run_dir`` from its training state.
        overwrite: replace a run already in ``run_dir`` instead of refusing.

    Example::

        model = wrap(backbone, VPTConfig(num_tokens=10, num_classes=10))
        trainer = Trainer(model, TrainConfig(epochs=5, lr=0.1), train_ds, eval_ds, run_dir="runs/demo")
        result = trainer.fit()            # {"step": ..., "eval": {...}, "best": {...}, ...}
        trainer.evaluate(test_ds)         # {"loss": ..., "accuracy": ..., "count": ...}
    """

    def __init__(
        self,
        model: PromptedModel,
        config: TrainConfig,
        train_dataset: Dataset | None,
        eval_dataset: Dataset | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        run_dir: str | None = None,
        run_config: Any = None,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        if not isinstance(model, PromptedModel):
            raise TypeError(f"Trainer needs a PromptedModel (from promptcore.wrap or a subclass), got {type(model).__name__}")
        if resume and run_dir is None:
            raise ValueError("resume=True needs the run_dir of the run to continue")
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues the run in run_dir, overwrite replaces it")
        self.model, self.config = model, config
        self.train_dataset, self.eval_dataset, self.collate_fn = train_dataset, eval_dataset, collate_fn
        self.num_train = _num_rows(train_dataset, "train") if train_dataset is not None else 0
        if eval_dataset is not None:
            _num_rows(eval_dataset, "eval")

        self.accelerator = self._make_accelerator(config)
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
                raise ValueError(f"gradient_checkpointing: {e}; set train.gradient_checkpointing: false") from None
        model.to(self.device)
        self.params = list(model.prompt_parameters())
        if not self.params:
            raise ValueError(f"{type(model).__name__} has no prompt parameters to train (prompt_module_names={model.prompt_module_names})")
        if self.world_size > 1:
            self._check_same_frozen_weights()
            # Every process starts from rank 0's prompts, whatever each one's initialisation drew.
            for p in self.params:
                dist.broadcast(p.data, src=0)
        num_classes = model.prompt_config().get("num_classes")
        self.num_classes = num_classes if isinstance(num_classes, int) and num_classes > 0 else None

        self.global_batch = config.batch_size * self.world_size * config.grad_accum_steps
        self.lr = config.lr * self.global_batch / 256 if config.lr_scaling == "linear" else config.lr
        self.optimizer = build_optimizer(self.params, config, self.lr)
        check_optimizer_params(self.optimizer, model)
        micro_per_epoch = math.ceil(self.num_train / (config.batch_size * self.world_size)) if self.num_train else 0
        self.steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum_steps)
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.warmup_steps = round(config.warmup_epochs * self.steps_per_epoch) + config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, self.total_steps, self.warmup_steps, config.scheduler, config.min_lr_ratio),
        )

        self.progress = _Progress()
        self._boundary = copy.copy(self.progress)
        self._resumed = False
        self._stop_requested = False
        self._writer = None
        self._last_records: dict[str, dict[str, Any]] = {}  # the latest metrics line of each split
        self._checkpoint_step: int | None = None  # step of the last training state written
        self.run = RunDir(run_dir) if run_dir is not None else None
        if self.run is not None:
            if resume:
                self._load_state()
            elif self.is_main:
                self.run.prepare_new(overwrite)
                self.run.write_config(to_yaml(run_config) if run_config is not None else to_yaml({"train": to_dict(config)}))
            self.accelerator.wait_for_everyone()

    # ----- set-up ----------------------------------------------------------------------------------------------
    @staticmethod
    def _make_accelerator(config: TrainConfig) -> Any:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        # Accelerate keeps its state in process-wide singletons; each Trainer starts from a clean one so several
        # trainers (with different precisions) can run in one process. An existing process group is kept.
        AcceleratorState._reset_state(reset_partial_state=True)
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        # On a machine without GPUs, a multi-process launch (torchrun) must be told to use CPU processes (gloo).
        cpu = launched and not torch.cuda.is_available()
        accelerator = Accelerator(cpu=cpu, mixed_precision=config.mixed_precision)
        if config.mixed_precision == "fp16" and accelerator.scaler is None:
            raise ValueError(
                f"mixed_precision: fp16 needs a CUDA GPU with a gradient scaler, found device {accelerator.device}; "
                f"use bf16 (works on CPU and recent GPUs) or no"
            )
        return accelerator

    def _check_same_frozen_weights(self) -> None:
        """Frozen weights are never synchronised, so they must match on every process from the start: compares a
        per-tensor checksum (a randomly initialised backbone built without a common seed would silently differ)."""
        prompt_ids = {id(p) for p in self.params}
        frozen = [(n, t) for n, t in [*self.model.named_parameters(), *self.model.named_buffers()] if id(t) not in prompt_ids]
        if not frozen:
            return
        sums = torch.stack([t.detach().double().sum() if t.is_floating_point() else t.detach().sum().double() for _, t in frozen])
        low, high = sums.clone(), sums.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        differ = [name for (name, _), a, b in zip(frozen, low.tolist(), high.tolist()) if a != b]
        if differ:
            raise ValueError(
                f"frozen weights differ between the {self.world_size} processes ({', '.join(differ[:5])}"
                f"{' ...' if len(differ) > 5 else ''}); build the model identically on every process: load the same "
                f"pretrained weights, or seed (promptcore.trainer.seed_everything) before building a random one"
            )

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

    def _rng_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """This process's RNG states: JSON-able (python, numpy) and tensors (torch CPU, CUDA)."""
        np_state = np.random.get_state()
        plain = {
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        }
        tensors = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        return plain, tensors

    @staticmethod
    def _set_rng_state(plain: dict[str, Any], tensors: dict[str, Any]) -> None:
        version, state, gauss = plain["python"]
        random.setstate((version, tuple(state), gauss))
        name, keys, pos, has_gauss, cached = plain["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(tensors["torch"])
        if tensors["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(tensors["cuda"])

    def _gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    # ----- checkpoints -----------------------------------------------------------------------------------------
    def _save_checkpoint(self, progress: _Progress) -> None:
        """Writes ``last/`` and ``state/`` for ``progress`` (main process; all processes share RNG states)."""
        if self.run is None:
            return
        plain, rng_tensors = self._rng_state()
        plains, rng_all = self._gather(plain), self._gather(rng_tensors)
        if self.is_main:
            self.model.save_prompts(self.run.last, extra={"step": progress.step, "epoch": progress.epoch})
            meta = {
                "progress": dataclasses.asdict(progress),
                "world_size": self.world_size,
                "num_train": self.num_train,
                "train": to_dict(self.config),
                "rng": plains,
            }
            tensors = {
                "prompts": {name: m.state_dict() for name, m in self.model.prompt_modules().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "rng": rng_all,
            }
            self.run.save_state(meta, tensors)
        self._checkpoint_step = progress.step
        self.accelerator.wait_for_everyone()

    def _load_state(self) -> None:
        assert self.run is not None
        meta, tensors = self.run.load_state()
        saved = meta["train"]
        found = {"world_size": self.world_size, "num_train": self.num_train, **{k: getattr(self.config, k) for k in RESUME_KEYS}}
        expected = {"world_size": meta["world_size"], "num_train": meta["num_train"], **{k: saved[k] for k in RESUME_KEYS}}
        diffs = [f"{k}: run has {expected[k]!r}, now {found[k]!r}" for k in found if found[k] != expected[k]]
        if diffs:
            raise RunDirError(
                f"cannot resume {self.run.path}: the data order would differ ({'; '.join(diffs)}); resume with the "
                f"run's config.yaml, the same dataset and the same number of processes"
            )
        for name, module in self.model.prompt_modules().items():
            module.load_state_dict(tensors["prompts"][name])
        self.optimizer.load_state_dict(tensors["optimizer"])
        self.scheduler.load_state_dict(tensors["scheduler"])
        if self.scaler is not None and tensors["scaler"]:
            self.scaler.load_state_dict(tensors["scaler"])
        self._set_rng_state(meta["rng"][self.rank], tensors["rng"][self.rank])
        self.progress = _Progress(**meta["progress"])
        self._boundary = copy.copy(self.progress)
        self._checkpoint_step = self.progress.step
        if self.is_main:
            # Lines written after the checkpoint are redone by the resumed run, so the file ends as if never killed.
            self.run.truncate_metrics(self.progress.metrics_lines)
        self._last_records = {r["split"]: r for r in self.run.read_metrics()[: self.progress.metrics_lines]}
        self._resumed = True

    # ----- logging ---------------------------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        self.progress.metrics_lines += 1
        self._last_records[record["split"]] = record
        if self.run is not None and self.is_main:
            self.run.append_metrics(record)
        if self._writer is not None:
            split = record["split"]
            for key, value in record.items():
                if key not in ("split", "step", "epoch") and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"{split}/{key}", value, record["step"])

    def _open_writer(self) -> None:
        if self.run is None or not self.is_main or not self.config.tensorboard:
            return
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a killed run wrote after its checkpoint.
        self._writer = SummaryWriter(str(self.run.tensorboard), purge_step=self.progress.step + 1 if self._resumed else None)

    def _flush_window(self) -> None:
        p = self.progress
        if p.window_steps:
            # The rate the window's last step used (the scheduler already points at the next step's).
            lr = self.lr * lr_factor(p.step - 1, self.total_steps, self.warmup_steps, self.config.scheduler, self.config.min_lr_ratio)
            self._log({"split": "train", "epoch": p.epoch, "step": p.step, "loss": p.window_loss / p.window_steps, "lr": lr})
            p.window_loss, p.window_steps = 0.0, 0

    # ----- signals ---------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_requested:  # a second Ctrl-C stops at once, without saving
            self._restore_signals()
            raise KeyboardInterrupt
        self._stop_requested = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving the run (Ctrl-C again to abort)", file=sys.stderr)

    def _install_signals(self) -> None:
        self._old_handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    # ----- training --------------------------------------------------------------------------------------------
    def _check_labels(self, batch: Any, where: str) -> None:
        labels = batch.get("labels") if isinstance(batch, dict) else None
        if (
            self.num_classes is None
            or not isinstance(labels, torch.Tensor)
            or labels.device.type != "cpu"  # checking on a GPU would cost a sync per batch
            or labels.dim() != 1
            or labels.dtype not in (torch.int64, torch.int32)
            or labels.numel() == 0
        ):
            return
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"label {bad} is out of range for a model with {self.num_classes} classes ({where}); labels must lie "
                f"in [0, {self.num_classes - 1}]: check the dataset's labels or set the model's num_classes to match"
            )

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

    def _reduce_step(self, loss_sum: torch.Tensor) -> tuple[float, bool]:
        """Sums prompt gradients, loss and stop flag over processes; returns (global mean loss, stop)."""
        if self.world_size == 1:
            return float(loss_sum), self._stop_requested
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flag = torch.tensor([float(self._stop_requested)], device=self.device)
        flat = torch.cat([g.float().flatten() for g in grads] + [loss_sum.float().view(1), flag])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(self.params, grads):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).to(g.dtype)
            offset += n
        return float(flat[-2]), bool(flat[-1] > 0)

    def _optimizer_step(self, batches: Iterator[Any], sampler: EpochBatches, micro: range) -> tuple[float, bool]:
        """One optimizer step over micro-batches ``micro`` of the epoch; returns (global mean loss, stop)."""
        p = self.progress
        total = sum(sampler.global_size(j) for j in micro)
        loss_sum = torch.zeros((), device=self.device)
        for j in micro:
            n = sampler.local_size(j)
            if n == 0:
                continue
            batch = next(batches)
            self._check_labels(batch, f"training batch {j} of epoch {p.epoch}")
            batch = _to_device(batch, self.device)
            with self._autocast():
                loss = self.model.training_step(batch)
            if loss.dim() != 0:
                raise ValueError(f"{type(self.model).__name__}.training_step returned shape {tuple(loss.shape)}; it must return the mean loss, a scalar")
            # Weighted by this slice's share of the step's global samples, so the summed gradient is the mean
            # over the global batch, whatever the split across processes and micro-batches.
            weighted = loss.float() if n == total else loss.float() * (n / total)
            (self.scaler.scale(weighted) if self.scaler is not None else weighted).backward()
            loss_sum += weighted.detach()
        loss_value, stop = self._reduce_step(loss_sum)
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            where = ""
            if self.run is not None:
                kept = f"keeps the checkpoint of step {self._checkpoint_step}" if self._checkpoint_step is not None else "has no checkpoint yet"
                where = f" (run directory {self.run.path} {kept})"
            raise NonFiniteLossError(
                f"loss is {loss_value} at step {p.step + 1} (epoch {p.epoch}); training stopped before updating the "
                f"prompts{where}. Lower the learning rate, enable grad_clip, or use bf16 instead of fp16"
            )
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, stop

    def _train_epoch(self, bar: Any) -> bool:
        """Runs the rest of ``progress.epoch``; returns False when max_steps stopped training inside it."""
        cfg, p = self.config, self.progress
        sampler = EpochBatches(self.num_train, cfg.batch_size, self.world_size, self.rank, cfg.seed, p.epoch, start=p.micro)
        batches = iter(self._loader(self.train_dataset, sampler, epoch_generator(cfg.seed, p.epoch)))
        accum = cfg.grad_accum_steps
        tick = time.perf_counter()
        while p.micro < sampler.num_micro:
            if p.step >= self.total_steps:
                return False
            micro = range(p.micro, min(p.micro + accum, sampler.num_micro))
            loss, stop = self._optimizer_step(batches, sampler, micro)
            samples = sum(sampler.global_size(j) for j in micro)
            p.step += 1
            p.micro = micro.stop
            p.window_loss += loss
            p.window_steps += 1
            p.epoch_loss += loss
            p.epoch_steps += 1
            now = time.perf_counter()
            throughput = samples / max(now - tick, 1e-9)
            tick = now
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{throughput:.0f}", refresh=False)
            if p.step % cfg.log_every_steps == 0:
                if self._writer is not None:
                    self._writer.add_scalar("train/samples_per_s", throughput, p.step)
                self._flush_window()
            self._boundary = copy.copy(p)
            if cfg.save_every_steps and p.step % cfg.save_every_steps == 0 and p.micro < sampler.num_micro:
                self._save_checkpoint(p)
            if stop:
                raise _Interrupted
        return True

    def _end_epoch(self) -> None:
        cfg, p = self.config, self.progress
        self._flush_window()
        if p.epoch_steps:
            self._log({"split": "epoch", "epoch": p.epoch, "step": p.step, "loss": p.epoch_loss / p.epoch_steps})
        if self.eval_dataset is not None and cfg.eval_every_epochs and (p.epoch + 1) % cfg.eval_every_epochs == 0:
            self._evaluate_and_keep_best()
        p.epoch += 1
        p.micro, p.epoch_loss, p.epoch_steps = 0, 0.0, 0
        self._save_checkpoint(p)
        self._boundary = copy.copy(p)

    def _evaluate_and_keep_best(self) -> dict[str, float]:
        cfg, p = self.config, self.progress
        metrics = self.evaluate()
        if cfg.metric not in metrics:
            raise ValueError(
                f"metric: {cfg.metric!r} is not among the eval metrics of {type(self.model).__name__} "
                f"({', '.join(k for k in metrics if k != 'count')}); set train.metric to one of them"
            )
        self._log({"split": "eval", "epoch": p.epoch, "step": p.step, **metrics})
        p.last_eval_step = p.step
        value = metrics[cfg.metric]
        better = p.best_value is None or (value > p.best_value if cfg.metric_mode == "max" else value < p.best_value)
        if better:
            p.best_value, p.best_step, p.best_epoch = value, p.step, p.epoch
            if self.run is not None and self.is_main:
                self.model.save_prompts(self.run.best, extra={"step": p.step, "epoch": p.epoch, "metric": cfg.metric, "value": value})
        return metrics

    def fit(self) -> dict[str, Any]:
        """Trains until ``epochs`` or ``max_steps``; returns the last step, the final eval metrics and the best.

        Raises:
            NonFiniteLossError: the loss became NaN/inf (the run directory keeps the last good checkpoint).
            TrainingInterrupted: Ctrl-C or SIGTERM; ``last/`` and the training state were saved first.
        """
        if self.train_dataset is None:
            raise ValueError("fit() needs a train dataset; this Trainer was built with train_dataset=None (evaluation only)")
        cfg, p = self.config, self.progress
        if not self._resumed and p.step == 0:
            seed_everything(cfg.seed)
        self._set_train_mode()
        self._open_writer()
        self._install_signals()
        bar = None
        if cfg.progress_bar and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=p.step, desc="train", unit="step", dynamic_ncols=True)
        try:
            while p.epoch < cfg.epochs and p.step < self.total_steps:
                if not self._train_epoch(bar):
                    break
                self._end_epoch()
            self._flush_window()
            if self.eval_dataset is not None and p.last_eval_step != p.step:
                self._evaluate_and_keep_best()
            self._save_checkpoint(p)
        except _Interrupted:
            self._save_checkpoint(self._boundary)
            if self.run is None:
                raise TrainingInterrupted(f"training interrupted at step {self._boundary.step} (no run_dir: nothing was saved)") from None
            raise TrainingInterrupted(
                f"training interrupted at step {self._boundary.step}: last/ and the training state were saved; "
                f"continue with resume=True / --resume {self.run.path}"
            ) from None
        finally:
            self._restore_signals()
            if bar is not None:
                bar.close()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
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
            "epoch": p.epoch,
            "train_loss": self._last_records.get("train", {}).get("loss"),
            "eval": {k: v for k, v in final.items() if k not in ("split", "step", "epoch")},
            "best": best,
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
            raise ValueError("no eval dataset: pass one to evaluate(dataset) or to Trainer(eval_dataset=...)")
        n = _num_rows(dataset, "eval")
        size = self.config.eval_batch_size or self.config.batch_size
        # Strided shards: every sample is evaluated once, and rank 0 always has one when the dataset has any.
        indices = list(range(self.rank, n, self.world_size))
        batches = [indices[i : i + size] for i in range(0, len(indices), size)]
        was_training = self.model.training
        self.model.eval()
        acc_dtype = torch.float64 if self.device.type != "mps" else torch.float32
        sums: dict[str, torch.Tensor] = {}
        # Evaluation draws nothing from the training RNG streams, so how often it runs cannot change training.
        fork_devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=fork_devices):
                for i, batch in enumerate(self._loader(dataset, batches, torch.Generator())):
                    if self._stop_requested and self.world_size == 1:
                        raise _Interrupted
                    self._check_labels(batch, f"eval batch {i}")
                    with self._autocast():
                        out = self.model.eval_step(_to_device(batch, self.device))
                    for key, value in out.items():
                        value = torch.as_tensor(value, device=self.device).detach().to(acc_dtype)
                        sums[key] = sums[key] + value if key in sums else value
        finally:
            if was_training:
                self._set_train_mode()
        keys = sorted(sums)
        if self.world_size > 1:
            shared = [keys]
            dist.broadcast_object_list(shared, src=0)
            keys = shared[0]
            stacked = torch.stack([sums.get(k, torch.zeros((), device=self.device, dtype=acc_dtype)) for k in keys])
            dist.all_reduce(stacked)
            sums = dict(zip(keys, stacked))
        if "count" not in sums:
            raise ValueError(
                f"{type(self.model).__name__}.eval_step returned {keys} without 'count'; it must return per-batch sums "
                f"of each metric plus 'count' (the number of samples) so the trainer can average them"
            )
        count = float(sums["count"])
        if count <= 0:
            raise ValueError(f"{type(self.model).__name__}.eval_step reported a total count of {count}; expected the number of samples")
        metrics = {k: float(v) / count for k, v in sums.items() if k != "count"}
        metrics["count"] = int(count)
        return metrics


__all__ = [
    "EpochBatches",
    "NonFiniteLossError",
    "Trainer",
    "TrainingInterrupted",
    "build_optimizer",
    "check_optimizer_params",
    "epoch_generator",
    "lr_factor",
    "seed_everything",
    "set_determinism",
]
