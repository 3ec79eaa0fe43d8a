"""The training state of a run (``state/``): what a checkpoint records, reading it back, and what a resume checks.

A :class:`TrainingState` is a plain record: the trainer fills one at a checkpoint and gets one back on resume. This
module reads and writes it through :class:`~promptcore.runs.RunDir`, checks it against the resuming run
(:func:`check_resume_settings`), records what a resumed config changed (:func:`record_config_changes`) and takes and
restores the RNG states (:func:`rng_state`, :func:`set_rng_state`). It knows nothing of the trainer.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from typing import Any

import numpy as np
import torch
import yaml

from .config import to_dict, to_yaml
from .optim import OPTIMIZER_STATE_FACTOR
from .runs import RunDir, RunDirError, format_size

# The fields a resumed run must share with the saved one: they fix the data order and the global batch.
RESUME_KEYS = ("seed", "batch_size", "grad_accum_steps", "drop_last")
# Fields a resumed run cannot change either: the optimizer state and best/ belong to them.
FIXED_ON_RESUME = ("optimizer", "metric", "metric_mode")


@dataclasses.dataclass
class Progress:
    """Where training stands; a copy taken after each optimizer step is what a checkpoint records.

    The loss sums stay on the device while training runs (0-dim float64 tensors, replaced, never changed in place, so
    a copy keeps its values); they are read at a log line, an epoch end and a checkpoint (:meth:`as_dict`)."""

    epoch: int = 0
    micro: int = 0  # micro-batches of ``epoch`` already consumed
    step: int = 0  # optimizer steps done
    window_loss: float | torch.Tensor = 0.0  # sum of step losses since the last train line
    window_steps: int = 0
    epoch_loss: float | torch.Tensor = 0.0
    epoch_steps: int = 0
    metrics_lines: int = 0  # lines of metrics.jsonl written up to this point
    last_eval_step: int = -1
    best_value: float | None = None
    best_step: int = -1
    best_epoch: int = -1
    stop_reason: str | None = None  # why a callback stopped the run (it stays finished when resumed)
    start_loss: float | torch.Tensor | None = None  # the first step's loss: what a diverging run is measured against

    @property
    def last_epoch(self) -> int:
        """The epoch (0-based, as every record numbers it) of the last step done; ``epoch`` is the epoch in
        progress, one further once an epoch has ended."""
        return self.epoch - 1 if self.micro == 0 and self.epoch > 0 else self.epoch

    def add_loss(self, loss: torch.Tensor) -> None:
        """Counts an optimizer step's loss (a device tensor) in the window and epoch sums, without reading it."""
        self.window_loss = self.window_loss + loss
        self.epoch_loss = self.epoch_loss + loss
        self.window_steps += 1
        self.epoch_steps += 1

    def as_dict(self) -> dict[str, Any]:
        """Plain values (the loss sums read from the device), as the training state records them."""
        start = None if self.start_loss is None else float(self.start_loss)
        return {
            **dataclasses.asdict(self),
            "window_loss": float(self.window_loss),
            "epoch_loss": float(self.epoch_loss),
            "start_loss": start,
        }


@dataclasses.dataclass
class TrainingState:
    """What ``state/`` holds.

    Attributes:
        progress: where training stood (the trainer's progress record as a dict of plain values).
        world_size: processes of the run; ``num_train``: rows of its train dataset.
        train: the ``train:`` section the state was written with.
        groups: the optimizer groups' names.
        callbacks: the callbacks' states, by key.
        rng: each process's RNG states, ``(plain, tensors)`` as :func:`rng_state` gives them.
        prompts: each trainable module's state dict.
        optimizer: the optimizer's state dict (as a 1-process optimizer gives it).
        scaler: the fp16 gradient scaler's state dict (empty without one).
    """

    progress: dict[str, Any]
    world_size: int
    num_train: int
    train: dict[str, Any]
    groups: list[str]
    callbacks: dict[str, Any]
    rng: list[tuple[dict[str, Any], dict[str, Any]]]
    prompts: dict[str, dict[str, torch.Tensor]]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]


def save_training_state(run: RunDir, state: TrainingState) -> None:
    """Writes ``state`` to ``run``'s ``state/`` (JSON-able values as JSON, tensors in the tensor file)."""
    meta = {
        "progress": state.progress,
        "world_size": state.world_size,
        "num_train": state.num_train,
        "train": state.train,
        "groups": state.groups,
        "callbacks": state.callbacks,
        "rng": [plain for plain, _ in state.rng],
    }
    tensors = {
        "prompts": state.prompts,
        "optimizer": state.optimizer,
        "scaler": state.scaler,
        "rng": [tensors for _, tensors in state.rng],
    }
    run.save_state(meta, tensors)


def load_training_state(run: RunDir) -> TrainingState:
    """Reads ``run``'s ``state/`` (see :meth:`RunDir.load_state` for the errors)."""
    meta, tensors = run.load_state()
    return TrainingState(
        progress=meta["progress"],
        world_size=meta["world_size"],
        num_train=meta["num_train"],
        train=meta["train"],
        groups=meta.get("groups", ["all"]),  # checkpoints of earlier versions had one group
        callbacks=meta.get("callbacks", {}),
        rng=list(zip(meta["rng"], tensors["rng"])),
        prompts=tensors["prompts"],
        optimizer=tensors["optimizer"],
        scaler=tensors["scaler"],
    )


