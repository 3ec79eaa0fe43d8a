"""Callbacks: code that runs at fixed points of :meth:`promptcore.trainer.Trainer.fit`.

A callback subclasses :class:`Callback` and overrides the hooks it needs (the shape of Hugging Face's
``TrainerCallback`` and Lightning's ``Callback``, kept small). Every hook gets the trainer, which exposes
``config``, ``model``, ``optimizer``, ``progress`` (``step``, ``epoch``), ``total_steps``, ``run`` (the
:class:`~promptcore.runs.RunDir`, or ``None``), ``is_main``, ``world_size`` and ``resumed``.

Hooks run on every process, with the same values on each (losses and metrics are global); write files on the
main process only (``trainer.is_main``). Order in a run::

    on_init             end of Trainer(...), before the run directory is written: check settings, raise UserError
    on_train_begin      fit() starts (also when resuming)
    on_epoch_begin      before an epoch's first step (a resumed run: before its first step in the epoch it resumes)
    on_step_end         after each optimizer step, with a StepInfo
    on_log              each metrics.jsonl record (train windows, epoch ends, evaluations), as it is written
    on_epoch_end        after an epoch's last step, before its evaluation
    on_evaluate         after each evaluation during fit(), with the metrics
    on_save             after best/ ("best") or a checkpoint, last/ + state/ ("last"), was written
    on_train_end        fit() ends: finished, stopped, interrupted or failed (release what the callback holds)

Stopping: a hook calls ``trainer.request_stop(reason)``. The trainer finishes the current step (or epoch end),
makes every process agree (one all-reduce of the request flag, so a request on any process stops all of them),
evaluates if the last step was not evaluated, saves the checkpoint and returns from ``fit()`` with the reason
in ``result["stopped"]``. A stopped run stays finished when resumed.

State: a callback whose behaviour depends on what it saw (early stopping's best value and patience count)
returns it from :meth:`Callback.state_dict` (JSON-able); the trainer stores it in each checkpoint and hands it
back through :meth:`Callback.load_state_dict` on resume, so a resumed run decides as the uninterrupted one.

By name from YAML: callbacks registered in :data:`CALLBACKS` (``register_callback(name, factory)``)::

    train:
      callbacks: [step_timer, {name: early_stopping, patience: 3, min_delta: 0.001}]

This module imports no torch, so ``train.callbacks`` is checked with the rest of a config before torch loads; a
package whose callback is registered by a module that imports torch declares its name where its light modules run
(``CALLBACKS.declare(name, module)``, as :mod:`vpt.clip` does for ``gpa``): the name is then checked without it, and
the callback's arguments once the rest of the config is valid (:func:`check_callback_specs`).

The progress bar and TensorBoard are built-in callbacks the trainer adds itself (``train.progress_bar``,
``train.tensorboard``). ``metrics.jsonl`` and checkpoints stay in the trainer: the training state counts the
metrics lines it covers, and resume truncates the file to them, which is what makes a resumed run bitwise equal.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .config import library_check
from .errors import UserError
from .io import atomic_write_text
from .plugins import known
from .registry import Registry, did_you_mean

if TYPE_CHECKING:
    import torch

    from .trainer import Trainer


@dataclass(frozen=True)
class StepInfo:
    """What :meth:`Callback.on_step_end` learns about the step just done.

    Attributes:
        step: optimizer steps done (1 after the first).
        epoch: the epoch the step belongs to (0-based).
        loss: the step's loss, averaged over the global batch: a 0-dim tensor on the training device. The trainer
            reads losses every ``log_every_steps`` only; ``float(info.loss)`` makes the host wait for the device
            in every step (log records, :meth:`Callback.on_log`, carry the window's mean as a number).
        samples: samples in the step's global batch.
        seconds: wall time since the previous step ended (data loading, forward, backward, optimizer step).
    """

    step: int
    epoch: int
    loss: torch.Tensor
    samples: int
    seconds: float


class Callback:
    """Base class: every hook is a no-op; override the ones you need. See the module docstring for the order."""

    def on_init(self, trainer: "Trainer") -> None:
        """End of ``Trainer(...)``, before the run directory is written: check settings against the model."""

    def on_train_begin(self, trainer: "Trainer") -> None:
        """``fit()`` starts; ``trainer.progress.step`` is above 0 when resuming."""

    def on_epoch_begin(self, trainer: "Trainer") -> None:
        """Before the first step of epoch ``trainer.progress.epoch`` (0-based); a run resumed in the middle of an
        epoch calls it before its first step there (``trainer.progress.micro`` is then above 0)."""

    def on_step_end(self, trainer: "Trainer", info: StepInfo) -> None:
        """After each optimizer step."""

    def on_log(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        """A record was appended to ``metrics.jsonl`` (``split``: train, epoch or eval). Do not modify it."""

    def on_epoch_end(self, trainer: "Trainer") -> None:
        """After the last step of epoch ``trainer.progress.epoch``, before its evaluation and checkpoint."""

    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        """After an evaluation during ``fit()``; ``metrics`` as :meth:`Trainer.evaluate` returns them."""

    def on_save(self, trainer: "Trainer", path: Path, kind: str) -> None:
        """The main process wrote ``best/`` (``kind`` "best") or a checkpoint, ``last/`` and ``state/`` ("last")."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """``fit()`` ends, however it ends."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state saved with each checkpoint (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what :meth:`state_dict` returned, when a run resumes."""


CALLBACKS: Registry[Callable[..., Callback]] = Registry("callback")


def register_callback(name: str, factory: Callable[..., Callback]) -> Callable[..., Callback]:
    """Makes ``factory`` (a :class:`Callback` subclass, or a function returning one) available as ``name`` in
    ``train.callbacks``; YAML arguments are its keyword arguments."""
    return CALLBACKS.add(name, factory)


def _parse_spec(spec: Any, where: str) -> tuple[str, dict[str, Any]]:
    """The name and the arguments of a ``train.callbacks`` entry; the name is checked against the registered and
    the declared callbacks (nothing is imported)."""
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, dict):
        if "name" not in spec:
            raise UserError(f"{where}: a callback mapping needs 'name' (one of {', '.join(CALLBACKS.known_names())}), found {spec!r}")
        name, kwargs = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    else:
        raise UserError(f"{where}: expected a callback name or a mapping with 'name', found {spec!r}")
    if not isinstance(name, str) or not known(CALLBACKS, name):
        names = CALLBACKS.known_names()
        raise UserError(f"{where}: unknown callback {name!r}.{did_you_mean(str(name), names)} Known: {', '.join(names)}")
    return name, kwargs


