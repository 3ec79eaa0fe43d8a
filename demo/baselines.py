"""Evaluation of the demo's zero-shot baseline, which has nothing to train (the trainer refuses such models).

The baselines themselves are the library's head-only methods on the prompt method's own frozen backbone and data
(demo/run_demo.py builds them): vpt's ``linear_probe`` (a linear head on the backbone family's pooled features),
textpt's ``linear_probe`` (a head on the encoder's features, pooled as the prompted model pools them) and textpt's
``zero_shot`` (the verbalizer's words scored after the same template). They train with the same
:class:`promptcore.trainer.Trainer`, so the difference in the report is the prompt.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset



@torch.no_grad()
def evaluate(model: Any, dataset: Dataset, collate_fn: Any, batch_size: int, desc: str) -> dict[str, float]:
    """Accuracy and loss of ``model.eval_step`` summed over ``dataset`` (for models with nothing to train, which
    the trainer refuses), with a progress bar."""
    from tqdm.auto import tqdm

    model.eval()
    sums: dict[str, float] = {}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    for batch in tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True):
        for key, value in model.eval_step(batch).items():
            sums[key] = sums.get(key, 0.0) + float(value)
    count = sums.pop("count")
    return {**{k: v / count for k, v in sums.items()}, "count": int(count)}
