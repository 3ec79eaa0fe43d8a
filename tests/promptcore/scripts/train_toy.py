"""Trains the toy model of the resume tests in a run directory (a subprocess the tests kill or interrupt).

Usage: python train_toy.py RUN_DIR [--resume] [--pause-at-step N --pause SECONDS]
Exit status 130 after Ctrl-C/SIGTERM (the trainer saved the run first).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from toy_prompted import RESUME_TRAIN, resume_run_args, toy_model  # noqa: E402

from promptcore import Trainer, TrainConfig  # noqa: E402
from promptcore.trainer import TrainingInterrupted  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause-at-step", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, evaluation = resume_run_args()
    model = toy_model(pause_at_step=args.pause_at_step, pause=args.pause)
    trainer = Trainer(model, TrainConfig(**RESUME_TRAIN), train, evaluation, run_dir=args.run_dir, resume=args.resume)
    try:
        trainer.fit()
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
