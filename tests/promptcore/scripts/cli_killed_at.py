"""Runs ``vpt`` or ``textpt`` (under torchrun or alone) and kills its own process with SIGKILL at the end of
training step ``KILL_AT_STEP`` on rank 0, as ``kill -9`` would; without the variable it runs the command as it is.

Usage: KILL_AT_STEP=N python cli_killed_at.py vpt|textpt ARGS...
"""

import os
import signal
import sys

import promptcore.trainer
from promptcore.callbacks import Callback


class KillAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, info) -> None:
        if info.step == self.step and trainer.rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("KILL_AT_STEP"):
    original = promptcore.trainer.Trainer.__init__

    def with_kill(self, *args, callbacks=(), **kwargs):
        original(self, *args, callbacks=[*callbacks, KillAt(int(os.environ["KILL_AT_STEP"]))], **kwargs)

    promptcore.trainer.Trainer.__init__ = with_kill

if __name__ == "__main__":
    tool, argv = sys.argv[1], sys.argv[2:]
    if tool == "vpt":
        from vpt.cli import main
    else:
        from textpt.cli import main
    sys.exit(main(argv))
