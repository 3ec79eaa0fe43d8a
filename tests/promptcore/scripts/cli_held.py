"""Runs ``vpt`` or ``textpt`` (under torchrun) and writes, on each process at the start and at the end of training,
how many elements of the frozen weights and of the prompts that process holds (and, for vpt, whether the fast
VPT-deep path runs) to ``HELD_DIR/rank<r>.json``: under DeepSpeed ZeRO-3 a parameter's own tensor is empty between
steps and the process keeps its partition (``ds_tensor``) of ``ds_numel`` elements.

Usage: HELD_DIR=DIR python cli_held.py vpt|textpt ARGS...
"""

import json
import os
import sys
from pathlib import Path

import promptcore.trainer
from promptcore.callbacks import Callback


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
    def __init__(self) -> None:
        self.report: dict = {}

    def on_train_begin(self, trainer) -> None:
        self.report["begin"] = held(trainer)
        self.report["fast"] = getattr(trainer.model, "fast", None)  # vpt: whether the fast VPT-deep path runs

    def on_train_end(self, trainer) -> None:
        self.report["end"] = held(trainer)
        Path(os.environ["HELD_DIR"], f"rank{trainer.rank}.json").write_text(json.dumps(self.report))


original = promptcore.trainer.Trainer.__init__


def with_report(self, *args, callbacks=(), **kwargs):
    original(self, *args, callbacks=[*callbacks, Held()], **kwargs)


promptcore.trainer.Trainer.__init__ = with_report

if __name__ == "__main__":
    tool, argv = sys.argv[1], sys.argv[2:]
    if tool == "vpt":
        from vpt.cli import main
    else:
        from textpt.cli import main
    sys.exit(main(argv))
