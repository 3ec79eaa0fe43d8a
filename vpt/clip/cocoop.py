"""CoCoOp (Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022): CoOp's context
plus a shift computed from each image by a small meta-net, so the prompt adapts to the image.

Batched: the official code loops over the images of a batch and encodes every class prompt for each, which is why
it trains at batch size 1. Here the context of each image is one group of the shared-prefix text path: the
``[SOS, context + shift]`` prefix runs once per image, the class-name suffixes (the same embeddings for every image)
run per image and class, with no padding. ``image_chunk`` bounds memory further without changing the result.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptcore import register_method

from .base import CLIPPromptModel
from .config import CoCoOpConfig
from .tokens import Tokenizer


class CoCoOp(CLIPPromptModel):
    """CoCoOp on an open_clip CLIP model. Trainable: ``prompts.ctx`` ``[n_ctx, width]`` and ``prompts.meta_net``
    (Linear(E, E // ratio), ReLU, Linear(E // ratio, width); E the joint embedding width).

    Args:
        model, tokenizer, name: see :class:`vpt.clip.base.CLIPModel`.
        config: :class:`vpt.clip.config.CoCoOpConfig`.
    """

    method = "cocoop"

    def __init__(self, model: nn.Module, config: CoCoOpConfig, tokenizer: Tokenizer | None = None, name: str | None = None) -> None:
        super().__init__(model, config, tokenizer, name)
        width, embed = self.text_tower.width, self.text_tower.embed_dim
        hidden = max(embed // config.meta_hidden_ratio, 1)
        self.prompts = nn.Module()
        self.prompts.ctx = self._context((config.n_ctx, width), config.ctx_init, config.init_std)
        self.prompts.meta_net = nn.Sequential(nn.Linear(embed, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, width))
        self.layout = self._layout(self.class_names, config.n_ctx)
        self.fast = self._text_path(config.text_path)
        self._finish()

    def text_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """``[B, C, embed_dim]``: each image's class prompts, its context shifted by the meta-net."""
        feats = F.normalize(image_features, dim=-1).to(self.prompts.ctx.dtype)
        ctx = self.prompts.ctx.unsqueeze(0) + self.prompts.meta_net(feats).unsqueeze(1)  # [B, n_ctx, width]
        chunk = self.config.image_chunk or ctx.shape[0]
        parts = [self.layout.encode(self.text_tower, c.unsqueeze(1), self.fast) for c in ctx.split(chunk)]
        return torch.cat(parts)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, num_classes]`` logits."""
        with torch.no_grad():
            image = self.backbone.encode_image(pixel_values)
        return self.clip_logits(image, self.text_features(image))

    def prompt_config(self) -> dict[str, Any]:
        return {
            **super().prompt_config(),
            "num_tokens": self.config.n_ctx,
            "num_layers": 1,
            "class_specific": False,
            "method_config": dataclasses.asdict(self.config),
        }


register_method("cocoop", CoCoOpConfig, CoCoOp, kind="vision", summary="CoCoOp: CoOp context plus a per-image meta-net shift")
