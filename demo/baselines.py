"""The demo's baselines: the same prompted models with the prompt taken out.

The library's prompt methods always carry a prompt (a pixel prompt of size 0 or a prompt of 0 tokens is rejected
by their configs), so the baselines are subclasses of the library's own model classes that skip the prompt and
keep everything else: the same backbone, the same pooled features, the same head, the same data pipeline and the
same :class:`promptcore.trainer.Trainer`. The difference in the report is the prompt and nothing else.

- :class:`VisionLinearProbe`: a :class:`vpt.pixel.PixelPromptModel` whose images go through unprompted; only the
  linear head on the frozen pooled features trains.
- :class:`TextWithoutPrompt`: a :class:`textpt.prompt_tuning.PromptTuningModel` with zero prompt tokens. For
  ``seq_cls`` only the head trains (a linear probe on the frozen ``[CLS]`` pooler output); for a causal LM with a
  verbalizer it is the zero-shot classifier (label words scored after the same template).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from textpt.prompt_tuning import PromptTuningModel
from vpt.pixel import PixelPromptModel


class VisionLinearProbe(PixelPromptModel):
    """Head only: a pixel-prompt model whose prompt is never added (it stays frozen and unused)."""

    prompt_module_names = ("head",)

    def apply_prompt(self, pixel_values: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        return pixel_values

    def prompt_config(self) -> dict[str, Any]:
        return {**super().prompt_config(), "method": "linear_probe", "prompt_size": 0}


class TextWithoutPrompt(PromptTuningModel):
    """Zero prompt tokens: the frozen model as it is, with the head (``seq_cls``) the only trainable part."""

    prompt_module_names = ("head",)

    @property
    def num_prompt_tokens(self) -> int:
        return 0

    def shallow_prompt(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        return self.embedding.weight.new_zeros(batch_size, 0, self.dim)

    def use_fast_path(self) -> bool:
        return False

    def prompt_config(self) -> dict[str, Any]:
        method = "linear_probe" if self.task == "seq_cls" else "zero_shot"
        return {**super().prompt_config(), "method": method, "num_tokens": 0}


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
