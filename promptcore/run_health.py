"""One-line warnings for runs that go wrong without an error: a batch larger than the data, a diverging loss.

The trainer asks these where it already reads values on the host (at set-up, and where it reads the loss every
``log_every_steps`` steps), so the checks add no wait inside a step.
"""

from __future__ import annotations

DIVERGENCE_FACTOR = 1000.0
"""A log window whose mean loss is this many times the first step's loss warns that the run diverges."""


def batch_size_warning(batch_size: int, world_size: int, num_train: int) -> str | None:
    """The warning for a global batch larger than the train data (each epoch is then one short step), or None."""
    if batch_size * world_size <= num_train:
        return None
    processes = f" x {world_size} processes" if world_size > 1 else ""
    return (
        f"warning: train.batch_size {batch_size}{processes} is larger than the {num_train} rows of the train data: each "
        f"epoch is one step of {num_train} rows; set train.batch_size to at most {max(num_train // world_size, 1)} to "
        f"mean that"
    )


def divergence_warning(start_loss: float, loss: float, step: int, lr: float) -> str | None:
    """The warning for a log window's mean ``loss`` grown to :data:`DIVERGENCE_FACTOR` times the first step's
    ``start_loss`` (the run is diverging, most often from too high a rate), or None."""
    if not (start_loss > 0 and loss > DIVERGENCE_FACTOR * start_loss):
        return None
    return (
        f"warning: the training loss grew from {start_loss:.4g} (step 1) to {loss:.4g} (steps up to {step}), "
        f"{loss / start_loss:.3g} times its start: the run is diverging; lower train.lr (now {lr:g}) or set "
        f"train.grad_clip"
    )