def build_callback(spec: str | dict[str, Any], where: str = "callbacks") -> Callback:
    """The callback a ``train.callbacks`` entry names (a name, or ``{name: ..., arg: value}``)."""
    name, kwargs = _parse_spec(spec, where)
    factory = CALLBACKS.get(name)  # a declared callback's module is imported here
    accepted = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
    for key in kwargs:
        if key not in accepted:
            raise UserError(
                f"{where}.{key}: unknown argument of callback {name!r}.{did_you_mean(str(key), accepted)} "
                f"It takes {', '.join(accepted) or 'no arguments'}"
            )
    try:
        callback = factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where} ({name}): {e}") from None
    if not isinstance(callback, Callback):
        raise TypeError(f"callback {name!r} built a {type(callback).__name__}, not a promptcore.callbacks.Callback")
    return callback


def check_callback_specs(specs: list[Any]) -> None:
    """Raises :class:`UserError` for the first entry of ``train.callbacks`` that does not build. An entry naming a
    callback that is only declared (its module, which may import torch, not imported yet) is checked by name here
    and built through :func:`promptcore.config.library_check`: once the rest of the config is valid."""
    for i, spec in enumerate(specs):
        where = f"callbacks[{i}]"
        name, _ = _parse_spec(spec, where)
        if name in CALLBACKS:
            build_callback(spec, where)
        else:
            library_check(lambda spec=spec, where=where: build_callback(spec, where))


