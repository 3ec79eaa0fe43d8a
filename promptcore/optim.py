"""Learning-rate schedules and optimizers of the trainer.

Schedules (:class:`LRSchedule`) are pure functions of the optimizer step, so a resumed run needs no scheduler state:
the step counter alone gives every group's rate, and a run resumed with another length recomputes its schedule.
Two units:

- ``step`` (default): the rate changes every optimizer step. Warmup over ``W`` steps, then ``cosine`` / ``linear``
  decay to ``min_lr_ratio * lr`` at the last step, or ``constant``.
- ``epoch``: the rate changes once per epoch, as in Dassl (used by CoOp, CoCoOp, MaPLe and IVLP), whose trainer
  steps the scheduler after each epoch's last batch (``dassl/engine/trainer.py``) and whose
  ``build_lr_scheduler`` (``dassl/optim/lr_scheduler.py``) wraps ``CosineAnnealingLR(T_max=max_epoch)`` in a
  warmup scheduler. Warmup over ``W`` whole epochs: ``constant`` holds ``warmup_lr`` (Dassl's
  ``WARMUP_CONS_LR``); ``linear`` runs epoch 0 at ``warmup_lr`` (``WARMUP_MIN_LR``) and epoch ``e`` at
  ``lr * e / W``. At epoch ``W`` the wrapper hands over the cosine scheduler's initial rate, ``lr``, and then steps
  it from 0 (Dassl's default ``WARMUP_RECOUNT=True``): epoch ``e >= W`` gets
  ``lr * 0.5 * (1 + cos(pi * (e - W) / epochs))``. The cosine period is the whole run, not the epochs after the
  warmup, so the last epoch's rate is ``lr * 0.5 * (1 + cos(pi * (epochs - 1 - W) / epochs))``, not 0, exactly as
  Dassl trains. ``min_lr_ratio`` (Dassl: 0) lifts the floor as for per-step schedules.

Optimizers: torch's AdamW, Adam (weight decay added to the gradient as L2, as P-tuning's official code trains),
SGD and Adafactor, and :class:`AdafactorT5X`, Adafactor as T5X runs it in the prompt
tuning recipe of Lester et al. (2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from .errors import UserError
from .train_config import TrainConfig


# ----- schedules ---------------------------------------------------------------------------------------------------
def decay_factor(progress: float, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the base rate at ``progress`` in [0, 1] of the decay: ``cosine``, ``linear`` or ``constant``."""
    if schedule == "constant":
        return 1.0
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        decay = 1.0 - progress
    else:
        raise UserError(f"scheduler: unknown schedule {schedule!r}; choose cosine, linear or constant")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Learning-rate multiplier of optimizer step ``step`` (0-based) of a per-step schedule with linear warmup.

    Linear warmup reaches the full rate on the last warmup step (the first step already moves the prompts), then
    ``cosine`` or ``linear`` decay to ``min_lr_ratio`` at ``total_steps``, or ``constant``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return decay_factor((step - warmup_steps) / max(total_steps - warmup_steps, 1), schedule, min_lr_ratio)


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate of every optimizer step, for any base rate (one per parameter group).

    Attributes:
        total_steps: optimizer steps of the whole run.
        steps_per_epoch: optimizer steps of one epoch (every epoch has the same number).
        epochs: epochs of the whole run (the cosine period of the ``epoch`` unit).
        warmup: warmup length, in steps (unit ``step``) or whole epochs (unit ``epoch``).
        schedule: ``cosine``, ``linear`` or ``constant`` after the warmup.
        unit: ``step`` or ``epoch`` (see the module docstring).
        warmup_type: ``linear`` or ``constant``.
        warmup_lr: the rate of a constant warmup (every group gets it, as Dassl's ``WARMUP_CONS_LR``); with a
            linear per-epoch warmup, the rate of the first epoch (Dassl's ``WARMUP_MIN_LR``).
        min_lr_ratio: floor of the decay, as a fraction of the base rate.
    """

    total_steps: int
    steps_per_epoch: int
    epochs: int
    warmup: int = 0
    schedule: str = "cosine"
    unit: str = "step"
    warmup_type: str = "linear"
    warmup_lr: float | None = None
    min_lr_ratio: float = 0.0

    @classmethod
    def from_config(cls, config: TrainConfig, total_steps: int, steps_per_epoch: int) -> "LRSchedule":
        if config.schedule_unit == "epoch":
            warmup = int(config.warmup_epochs)  # TrainConfig checks it is whole
        else:
            warmup = round(config.warmup_epochs * steps_per_epoch) + config.warmup_steps
        return cls(
            total_steps=total_steps, steps_per_epoch=steps_per_epoch, epochs=config.epochs, warmup=warmup,
            schedule=config.scheduler, unit=config.schedule_unit, warmup_type=config.warmup_type,
            warmup_lr=config.warmup_lr, min_lr_ratio=config.min_lr_ratio,
        )

    def lr(self, step: int, base_lr: float) -> float:
        """The rate optimizer step ``step`` (0-based) uses in a group of base rate ``base_lr``."""
        if self.unit == "epoch":
            epoch = step // max(self.steps_per_epoch, 1)
            if epoch < self.warmup:
                if self.warmup_type == "constant" or epoch == 0:
                    return float(self.warmup_lr)
                return base_lr * epoch / self.warmup
            return base_lr * decay_factor((epoch - self.warmup) / self.epochs, self.schedule, self.min_lr_ratio)
        if step < self.warmup and self.warmup_type == "constant":
            return float(self.warmup_lr)
        return base_lr * lr_factor(step, self.total_steps, self.warmup, self.schedule, self.min_lr_ratio)

    def describe(self) -> str:
        """One line for logs: length and warmup."""
        warm = f", {self.warmup_type} warmup of {self.warmup} {self.unit}{'s' if self.warmup > 1 else ''}" if self.warmup else ""
        return f"{self.schedule} over {self.total_steps} steps (changing every {self.unit}{warm})"


# ----- optimizers --------------------------------------------------------------------------------------------------
class AdafactorT5X(torch.optim.Optimizer):
    """Adafactor as T5X implements it (``t5x/adafactor.py``) and the prompt tuning recipe of Lester et al. runs it.

    The recipe (google-research/prompt-tuning, ``configs/models/t5_1_1_prompt.gin``) sets ``decay_rate=0.8``,
    ``step_offset=0``, ``multiply_by_parameter_scale=False``, ``weight_decay_rate=1e-5`` and keeps T5X's other
    defaults: no momentum (``beta1=None``), update clipping at RMS 1.0, ``epsilon1=1e-30`` added to the squared
    gradient, factored second moments for matrices whose two dimensions are both at least
    ``min_dim_size_to_factor=128``, and a constant learning rate (``configs/runs/prompt_finetune.gin``: 0.3).
    Per step ``t = start_step + k`` (``k = 1, 2, ...``)::

        beta2_t = 1 - t ** -decay_rate
        v_t     = beta2_t * v_{t-1} + (1 - beta2_t) * (g^2 + epsilon1)      # or its row / column means, factored
        y       = g / sqrt(v_t)                                              # factored: v_t ~ r c^T / mean(r)
        y       = y / max(1, rms(y) / clipping_threshold)
        p       = (1 - weight_decay) * p - lr * y

    Unlike ``torch.optim.Adafactor`` (its rate is ``min(lr, 1/sqrt(t))`` times ``RMS(param)``), the rate is
    ``lr`` itself, and weight decay is not multiplied by the rate (T5X's ``weight_decay_rate``). A prompt of fewer
    than 128 tokens is therefore not factored: the recipe's 100-token prompt keeps a full second moment.
    Parameters of more than two dimensions are stacks of matrices over their last two dimensions (T5X's ``BATCH``
    factor dimensions): factoring and update clipping work per matrix.

    Args:
        params: parameters or parameter groups.
        lr: the constant step size (schedules set it per step, as for any torch optimizer).
        decay_rate: exponent of the second-moment decay schedule.
        clipping_threshold: update clipping threshold (RMS of the update), or ``None`` for none.
        epsilon1: added to the squared gradient.
        min_dim_size_to_factor: factor a matrix only if both of its dimensions are at least this size.
        weight_decay: decoupled decay rate per step, not scaled by ``lr``.
        start_step: steps already counted by the decay schedule. T5X fine-tuning continues the step count of the
            checkpoint (its configs count ``TRAIN_STEPS`` from the pre-training steps, and the recipe keeps
            ``step_offset=0``): 1,100,000 for the LM-adapted T5 1.1 checkpoints, where ``beta2_1`` is already
            ``1 - 1.1e6 ** -0.8``. The default 0 starts the schedule afresh (``beta2_1 = 0``).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        decay_rate: float = 0.8,
        clipping_threshold: float | None = 1.0,
        epsilon1: float = 1e-30,
        min_dim_size_to_factor: int = 128,
        weight_decay: float = 0.0,
        start_step: int = 0,
    ) -> None:
        if not lr > 0 or not math.isfinite(lr):
            raise UserError(f"lr: must be a positive number, got {lr}")
        if start_step < 0:
            raise UserError(f"start_step: must not be negative, got {start_step}")
        defaults = dict(
            lr=lr, decay_rate=decay_rate, clipping_threshold=clipping_threshold, epsilon1=epsilon1,
            min_dim_size_to_factor=min_dim_size_to_factor, weight_decay=weight_decay, start_step=start_step,
        )
        super().__init__(params, defaults)

    @staticmethod
    def factored_dims(shape: torch.Size, min_dim_size: int) -> tuple[int, int] | None:
        """``(row, col)`` dimensions to factor over (the smaller of the last two is the row), or None."""
        if len(shape) < 2 or min(shape[-2], shape[-1]) < min_dim_size:
            return None
        return (-1, -2) if shape[-1] < shape[-2] else (-2, -1)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdafactorT5X does not support sparse gradients")
                dtype = torch.promote_types(p.dtype, torch.float32)
                grad = p.grad.to(dtype)
                dims = self.factored_dims(p.shape, group["min_dim_size_to_factor"])
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    if dims is None:
                        state["v"] = torch.zeros_like(grad)
                    else:
                        row, col = dims
                        state["v_row"] = torch.zeros_like(grad.mean(dim=col))
                        state["v_col"] = torch.zeros_like(grad.mean(dim=row))
                state["step"] += 1
                t = group["start_step"] + state["step"]
                beta2 = 1.0 - t ** -group["decay_rate"]
                grad_sq = grad * grad + group["epsilon1"]
                if dims is None:
                    v = state["v"].mul_(beta2).add_(grad_sq, alpha=1.0 - beta2)
                    update = grad * v.rsqrt()
                else:
                    row, col = dims
                    v_row = state["v_row"].mul_(beta2).add_(grad_sq.mean(dim=col), alpha=1.0 - beta2)
                    v_col = state["v_col"].mul_(beta2).add_(grad_sq.mean(dim=row), alpha=1.0 - beta2)
                    # Either way the row dimension is the last one of v_row: normalise over it.
                    row_factor = (v_row / v_row.mean(dim=-1, keepdim=True)).rsqrt()
                    update = grad * row_factor.unsqueeze(col) * v_col.rsqrt().unsqueeze(row)
                if group["clipping_threshold"] is not None:
                    rms_dims = tuple(range(max(p.dim() - 2, 0), p.dim()))
                    rms = update.square().mean(dim=rms_dims, keepdim=True).sqrt() if p.dim() else update.abs()
                    update = update / (rms / group["clipping_threshold"]).clamp(min=1.0)
                new = p.to(dtype)
                if group["weight_decay"]:
                    new = new * (1.0 - group["weight_decay"])
                p.copy_(new - group["lr"] * update)
        return loss


OPTIMIZERS = ("adamw", "adam", "sgd", "adafactor", "adafactor_t5x")

# Bytes of optimizer state per byte of trained parameters (an upper bound), for the run directory's space check.
OPTIMIZER_STATE_FACTOR = {"adamw": 2, "adam": 2, "sgd": 1, "adafactor": 1, "adafactor_t5x": 1}


def build_optimizer(params: Iterable[Any], config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` over ``params`` (parameters, or torch parameter groups whose own ``lr``
    and ``weight_decay`` override ``lr`` and ``config.weight_decay``)."""
    if config.optimizer in ("adamw", "adam"):
        adam = {"betas": tuple(config.betas)} if config.betas is not None else {}
        if config.eps is not None:
            adam["eps"] = config.eps
        kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        return kind(params, lr=lr, weight_decay=config.weight_decay, **adam)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adafactor":
        return torch.optim.Adafactor(params, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "adafactor_t5x":
        return AdafactorT5X(params, lr=lr, weight_decay=config.weight_decay, start_step=config.adafactor_start_step)
    raise UserError(f"optimizer: unknown optimizer {config.optimizer!r}; choose {', '.join(OPTIMIZERS)}")


__all__ = [
    "OPTIMIZERS",
    "AdafactorT5X",
    "LRSchedule",
    "build_optimizer",
    "decay_factor",
    "lr_factor",
]
