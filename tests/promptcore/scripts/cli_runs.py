"""Runs ``vpt`` / ``textpt`` commands one after another in this process (under torchrun: in each process), as a
launch per command would but without starting the processes and importing the libraries again. The commands share
the launch's process group, which the first one makes and which is ended once, after the last: ``main`` ends it
after each command, and a group made again under the same launch hung here (torch 2.14, gloo: one process still
joining the new group while the other already used it). Commands are separated by ``--then``; the
first that fails ends the script with its exit status.

``KILL_AT_STEP=N`` kills the process with SIGKILL at the end of training step N on rank 0, as ``kill -9`` would.
``HELD_DIR=DIR`` writes, on each process at the start and at the end of training, how many elements of the frozen
weights and of the prompts that process holds (and, for vpt, whether the fast VPT-deep path runs) to
``DIR/<tool>/rank<r>.json``: under DeepSpeed ZeRO-3 a parameter's own tensor is empty between steps and the process
keeps its partition (``ds_tensor``) of ``ds_numel`` elements.

Usage: [KILL_AT_STEP=N] [HELD_DIR=DIR] python cli_runs.py vpt|textpt ARGS... [--then vpt|textpt ARGS...]...
"""

import importlib
import json
import os
import signal
import sys
from pathlib import Path

import torch.distributed

import promptcore.trainer
from promptcore.callbacks import Callback


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, info) -> None:
        if info.step == self.step and trainer.rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def held(trainer) -> dict:
    prompts = {id(p) for p in trainer.params}
    counts = {"frozen_total": 0, "frozen_held": 0, "frozen_visible": 0, "prompt_total": 0, "prompt_held": 0, "prompt_visible": 0}
    for p in trainer.model.parameters():
        kind = "prompt" if id(p) in prompts else "frozen"
        counts[f"{kind}_total"] += getattr(p, "ds_numel", p.numel())
        counts[f"{kind}_held"] += getattr(p, "ds_tensor", p).numel()
        counts[f"{kind}_visible"] += p.numel()
    return counts


class Held(Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.report: dict = {}

    def on_train_begin(self, trainer) -> None:
        self.report["begin"] = held(trainer)
        self.report["fast"] = getattr(trainer.model, "fast", None)  # vpt: whether the fast VPT-deep path runs

    def on_train_end(self, trainer) -> None:
        self.report["end"] = held(trainer)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.rank}.json").write_text(json.dumps(self.report))


def commands(argv: list[str]) -> list[tuple[str, list[str]]]:
    out, current = [], []
    for arg in [*argv, "--then"]:
        if arg == "--then":
            out.append((current[0], current[1:]))
            current = []
        else:
            current.append(arg)
    return out


def run(tool: str, argv: list[str]) -> int:
    extra = []
    if os.environ.get("KILL_AT_STEP"):
        extra.append(KillAt(int(os.environ["KILL_AT_STEP"])))
    if os.environ.get("HELD_DIR"):
        extra.append(Held(Path(os.environ["HELD_DIR"], tool)))
    original = promptcore.trainer.Trainer.__init__

    def with_callbacks(self, *args, callbacks=(), **kwargs):
        original(self, *args, callbacks=[*callbacks, *extra], **kwargs)

    promptcore.trainer.Trainer.__init__ = with_callbacks
    try:
        return importlib.import_module(f"{tool}.cli").main(argv)
    finally:
        promptcore.trainer.Trainer.__init__ = original


if __name__ == "__main__":
    end_process_group = torch.distributed.destroy_process_group
    torch.distributed.destroy_process_group = lambda *args, **kwargs: None
    try:
        for tool, argv in commands(sys.argv[1:]):
            status = run(tool, argv)
            if status:
                sys.exit(status)
    finally:
        if torch.distributed.is_initialized():
            end_process_group()
