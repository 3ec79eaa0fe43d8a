"""Run directories: what a training run leaves on disk, written so that a kill at any moment loses nothing.

Layout of a run directory::

    config.yaml          the resolved run config (or the TrainConfig alone when no run config was given)
    config.original.yaml the first config, kept when a resume changed the config (config.yaml is the current one)
    metrics.jsonl        one JSON object per line: train windows, epoch ends, evaluations
    curves.png           loss and eval metric over steps (written at the end of fit())
    best/                prompts with the best eval metric (prompts.safetensors + prompt_config.json)
    last/                prompts at the last checkpoint
    state/               the resumable training state:
        trainer_state.json   position (epoch, batch in epoch, step), accumulators, best metric, why a callback
                             stopped the run, the train config, optimizer group names, callback states,
                             python/numpy RNG
        tensors.pt           prompt modules (training form), optimizer, grad scaler, torch RNG (the learning
                             rate is a function of the step: no scheduler state)
    tb/                  TensorBoard events
    step_times.jsonl     each step's wall time (with the ``step_timer`` callback)

Every file is written with the atomic helpers of :mod:`promptcore.io` (temp file + rename, folder swap), so the
previous checkpoint stays readable until the next one is complete; what a kill leaves of an unfinished write
(``.NAME.XXXXXXXX.tmp`` files and folders, ``NAME.old`` folders) is cleaned when the run starts or resumes.
Nothing is unpickled: ``tensors.pt`` is read with ``torch.load(weights_only=True)`` and only ever holds what
:class:`RunDir` wrote. The module imports torch only to save and load that file, so the file names and the saved
config are read without it (``train --resume`` checks the config before torch is imported).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import atomic_dir, atomic_write_text, recover_dir

STATE_FORMAT = 1

CONFIG_FILE = "config.yaml"
ORIGINAL_CONFIG_FILE = "config.original.yaml"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
BEST_DIR = "best"
LAST_DIR = "last"
STATE_DIR = "state"
TB_DIR = "tb"
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "tensors.pt"
STEP_TIMES_FILE = "step_times.jsonl"

# Everything a run writes; ``overwrite`` removes exactly these (never other files a user keeps in the folder).
RUN_ENTRIES = (CONFIG_FILE, ORIGINAL_CONFIG_FILE, METRICS_FILE, CURVES_FILE, BEST_DIR, LAST_DIR, STATE_DIR, TB_DIR, STEP_TIMES_FILE)
# The probe file of the write check; like the atomic writes' temp names it ends in ``.XXXXXXXX.tmp``.
WRITE_PROBE = "write-check"
# ``.NAME.XXXXXXXX.tmp``: the temp names of promptcore.io's atomic writes (tempfile's 8 random characters).
_TEMP_NAME = re.compile(
    r"^\.(?:" + "|".join(re.escape(n) for n in (*RUN_ENTRIES, WRITE_PROBE)) + r")\.[a-z0-9_]{8}\.tmp$"
)


class RunDirError(UserError):
    """A run directory that cannot be used as asked (already holds a run, has nothing to resume, is not
    writable or lacks the space for a checkpoint)."""


class RunDir:
    """Paths and atomic reads/writes of one run directory.

    Args:
        path: the run directory (created when missing).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # ----- layout ----------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def curves(self) -> Path:
        return self.path / CURVES_FILE

    @property
    def best(self) -> Path:
        return self.path / BEST_DIR

    @property
    def last(self) -> Path:
        return self.path / LAST_DIR

    @property
    def state(self) -> Path:
        return self.path / STATE_DIR

    @property
    def tensorboard(self) -> Path:
        return self.path / TB_DIR

    @property
    def step_times(self) -> Path:
        return self.path / STEP_TIMES_FILE

    @property
    def original_config(self) -> Path:
        return self.path / ORIGINAL_CONFIG_FILE

    def holds_run(self) -> bool:
        """Whether the folder already holds (part of) a run."""
        return any((self.path / name).exists() or (self.path / (name + ".old")).exists() for name in RUN_ENTRIES)

    def has_state(self) -> bool:
        recover_dir(self.state)
        return (self.state / STATE_JSON).is_file() and (self.state / STATE_TENSORS).is_file()

    # ----- starting a run -------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Creates the folder if needed and writes (then removes) a probe file in it; raises :class:`RunDirError`
        naming the folder and the fix when that fails."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"run directory {str(self.path)!r} is a file; give a folder path for the run")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=f".{WRITE_PROBE}.", suffix=".tmp", dir=self.path)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise RunDirError(
                f"run directory {str(self.path)!r} cannot be written ({e.strerror or e}: {e.filename or self.path}); "
                f"choose a writable folder (-o/--output, or run_dir=...) or make that folder writable"
            ) from None

    def check_free_space(self, needed: int, what: str) -> None:
        """Refuses a folder whose disk has less free space than ``needed`` bytes (``what`` says what needs it)."""
        free = shutil.disk_usage(self.path).free
        if free < needed:
            raise RunDirError(
                f"run directory {str(self.path)!r}: its disk has {format_size(free)} free, a checkpoint needs about "
                f"{format_size(needed)} ({what}); free some space or choose a folder on another disk"
            )

    def clean_leftovers(self) -> list[str]:
        """Removes what a kill left of unfinished atomic writes: temp files and folders of the run's own entries,
        and ``NAME.old`` folders whose replacement is in place (one whose replacement is missing is put back).
        Returns the names removed. Nothing else in the folder is touched."""
        removed: list[str] = []
        if not self.path.is_dir():
            return removed
        for entry in sorted(self.path.iterdir()):
            if not _TEMP_NAME.match(entry.name):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
        for name in (BEST_DIR, LAST_DIR, STATE_DIR):
            old = self.path / (name + ".old")
            if old.is_dir() and (self.path / name).is_dir():
                shutil.rmtree(old)
                removed.append(old.name)
            else:
                recover_dir(self.path / name)
        return removed

    def prepare_new(self, overwrite: bool) -> None:
        """Makes the folder ready for a fresh run; refuses one that holds a run unless ``overwrite``."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"run directory {str(self.path)!r} is a file; give a folder path for the run")
        if self.holds_run():
            if not overwrite:
                raise RunDirError(
                    f"run directory {str(self.path)!r} already holds a run (found "
                    f"{', '.join(n for n in RUN_ENTRIES if (self.path / n).exists()) or 'a half-replaced checkpoint'}); "
                    f"pass overwrite=True (--overwrite) to replace it, resume=True (--resume) to continue it, "
                    f"or choose another directory"
                )
            for name in RUN_ENTRIES:
                for entry in (self.path / name, self.path / (name + ".old")):
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    elif entry.exists():
                        entry.unlink()
        self.path.mkdir(parents=True, exist_ok=True)

    def check_resumable(self) -> None:
        if not self.path.is_dir():
            raise RunDirError(f"cannot resume: run directory {str(self.path)!r} does not exist")
        if not self.has_state():
            raise RunDirError(
                f"cannot resume: {str(self.path)!r} holds no training state ({STATE_DIR}/{STATE_JSON} and "
                f"{STATE_DIR}/{STATE_TENSORS}); it was not written by the trainer or was killed before its first "
                f"checkpoint. Start it again with overwrite=True (--overwrite)"
            )

    def write_config(self, text: str) -> None:
        atomic_write_text(self.config, text)

    def update_config(self, text: str) -> None:
        """Replaces ``config.yaml`` with ``text`` (a resume that changed the config), keeping the run's first
        config in ``config.original.yaml`` (written once, never replaced)."""
        if not self.original_config.exists() and self.config.is_file():
            atomic_write_text(self.original_config, self.config.read_text())
        atomic_write_text(self.config, text)

    # ----- metrics --------------------------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        """Appends one line and flushes it to disk, so a checkpoint taken afterwards can count it."""
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """Parsed lines of ``metrics.jsonl`` (a torn last line, left by a kill, is skipped)."""
        if not self.metrics.is_file():
            return []
        records = []
        for line in self.metrics.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    def truncate_metrics(self, num_lines: int) -> None:
        """Keeps the first ``num_lines`` lines: those a checkpoint counted; later ones are redone on resume."""
        lines = self.metrics.read_text().splitlines(keepends=True) if self.metrics.is_file() else []
        if len(lines) < num_lines:
            raise RunDirError(
                f"{self.metrics} has {len(lines)} lines but the training state counts {num_lines}; the run "
                f"directory was edited or mixed with another run. Start again with overwrite=True (--overwrite)"
            )
        atomic_write_text(self.metrics, "".join(lines[:num_lines]))

    # ----- training state -------------------------------------------------------------------------------------
    def save_state(self, meta: dict[str, Any], tensors: dict[str, Any]) -> None:
        """Writes ``state/`` whole (folder swap): JSON metadata and a tensor file of plain containers."""
        import torch

        with atomic_dir(self.state) as tmp:
            torch.save(tensors, tmp / STATE_TENSORS)
            (tmp / STATE_JSON).write_text(json.dumps({"format": STATE_FORMAT, **meta}, indent=1) + "\n")

    def load_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reads ``state/`` back: ``(meta, tensors)``. Only plain containers of tensors load (weights_only)."""
        import torch

        self.check_resumable()
        json_path, tensor_path = self.state / STATE_JSON, self.state / STATE_TENSORS
        try:
            meta = json.loads(json_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"{json_path} is corrupt ({e}); the run cannot be resumed from it") from None
        if meta.get("format", 0) > STATE_FORMAT:
            raise RunDirError(f"{json_path} has state format {meta['format']}, newer than this version reads ({STATE_FORMAT})")
        try:
            tensors = torch.load(tensor_path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for torn or foreign files
            raise RunDirError(f"{tensor_path} cannot be read ({type(e).__name__}: {e}); the run cannot be resumed from it") from None
        return meta, tensors


def format_size(n: int) -> str:
    """``n`` bytes as KiB, MiB or GiB with one decimal."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"
