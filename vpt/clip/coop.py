"""CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022): learned context vectors in
place of the hand-written words of a CLIP prompt, ``[SOS, ctx_1 .. ctx_n, class name, '.', EOT]``.

One context for all classes (unified) or one per class (class-specific, CSC); the class name at the end, in the
middle or at the front. The image tower is untouched, so its features are computed without gradients; the text
side runs the exact shared-prefix path of :mod:`vpt.clip.text` where it applies.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import nn

from promptcore import register_method
from promptcore.errors import UserError

from .base import CLIPPromptModel
from .config import CoOpConfig
from .tokens import Tokenizer


class CoOp(CLIPPromptModel):
    """CoOp on an open_clip CLIP model. Trainable: ``prompts.ctx`` ``[n_ctx, width]`` (``[C, n_ctx, width]`` with
    class-specific context).

    Args:
        model, tokenizer, name: see :class:`vpt.clip.base.CLIPModel`.
        config: :class:`vpt.clip.config.CoOpConfig`.
    """

    method = "coop"

    def __init__(self, model: nn.Module, config: CoOpConfig, tokenizer: Tokenizer | None = None, name: str | None = None) -> None:
        super().__init__(model, config, tokenizer, name)
        width = self.text_tower.width
        shape = (len(self.class_names), config.n_ctx, width) if config.class_specific_context else (config.n_ctx, width)
        self.prompts = nn.Module()
        self.prompts.ctx = self._context(shape, config.ctx_init, config.init_std)
        self.layout = self._layout(
            self.class_names, config.n_ctx, config.class_token_position, shared=not config.class_specific_context
        )
        self.fast = self._text_path(config.text_path)
        self._finish()

    def set_class_names(self, class_names: Sequence[str]) -> None:
        if self.config.class_specific_context:
            raise UserError(
                "class-specific context (class_specific_context: true) is learned per class and cannot move to other "
                "classes; base-to-new evaluation needs a unified context"
            )
        super().set_class_names(class_names)

    def text_features(self) -> torch.Tensor:
        """``[C, embed_dim]`` text features of the class prompts (not normalised)."""
        ctx = self.prompts.ctx
        ctx = ctx.unsqueeze(0) if ctx.dim() == 3 else ctx.view(1, 1, *ctx.shape)
        return self.layout.encode(self.text_tower, ctx, self.fast)[0]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, num_classes]`` logits."""
        with torch.no_grad():
            image = self.backbone.encode_image(pixel_values)
        return self.clip_logits(image, self.text_features())

    def prompt_config(self) -> dict[str, Any]:
        return {
            **super().prompt_config(),
            "num_tokens": self.config.n_ctx,
            "num_layers": 1,
            "class_specific": self.config.class_specific_context,
            "class_token_position": self.config.class_token_position,
            "method_config": dataclasses.asdict(self.config),
        }


register_method("coop", CoOpConfig, CoOp, kind="vision", summary="CoOp: learned text context for CLIP")