def check_resume_settings(state: TrainingState, saved: dict[str, Any], current: dict[str, Any], world_size: int, num_train: int, groups: list[str], path: Any) -> None:
    """Raises a :class:`RunDirError` when the resuming run cannot continue ``state``: a different data order
    (:data:`RESUME_KEYS`, the number of processes, the dataset size), or different settings the optimizer state and
    ``best/`` belong to (:data:`FIXED_ON_RESUME`, the optimizer groups). ``saved`` and ``current`` are the saved and
    the new ``train:`` sections as dicts."""
    found = {"world_size": world_size, "num_train": num_train, **{k: current[k] for k in RESUME_KEYS}}
    expected = {"world_size": state.world_size, "num_train": state.num_train, **{k: saved[k] for k in RESUME_KEYS}}
    diffs = [f"{k}: run has {expected[k]!r}, now {found[k]!r}" for k in found if found[k] != expected[k]]
    if diffs:
        raise RunDirError(
            f"cannot resume {path}: the data order would differ ({'; '.join(diffs)}); resume with the "
            f"run's config.yaml, the same dataset and the same number of processes"
        )
    fixed = [f"{k}: run has {saved[k]!r}, now {current[k]!r}" for k in FIXED_ON_RESUME if saved[k] != current[k]]
    if state.groups != groups:
        fixed.append(f"optimizer groups (train.param_groups): run has {state.groups}, now {groups}")
    if fixed:
        raise RunDirError(
            f"cannot resume {path}: {'; '.join(fixed)}; the run's optimizer state and best/ belong to "
            f"its settings. Resume with them, or start a new run (overwrite=True / --overwrite, or another directory)"
        )


def record_config_changes(run: RunDir, saved: dict[str, Any], current: dict[str, Any], run_config: Any) -> list[str]:
    """What a resumed run changed, recorded in ``run``'s ``config.yaml`` (the first config stays in
    ``config.original.yaml``): ``train.KEY old -> new`` for the ``train:`` section (``saved`` -> ``current``), and
    ``KEY old -> new`` for every other key of the new ``run_config`` against the run's. A ``run_config`` of None (a
    Python resume gives the train section only) keeps the rest of the run's config."""
    on_disk = yaml.safe_load(run.config.read_text()) if run.config.is_file() else None
    if run_config is None:
        run_config = {**on_disk, "train": current} if isinstance(on_disk, dict) else {"train": current}
    new = to_dict(run_config)
    changes = [f"train.{k} {saved[k]!r} -> {current[k]!r}" for k in current if saved[k] != current[k]]
    old_flat, new_flat = _flatten(on_disk if isinstance(on_disk, dict) else {}), _flatten(new)
    changes += [f"{k} {old_flat.get(k)!r} -> {v!r}" for k, v in new_flat.items() if not k.startswith("train.") and old_flat.get(k) != v]
    if changes:
        run.update_config(to_yaml(new))
    return changes


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return out


def checkpoint_size(prompt_state: dict[str, torch.Tensor], module_states: list[dict[str, torch.Tensor]], params: list[torch.Tensor], optimizer: str, world_size: int) -> tuple[int, str]:
    """Bytes a checkpoint needs on disk (an estimate) and what they are made of: the prompt files of ``prompt_state``,
    and ``state/`` with the trainable modules' states, the ``optimizer``'s state over ``params`` and each process's
    RNG states."""
    prompt_bytes = sum(t.numel() * t.element_size() for t in prompt_state.values())
    module_bytes = sum(t.numel() * t.element_size() for state in module_states for t in state.values())
    optimizer_bytes = OPTIMIZER_STATE_FACTOR[optimizer] * sum(p.numel() * p.element_size() for p in params)
    # Metadata, file headers and each process's RNG states (JSON and tensors): about 40 KB per process.
    state_bytes = module_bytes + optimizer_bytes + 2**16 * world_size
    prompt_bytes += 2**12
    # last/, best/ and state/, and while one of them is replaced, the old and the new copy.
    needed = 2 * prompt_bytes + state_bytes + max(prompt_bytes, state_bytes)
    what = (
        f"last/ and best/ {format_size(prompt_bytes)} each, state/ {format_size(state_bytes)} with the {optimizer} "
        f"state, and a second copy of the largest while it is replaced"
    )
    return needed, what


def prepare_run_dir(run: RunDir, resume: bool, overwrite: bool, config_text: str, size: tuple[int, str]) -> None:
    """Main process, before training: leftovers of killed writes removed, folder writable, room for a checkpoint of
    ``size`` (:func:`checkpoint_size`); a new run's folder made ready and ``config_text`` written."""
    if resume:
        run.check_resumable()
    removed = run.clean_leftovers()
    if removed:
        print(f"{run.path}: removed leftovers of interrupted writes: {', '.join(removed)}", file=sys.stderr)
    run.check_writable()
    run.check_free_space(*size)
    if not resume:
        run.prepare_new(overwrite)
        run.write_config(config_text)


def rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """This process's RNG states: JSON-able (python, numpy) and tensors (torch CPU, CUDA)."""
    np_state = np.random.get_state()
    plain = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    return plain, tensors


def set_rng_state(plain: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Restores states of :func:`rng_state`."""
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    if tensors["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])


__all__ = [
    "FIXED_ON_RESUME",
    "Progress",
    "RESUME_KEYS",
    "TrainingState",
    "check_resume_settings",
    "checkpoint_size",
    "record_config_changes",
    "load_training_state",
    "prepare_run_dir",
    "rng_state",
    "save_training_state",
    "set_rng_state",
]
