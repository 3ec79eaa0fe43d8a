"""The batches of a run: their order and seeds (functions of ``(seed, epoch)`` only, so a resumed run finds its
place), and the checks and moves every batch goes through.

Each epoch's permutation is drawn from its own generator (:func:`epoch_generator`), or given by the run's batch-order
hook (``Trainer(batch_order=...)``), and cut into global batches of ``batch_size * processes`` samples, of which each
process takes its slice (:class:`EpochBatches`). A resumed run therefore starts its sampler at the saved position
without loading the batches it skips.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .errors import UserError


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(enabled: bool) -> None:
    """Switches torch to deterministic kernels (and cuDNN off autotuning) when ``enabled``; it fails loudly on an
    op that has no deterministic implementation. Process-wide: affects everything torch runs afterwards."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic matmuls
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's data order: a function of ``(seed, epoch)`` only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def num_rows(dataset: Dataset, split: str) -> int:
    """The rows of a map-style ``dataset``, or a :class:`UserError` for one without ``len()`` or without rows."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise UserError(
            f"{split} dataset {type(dataset).__name__} has no len(); the trainer needs a map-style dataset "
            f"(random access by index) to fix the data order and resume mid-epoch"
        ) from None
    if n == 0:
        raise UserError(f"{split} dataset has no rows; check the data source, split name and filters of the {split} data")
    return n


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (a tensor, a dict or list of them) on ``device``, copied without waiting where the device allows."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def check_labels(batch: Any, num_classes: int | None, where: str) -> None:
    """Raises a :class:`UserError` when a batch's integer ``labels`` (on the CPU) fall outside ``[0, num_classes)``;
    nothing is checked without a class count or for labels already on another device."""
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if (
        num_classes is None
        or not isinstance(labels, torch.Tensor)
        or labels.device.type != "cpu"  # checking on a GPU would cost a sync per batch
        or labels.dim() != 1
        or labels.dtype not in (torch.int64, torch.int32)
        or labels.numel() == 0
    ):
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise UserError(
            f"label {bad} is out of range for a model with {num_classes} classes ({where}); labels must lie "
            f"in [0, {num_classes - 1}]: check the dataset's labels or set the model's num_classes to match"
        )


def micro_batches(num_rows: int, global_batch: int, drop_last: bool) -> int:
    """The global micro-batches of an epoch of ``num_rows`` rows; ``drop_last`` leaves out a short last one, unless
    the data is smaller than one batch (kept whole, as Dassl's train loader's ``drop_last=len(data) >= batch_size``)."""
    if drop_last and num_rows >= global_batch:
        return num_rows // global_batch
    return math.ceil(num_rows / global_batch)


def check_order(order: Sequence[int] | torch.Tensor, num_rows: int, epoch: int) -> torch.Tensor:
    """``order`` (an epoch's row indices from a batch-order hook) as an int64 tensor, or a :class:`UserError` when
    it does not give one index in ``[0, num_rows)`` per row."""
    try:
        indices = torch.as_tensor(order if isinstance(order, torch.Tensor) else list(order))
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"batch order of epoch {epoch}: expected a sequence of row indices, got {type(order).__name__} ({e})") from None
    if indices.dim() != 1 or len(indices) != num_rows or (len(indices) and indices.is_floating_point()):
        raise UserError(
            f"batch order of epoch {epoch}: expected {num_rows} integer row indices (one per row of the train data), "
            f"got shape {tuple(indices.shape)} of {indices.dtype}"
        )
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= num_rows):
        raise UserError(f"batch order of epoch {epoch}: indices must lie in [0, {num_rows - 1}], got {int(indices.min())} .. {int(indices.max())}")
    return indices.to(torch.int64)


class EpochBatches(Sampler[list[int]]):
    """This process's micro-batches of one epoch, from micro-batch ``start`` on.

    The epoch's order (``order``, or by default a permutation from :func:`epoch_generator`) is cut into global
    micro-batches of ``batch_size * world_size`` samples (the last may be shorter; ``drop_last`` leaves it out, as
    Dassl's train loader does, unless the data is smaller than one batch, which is then kept); process ``rank`` takes the contiguous slice
    ``[rank * m // world, (rank + 1) * m // world)`` of each global micro-batch of size ``m``. Slices that are
    empty (a last global batch smaller than the world) are not yielded; :meth:`local_size` tells the trainer.

    Args:
        num_rows: rows of the train dataset.
        batch_size: samples per process and micro-batch.
        world_size, rank: the processes and this one's index.
        seed, epoch: what the default order is drawn from.
        start: the first micro-batch yielded (a resumed run starts mid-epoch).
        order: the epoch's row indices in the order they are trained (``num_rows`` of them, each in
            ``[0, num_rows)``; a permutation, or drawn with replacement), instead of the default permutation.
        drop_last: leave out the epoch's last global micro-batch when it is shorter than ``batch_size * world_size``
            (data smaller than one batch stays one short batch, as Dassl's ``len(data) >= batch_size`` rule keeps it).
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        world_size: int,
        rank: int,
        seed: int,
        epoch: int,
        start: int = 0,
        order: Sequence[int] | torch.Tensor | None = None,
        drop_last: bool = False,
    ) -> None:
        self.num_rows, self.world_size, self.rank = num_rows, world_size, rank
        self.global_batch = batch_size * world_size
        self.num_micro = micro_batches(num_rows, self.global_batch, drop_last)
        self.start = start
        self.order = torch.randperm(num_rows, generator=epoch_generator(seed, epoch)) if order is None else check_order(order, num_rows, epoch)

    def global_size(self, j: int) -> int:
        return min(self.global_batch, self.num_rows - j * self.global_batch)

    def _bounds(self, j: int) -> tuple[int, int]:
        m = self.global_size(j)
        return self.rank * m // self.world_size, (self.rank + 1) * m // self.world_size

    def local_size(self, j: int) -> int:
        lo, hi = self._bounds(j)
        return hi - lo

    def __iter__(self) -> Iterator[list[int]]:
        for j in range(self.start, self.num_micro):
            lo, hi = self._bounds(j)
            if hi > lo:
                base = j * self.global_batch
                yield self.order[base + lo : base + hi].tolist()

    def __len__(self) -> int:
        return sum(1 for j in range(self.start, self.num_micro) if self.local_size(j) > 0)


__all__ = ["EpochBatches", "check_labels", "check_order", "micro_batches", "epoch_generator", "num_rows", "seed_everything", "set_determinism", "to_device"]


def epoch_order(hook: Callable[[int], Sequence[int]] | Sampler | None) -> Callable[[int], Sequence[int] | None]:
    """``epoch -> row indices`` of the trainer's ``batch_order`` hook (a callable, or a torch ``Sampler`` iterated
    once per epoch after ``set_epoch(epoch)`` where it has one); it gives None (the default order) without a hook.

    Raises:
        UserError: a hook of another type.
    """
    if hook is None:
        return lambda epoch: None
    if isinstance(hook, Sampler):

        def sampled(epoch: int) -> list[int]:
            if hasattr(hook, "set_epoch"):
                hook.set_epoch(epoch)
            return list(hook)

        return sampled
    if not callable(hook):
        raise UserError(f"batch_order: expected a callable (epoch -> row indices) or a torch Sampler, got {type(hook).__name__}")
    return hook
