"""A toy PromptedModel for the trainer tests: tiny MLP backbone (with BatchNorm and dropout, so a backbone left
in train mode would change its buffers), a SoftPrompt with dropout (so resume must restore the RNG), a Linear head.

Imported by the tests (via sys.path) and by the subprocess scripts next to it; needs torch, promptcore and vpt's synthetic images.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from promptcore import PromptedModel, SoftPrompt
from promptcore.callbacks import Callback
from vpt.synthetic import SyntheticImages


class ToyPrompted(PromptedModel):
    """Backbone: flatten -> Linear -> BatchNorm -> GELU -> Dropout -> Linear; the prompt's mean is added to the
    features; the head classifies them."""

    def __init__(self, in_dim: int = 48, dim: int = 16, num_classes: int = 4, num_tokens: int = 3, prompt_dropout: float = 0.2, pause_at_step: int = 0, pause: float = 0.0) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Flatten(), nn.Linear(in_dim, dim), nn.BatchNorm1d(dim), nn.GELU(), nn.Dropout(0.5), nn.Linear(dim, dim)
        )
        self.prompts = SoftPrompt(num_tokens, dim, init="normal", std=0.5, dropout=prompt_dropout)
        self.head = nn.Linear(dim, num_classes)
        self.dim, self.num_classes, self.num_tokens = dim, num_classes, num_tokens
        # Training step ``pause_at_step`` (1-based) sleeps ``pause`` seconds: a window in which subprocess tests
        # interrupt the run, knowing exactly where it stands.
        self.pause_at_step, self.pause, self.steps_run = pause_at_step, pause, 0
        self.backbone_modes: list[bool] = []  # backbone.training seen by each training step

    def prompt_config(self) -> dict[str, Any]:
        return {"method": "toy", "backbone": "toy-mlp", "dim": self.dim, "num_tokens": self.num_tokens, "num_classes": self.num_classes}

    def forward_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        feats = self.backbone(batch["pixel_values"])
        return self.head(feats + self.prompts().mean(0))

    def training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        self.backbone_modes.append(self.backbone.training)
        self.steps_run += 1
        if self.steps_run == self.pause_at_step:
            time.sleep(self.pause)
        return super().training_step(batch)


def toy_data(num_samples: int = 40, num_classes: int = 4, split: str = "train", seed: int = 0) -> Dataset:
    """SyntheticImages at 4x4x3 (48 features)."""
    return SyntheticImages(num_samples=num_samples, num_classes=num_classes, image_size=4, channels=3, noise=0.5, seed=seed, split=split)


def toy_model(seed: int = 0, **kwargs: Any) -> ToyPrompted:
    torch.manual_seed(seed)
    return ToyPrompted(**kwargs)


# The run the resume tests interrupt and compare: 40 rows, batch 8 -> 5 steps per epoch, 15 steps; checkpoints
# every 2 steps and at epoch ends; train lines every 2 steps; eval at every epoch end.
RESUME_TRAIN = dict(epochs=3, batch_size=8, lr=0.05, save_every_steps=2, log_every_steps=2, progress_bar=False, tensorboard=False)


def resume_run_args() -> tuple[Dataset, Dataset]:
    return toy_data(40), toy_data(12, split="validation")


# The run the multi-process test compares: global batch 8 over 42 rows (the last global batch has 2 rows, one per
# process of two), 21 eval rows (uneven shards), grad clipping and warmup on.
DISTRIBUTED_TRAIN = dict(epochs=2, batch_size=8, lr=0.05, grad_clip=1.0, warmup_steps=2, log_every_steps=3, progress_bar=False, tensorboard=False)


def distributed_run_args() -> tuple[Dataset, Dataset]:
    return toy_data(42), toy_data(21, split="validation")


class LrRecorder(Callback):
    """The rate of every optimizer group at each step, as the step used it: ``lrs[step] = {group: lr}``."""

    def __init__(self) -> None:
        self.lrs: dict[int, dict[str, float]] = {}

    def on_step_end(self, trainer: Any, info: Any) -> None:
        self.lrs[info.step] = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}


class SigintAt(Callback):
    """Sends this process a real SIGINT after step ``step``: the trainer's handler takes it as a Ctrl-C."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Any, info: Any) -> None:
        if info.step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class StopAt(Callback):
    """Asks the trainer to stop after step ``step`` (the multi-process test asks on one rank only)."""

    def __init__(self, step: int, reason: str) -> None:
        self.step, self.reason = step, reason

    def on_step_end(self, trainer: Any, info: Any) -> None:
        if info.step == self.step:
            trainer.request_stop(self.reason)


STOP_AT_STEP = 4


def exit_skipping_teardown(code: int) -> None:
    """Ends a torchrun process with ``code`` once its output is flushed, without the interpreter's teardown: with
    torch 2.14 + gloo about one exit in three aborts in C++ static teardown ("terminate called without an active
    exception", no Python frame) after all work is done, and the launch would report a failure that did not happen."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
