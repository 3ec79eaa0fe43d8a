"""Classification heads on top of a prompted encoder: a per-task linear head and the fixed zero-shot CLIP head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TaskLinearHead(nn.Module):
    """One linear classifier per task: ``weight [num_tasks, num_classes, dim]``, ``bias [num_tasks, num_classes]``.

    With one task it is an ordinary linear layer; with several, each image uses its task's classifier, so a batch
    can mix tasks (a prompt bank).
    """

    def __init__(self, dim: int, num_classes: int, num_tasks: int = 1) -> None:
        super().__init__()
        self.dim, self.num_classes, self.num_tasks = dim, num_classes, num_tasks
        self.weight = nn.Parameter(torch.empty(num_tasks, num_classes, dim))
        self.bias = nn.Parameter(torch.zeros(num_tasks, num_classes))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``features [B, dim]`` -> logits ``[B, num_classes]``; ``task_ids [B]`` picks each image's classifier."""
        # Prompt parameters may stay float32 on a bfloat16 (or float64) backbone: compute in the features' dtype.
        if task_ids is None:
            return F.linear(features, self.weight[0].to(features.dtype), self.bias[0].to(features.dtype))
        weight = self.weight[task_ids].to(features.dtype)
        return torch.einsum("bd,bcd->bc", features, weight) + self.bias[task_ids].to(features.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}, num_tasks={self.num_tasks}"


class ZeroShotHead(nn.Module):
    """CLIP's zero-shot classifier: scaled cosine similarity to fixed class text embeddings.

    The class embeddings are derived from the frozen text tower, so they are a non-persistent buffer: they never
    land in prompt files and a loading model rebuilds them from its own text tower.

    Args:
        class_embeddings: ``[num_classes, embed_dim]`` text embeddings (normalised here).
        logit_scale: the multiplier of the cosine similarities (CLIP's learned temperature, exponentiated).
    """

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.detach(), dim=-1), persistent=False)
        self.logit_scale = float(logit_scale)

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        features = F.normalize(features, dim=-1)
        return self.logit_scale * features @ self.class_embeddings.to(features.dtype).t()

    def extra_repr(self) -> str:
        return f"num_classes={self.class_embeddings.shape[0]}, logit_scale={self.logit_scale:.2f}"
