"""The linear probe: a trained linear classifier on the frozen backbone's own pooled features, and no prompt.

The head-only baseline every prompt method is measured against (VPT, Jia et al. 2022, Table 1 "Linear"). The
features come from the family that owns the backbone (:meth:`vpt.backbones.BackboneFamily.pooled_features`:
timm's ``forward_head(pre_logits=True)``, open_clip's image embedding, a transformers model's ``pooler_output``),
so it runs on CNNs and ViTs alike. The backbone runs without gradients; the prompt file holds the head only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from promptcore import PromptedModel, register_method
from promptcore.errors import UnsupportedModelError, UserError

from .backbones import FAMILIES, OTHER, backbone_name, family_of
from .config import LinearProbeConfig
from .data import resolve_image_config
from .heads import TaskLinearHead


class LinearProbe(PromptedModel):
    """A frozen image model and a linear head on its pooled features (:class:`LinearProbeConfig`).

    Args:
        backbone: the library's model (any model a registered backbone family owns: timm CNNs and ViTs, open_clip,
            transformers).
        config: the probe config; ``num_classes`` must be set.
        name: the backbone name recorded in prompt files (default: :func:`vpt.backbones.backbone_name`).

    Trainable module: ``head`` (:class:`vpt.heads.TaskLinearHead`, one task).
    """

    prompt_module_names = ("head",)

    def __init__(self, backbone: nn.Module, config: LinearProbeConfig, name: str | None = None) -> None:
        super().__init__()
        if config.num_classes is None:
            raise UserError("num_classes: the linear probe needs the number of classes (vpt train fills it from the data)")
        self.family = family_of(backbone)
        if self.family is OTHER:
            raise UnsupportedModelError(
                f"the linear probe reads the pooled features the backbone's family gives, but no backbone family owns "
                f"a {type(backbone).__module__}.{type(backbone).__name__} (families: {', '.join(FAMILIES)}); register "
                f"one for it (vpt.backbones.FAMILIES.add)"
            )
        self.backbone = backbone
        self.config = config
        self.name = name or backbone_name(backbone)
        self.feature_dim = self.family.feature_width(backbone, resolve_image_config(backbone))
        self.head = TaskLinearHead(self.feature_dim, config.num_classes)
        self.freeze_backbone()
        self.backbone.eval()

    def prompt_config(self) -> dict[str, Any]:
        return {
            "method": self.config.method,
            "backbone": self.name,
            "dim": self.feature_dim,
            "num_classes": self.config.num_classes,
            "head": "linear",
            "method_config": dataclasses.asdict(self.config),
        }

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        with torch.no_grad():  # nothing before the head trains
            features = self.family.pooled_features(self.backbone, pixel_values)
        return self.head(features)

    def forward_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["pixel_values"])


register_method(
    "linear_probe", LinearProbeConfig, LinearProbe, kind="vision",
    summary="linear probe: a trained head on the frozen backbone's pooled features, no prompt",
)
