"""A model task from outside the package, in one file: an encoder that reads its input backwards and classifies the
mean of its tokens' features with a trainable head. ``TASKS.add(ReversedMeanClassification.name,
ReversedMeanClassification())`` makes ``model.task: reversed_mean`` work in configs (the tests register it for their
duration)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from promptcore.errors import UserError
from textpt.tasks import TextTask, pool


class ReversedMeanClassification(TextTask):
    name = "reversed_mean"
    auto_class = "AutoModel"

    def check_run(self, prompt: Any, target_column: str | None) -> None:
        if prompt.num_classes is None:
            raise UserError("prompt.num_classes: model.task reversed_mean needs the number of classes (the head's size)")

    def classifies(self, model: Any) -> bool:
        return True

    def build_head(self, model: Any) -> nn.Module:
        return nn.Linear(int(model.backbone.config.hidden_size), model.config.num_classes)

    def encode_row(self, encoder: Any, row: dict[str, Any], index: int, split: str, input_ids: list[int]) -> tuple[dict[str, Any], bool]:
        example, truncated = super().encode_row(encoder, row, index, split, input_ids)
        example["input_ids"] = example["input_ids"][::-1]
        return example, truncated

    def class_logits(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, task_ids: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x, mask, _, index = model.encode(input_ids, attention_mask, task_ids)
        hidden = model.backbone(inputs_embeds=x, attention_mask=mask, **model.backbone_kwargs(task_ids, x.shape[0])).last_hidden_state
        return model.head(pool(model.backbone, hidden, index, attention_mask, "mean").to(model.head.weight.dtype))
