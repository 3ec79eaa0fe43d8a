"""Base-to-new evaluation, on plain label lists and torch Datasets (the K-shot draw is
:func:`promptcore.data.few_shot_indices`, CoOp's 1/2/4/8/16-shot protocol).

- :func:`base_new_split`: the first half of the classes are base, the rest new (``ceil(C / 2)`` base classes, as
  CoCoOp's ``subsample_classes``).
- :class:`ClassSubset`: a dataset restricted to some classes, labels renumbered ``0 .. len(classes) - 1``.
- :func:`harmonic_mean`, :func:`aggregate`, :func:`format_aggregate`: base / new / H per seed, and mean ± std over
  seeds (sample standard deviation, ``n - 1``; 0 for one seed).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from promptcore.errors import UserError


def dataset_labels(dataset: Dataset) -> list[int]:
    """The integer label of every item: from ``dataset.labels`` / ``dataset.targets`` when present (no decoding),
    else from each item's ``"labels"`` key."""
    for attr in ("labels", "targets"):
        labels = getattr(dataset, attr, None)
        if labels is not None and not callable(labels) and len(labels) == len(dataset):
            return [int(x) for x in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    return [int(dataset[i]["labels"]) for i in range(len(dataset))]


def base_new_split(num_classes: int) -> tuple[list[int], list[int]]:
    """``(base, new)`` class indices: the first ``ceil(C / 2)`` classes and the rest (CoCoOp's split)."""
    if num_classes < 2:
        raise UserError(f"base-to-new needs at least 2 classes, found {num_classes}")
    m = math.ceil(num_classes / 2)
    return list(range(m)), list(range(m, num_classes))


class ClassSubset(Dataset):
    """The items of ``dataset`` whose label is in ``classes``, relabelled by their position in ``classes``.

    Args:
        dataset: items are dicts with ``"labels"``.
        classes: the kept class indices, in the new label order.
        indices: restrict to these item indices first (a few-shot draw); default all.
        labels: the dataset's labels if already known (else read with :func:`dataset_labels`).
    """

    def __init__(
        self,
        dataset: Dataset,
        classes: Sequence[int],
        indices: Sequence[int] | None = None,
        labels: Sequence[int] | None = None,
    ) -> None:
        labels = list(labels) if labels is not None else dataset_labels(dataset)
        self.dataset = dataset
        self.remap = {int(c): i for i, c in enumerate(classes)}
        pool = range(len(dataset)) if indices is None else indices
        self.indices = [i for i in pool if labels[i] in self.remap]
        self.labels = [self.remap[labels[i]] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[self.indices[i]])
        item["labels"] = self.labels[i]
        return item


def harmonic_mean(base: float, new: float) -> float:
    """``2 * base * new / (base + new)`` (0 when both are 0)."""
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def aggregate(runs: Sequence[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, std)}`` over runs (sample std; 0 for a single run). Every run must have the same keys."""
    if not runs:
        raise UserError("aggregate: no runs to aggregate")
    keys = list(runs[0])
    out = {}
    for k in keys:
        values = [float(r[k]) for r in runs]
        out[k] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def format_aggregate(agg: dict[str, tuple[float, float]], scale: float = 100.0, digits: int = 2) -> dict[str, str]:
    """``{metric: "mean ± std"}`` with accuracies as percentages by default."""
    return {k: f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}" for k, (m, s) in agg.items()}


def base_new_metrics(base_accuracy: float, new_accuracy: float) -> dict[str, Any]:
    """One seed's row: ``{"base": .., "new": .., "hm": ..}`` (accuracies as fractions)."""
    return {"base": base_accuracy, "new": new_accuracy, "hm": harmonic_mean(base_accuracy, new_accuracy)}