# ----- built-in callbacks the trainer adds from its config ---------------------------------------------------------
class ProgressBar(Callback):
    """A tqdm bar over the run's optimizer steps with samples/s and the loss of the latest train line (main
    process; reading each step's loss would make every step wait for the device)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.loss = "-"

    def on_train_begin(self, trainer: "Trainer") -> None:
        if trainer.is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=trainer.total_steps, initial=trainer.progress.step, desc="train", unit="step", dynamic_ncols=True)

    def on_epoch_begin(self, trainer: "Trainer") -> None:
        """Before the first step of epoch ``trainer.progress.epoch`` (0-based); a run resumed in the middle of an
        epoch calls it before its first step there (``trainer.progress.micro`` is then above 0)."""

    def on_step_end(self, trainer: "Trainer", info: StepInfo) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=self.loss, samples_s=f"{info.samples / max(info.seconds, 1e-9):.0f}", refresh=False)

    def on_log(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        if record["split"] == "train":
            self.loss = f"{record['loss']:.4f}"

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TensorBoard(Callback):
    """Every metrics record as TensorBoard scalars (``train/loss``, ``eval/accuracy`` ...) in the run's ``tb/``,
    plus ``train/samples_per_s`` at each train line (main process, with a run directory)."""

    def __init__(self) -> None:
        self.writer: Any = None

    def on_train_begin(self, trainer: "Trainer") -> None:
        if trainer.run is None or not trainer.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a killed run wrote after its checkpoint.
        purge = trainer.progress.step + 1 if trainer.resumed else None
        self.writer = SummaryWriter(str(trainer.run.tensorboard), purge_step=purge)

    def on_epoch_begin(self, trainer: "Trainer") -> None:
        """Before the first step of epoch ``trainer.progress.epoch`` (0-based); a run resumed in the middle of an
        epoch calls it before its first step there (``trainer.progress.micro`` is then above 0)."""

    def on_step_end(self, trainer: "Trainer", info: StepInfo) -> None:
        if self.writer is not None and info.step % trainer.config.log_every_steps == 0:
            self.writer.add_scalar("train/samples_per_s", info.samples / max(info.seconds, 1e-9), info.step)

    def on_log(self, trainer: "Trainer", record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key not in ("split", "step", "epoch") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def on_train_end(self, trainer: "Trainer") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# ----- registered callbacks ----------------------------------------------------------------------------------------
class StepTimer(Callback):
    """Records the wall time of every optimizer step (data loading, forward, backward and the optimizer step).

    The times are in :attr:`times` (``{step: seconds}``) and, with a run directory, in ``step_times.jsonl`` (one
    ``{"step", "epoch", "seconds"}`` line per step, main process). A resumed run drops the lines of the steps
    after its checkpoint and times them again. Registered as ``step_timer``.
    """

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self._file: Any = None

    def on_train_begin(self, trainer: "Trainer") -> None:
        if trainer.run is None or not trainer.is_main:
            return
        path = trainer.run.step_times
        if path.is_file():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line torn by a kill, and everything after it
                if record["step"] <= trainer.progress.step:
                    kept.append(line + "\n")
            atomic_write_text(path, "".join(kept))
        self._file = open(path, "a")

    def on_epoch_begin(self, trainer: "Trainer") -> None:
        """Before the first step of epoch ``trainer.progress.epoch`` (0-based); a run resumed in the middle of an
        epoch calls it before its first step there (``trainer.progress.micro`` is then above 0)."""

    def on_step_end(self, trainer: "Trainer", info: StepInfo) -> None:
        self.times[info.step] = info.seconds
        if self._file is not None:
            self._file.write(json.dumps({"step": info.step, "epoch": info.epoch, "seconds": info.seconds}) + "\n")
            self._file.flush()

    def on_train_end(self, trainer: "Trainer") -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class EarlyStopping(Callback):
    """Stops training when the eval metric has not improved for ``patience`` evaluations in a row.

    An evaluation improves on the best so far when the metric is above it by more than ``min_delta`` (``mode``
    max; below it for min). Its state (best value, its step, evaluations without improvement) is saved with each
    checkpoint, so a resumed run stops where the uninterrupted one stops. Registered as ``early_stopping``.

    Args:
        patience: evaluations without improvement before stopping (at least 1).
        min_delta: the smallest change that counts as an improvement (>= 0).
        metric: the eval metric to watch (default: ``train.metric``); one of ``model.metric_names()``.
        mode: ``max`` or ``min`` (default: ``train.metric_mode`` when watching ``train.metric``, else ``max``).
    """

    def __init__(self, patience: int = 3, min_delta: float = 0.0, metric: str | None = None, mode: str | None = None) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise UserError(f"patience: must be an integer >= 1, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) or min_delta < 0:
            raise UserError(f"min_delta: must be a finite number >= 0, got {min_delta!r}")
        if mode not in (None, "max", "min"):
            raise UserError(f"mode: must be max or min, got {mode!r}")
        if metric is not None and not isinstance(metric, str):
            raise UserError(f"metric: must be a metric name, got {metric!r}")
        self.patience, self.min_delta, self.metric, self.mode = patience, float(min_delta), metric, mode
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0

    def on_init(self, trainer: "Trainer") -> None:
        cfg = trainer.config
        if self.metric is None:
            self.metric = cfg.metric
        if self.mode is None:
            self.mode = cfg.metric_mode if self.metric == cfg.metric else "max"
        if trainer.eval_dataset is None or not cfg.eval_every_epochs:
            raise UserError(
                "early_stopping: needs evaluations during training; pass an eval dataset and set "
                "train.eval_every_epochs >= 1 (or remove the callback)"
            )
        names = trainer.model.metric_names()
        if self.metric not in names:
            raise UserError(
                f"early_stopping: metric {self.metric!r} is not among the eval metrics of {type(trainer.model).__name__} "
                f"({', '.join(names)}); set its metric to one of them"
            )

    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        value = metrics[self.metric]
        if self.best is None or (value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta):
            self.best, self.best_step, self.bad_evals = value, trainer.progress.step, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            trainer.request_stop(
                f"early_stopping: eval {self.metric} did not improve by more than {self.min_delta} for "
                f"{self.bad_evals} evaluations (best {self.best:.6g} at step {self.best_step})"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.bad_evals = state["best"], state["best_step"], state["bad_evals"]


register_callback("step_timer", StepTimer)
register_callback("early_stopping", EarlyStopping)


class CallbackList(list):
    """The callbacks of a run, in the order their hooks run, and the keys their states are saved under: the class
    name, numbered when a class appears twice (``StepTimer``, ``StepTimer.2``)."""

    def __init__(self, callbacks: list[Callback]) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: {cb!r} is not a promptcore.callbacks.Callback (subclass it and override its hooks)")
        super().__init__(callbacks)
        self.keys, counts = [], {}
        for cb in callbacks:
            name = type(cb).__name__
            counts[name] = counts.get(name, 0) + 1
            self.keys.append(name if counts[name] == 1 else f"{name}.{counts[name]}")

    @classmethod
    def for_run(cls, progress_bar: bool, tensorboard: bool, specs: list[Any], extra: Any = ()) -> "CallbackList":
        """The built-in callbacks ``progress_bar`` and ``tensorboard`` ask for, those ``specs`` (``train.callbacks``)
        name, then ``extra``."""
        builtin: list[Callback] = [ProgressBar()] if progress_bar else []
        if tensorboard:
            builtin.append(TensorBoard())
        named = [build_callback(spec, f"train.callbacks[{i}]") for i, spec in enumerate(specs)]
        return cls([*builtin, *named, *extra])

    def call(self, hook: str, trainer: "Trainer", *args: Any) -> None:
        for cb in self:
            getattr(cb, hook)(trainer, *args)

    def state_dict(self) -> dict[str, Any]:
        """The callbacks' non-empty states, detached (a JSON round trip), by key."""
        states = {key: cb.state_dict() for key, cb in zip(self.keys, self)}
        return json.loads(json.dumps({k: v for k, v in states.items() if v}))

    def load_state_dict(self, states: dict[str, Any]) -> list[str]:
        """Hands each callback its saved state; returns the keys of saved states no callback took, sorted."""
        for key, cb in zip(self.keys, self):
            if key in states:
                cb.load_state_dict(states[key])
        return sorted(set(states) - set(self.keys))


__all__ = [
    "CALLBACKS",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "ProgressBar",
    "StepInfo",
    "StepTimer",
    "TensorBoard",
    "build_callback",
    "check_callback_specs",
    "register_callback",
]
