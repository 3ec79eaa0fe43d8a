"""A CLIP prompt method written outside the library: one learned context, scaled by a learned gate, in front of
the class name. Registering it is one line::

    register_method("toy_clip", ToyCLIPConfig, ToyCLIP, kind="vision")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from vpt.clip import CLIPContextConfig, CLIPPromptModel


@dataclass
class ToyCLIPConfig(CLIPContextConfig):
    method: Literal["toy_clip"] = "toy_clip"
    n_ctx: int = 2


class ToyCLIP(CLIPPromptModel):
    method = "toy_clip"

    def __init__(self, model: nn.Module, config: ToyCLIPConfig, tokenizer: Any = None, name: str | None = None) -> None:
        super().__init__(model, config, tokenizer, name)
        self.prompts = nn.Module()
        self.prompts.ctx = self._context((config.n_ctx, self.text_tower.width), config.ctx_init, config.init_std)
        self.prompts.gate = nn.Parameter(torch.ones(()))
        self.layout = self._layout(self.class_names, config.n_ctx)
        self.fast = self._text_path(config.text_path)
        self._finish()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            image = self.backbone.encode_image(pixel_values)
        ctx = (self.prompts.gate * self.prompts.ctx).view(1, 1, *self.prompts.ctx.shape)
        return self.clip_logits(image, self.layout.encode(self.text_tower, ctx, self.fast)[0])

    def prompt_config(self) -> dict[str, Any]:
        return {**super().prompt_config(), "num_tokens": self.config.n_ctx, "num_layers": 1}
