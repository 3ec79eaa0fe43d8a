"""The batches of a run: their order and seeds (functions of ``(seed, epoch)`` only, so a resumed run finds its
place), and the checks and moves every batch goes through.

Each epoch's permutation is drawn from its own generator (:func:`epoch_generator`) and cut into global batches of
``batch_size * processes`` samples, of which each process takes its slice (:class:`EpochBatches`). A resumed run
therefore starts its sampler at the saved position without loading the batches it skips.
"""

from __future__ import annotations

import math
import os
import random
from typing import Any, Iterator

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


class EpochBatches(Sampler[list[int]]):
    """This process's micro-batches of one epoch, from micro-batch ``start`` on.

    The epoch's permutation (from :func:`epoch_generator`) is cut into global micro-batches of
    ``batch_size * world_size`` samples (the last may be shorter); process ``rank`` takes the contiguous slice
    ``[rank * m // world, (rank + 1) * m // world)`` of each global micro-batch of size ``m``. Slices that are
    empty (a last global batch smaller than the world) are not yielded; :meth:`local_size` tells the trainer.
    """

    def __init__(self, num_rows: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int, start: int = 0) -> None:
        self.num_rows, self.world_size, self.rank = num_rows, world_size, rank
        self.global_batch = batch_size * world_size
        self.num_micro = math.ceil(num_rows / self.global_batch)
        self.start = start
        self.order = torch.randperm(num_rows, generator=epoch_generator(seed, epoch))

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


__all__ = ["EpochBatches", "check_labels", "epoch_generator", "num_rows", "seed_everything", "set_determinism", "to_device"]
