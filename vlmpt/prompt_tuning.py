"""Prompt tuning in the language model of a vision-language model (``method: vlm_prompt_tuning``).

``num_tokens`` trainable vectors in the language model's input embeddings, before each sequence's first real token:
before the whole chat template and so before the image placeholders (:mod:`vlmpt.model`). Registered as a ``text``
method (the prompt lives in the language model; the registry's kinds are ``vision`` and ``text``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from promptcore import SoftPrompt, register_method
from textpt.config import trainable_dtype

from .config import VLMPromptTuningConfig
from .model import VLMPromptedModel


class VLMPromptTuningModel(VLMPromptedModel):
    """Shallow soft prompt in the language model of a frozen vision-language model.

    Args:
        backbone: a supported ``...ForConditionalGeneration`` model (:data:`vlmpt.families.FAMILIES`).
        config: the method's config.
        name: the backbone's name recorded in prompt files. Other ``context`` a recipe passes is not used.
    """

    method = "vlm_prompt_tuning"

    def __init__(self, backbone: nn.Module, config: VLMPromptTuningConfig, name: str | None = None, **context: Any) -> None:
        super().__init__(backbone, name)
        self.config = config
        generator = torch.Generator().manual_seed(config.seed)
        self.prompts = SoftPrompt(config.num_tokens, self.dim, init="normal", std=config.init_std, generator=generator)
        self.prompts.to(trainable_dtype(backbone))
        self.freeze_backbone()

    @property
    def num_prompt_tokens(self) -> int:
        return self.config.num_tokens

    def shallow_prompt(self, batch_size: int) -> torch.Tensor:
        return self.prompts(batch_size)


register_method(
    "vlm_prompt_tuning", VLMPromptTuningConfig, VLMPromptTuningModel, kind="text",
    summary="prompt tuning in the language model of LLaVA (-OneVision) / Qwen2-VL / Qwen2.5-VL / PaliGemma / Idefics3",
)
