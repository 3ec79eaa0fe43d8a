"""The trainer's typed config (the ``train:`` section of every run config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class TrainConfig:
    """How prompts are trained. Sizes are per process unless noted.

    The learning rate is ``lr``; with ``lr_scaling: linear`` it is ``lr * global_batch / 256`` (VPT's base-lr rule).
    """

    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs when reached first)
    batch_size: int = 32  # global batch = batch_size * processes * grad_accum_steps
    eval_batch_size: int | None = None  # default: batch_size
    optimizer: Literal["adamw", "sgd", "adafactor"] = "adamw"
    lr: float = 1e-3
    lr_scaling: Literal["none", "linear"] = "none"
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0  # added to warmup_epochs' steps
    min_lr_ratio: float = 0.0  # cosine/linear decay floor, as a fraction of lr
    grad_clip: float | None = None  # max global grad norm
    grad_accum_steps: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms + cudnn settings
    eval_every_epochs: int = 1  # 0: no evaluation during training
    metric: str = "accuracy"  # metric that selects best/ (from the model's eval_step)
    metric_mode: Literal["max", "min"] = "max"
    save_every_steps: int = 0  # also checkpoint the training state every N steps (0: at epoch ends only)
    log_every_steps: int = 10
    num_workers: int = 0
    tensorboard: bool = True
    progress_bar: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be positive, got {self.lr}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps: must be positive or null, got {self.max_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip: must be positive or null, got {self.grad_clip}")
        if self.warmup_epochs < 0 or self.warmup_steps < 0:
            raise ValueError("warmup_epochs/warmup_steps: must not be negative")
