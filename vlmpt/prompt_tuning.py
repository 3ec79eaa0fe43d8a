"""Prompt tuning in the language model of a vision-language model (``method: vlm_prompt_tuning``).

``num_tokens`` trainable vectors in the language model's input embeddings, before each sequence's first real token:
before the whole chat template and so before the image placeholders (:mod:`vlmpt.model`). Registered as a ``text``
method (the prompt lives in the language model; the registry's kinds are ``vision`` and ``text``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from promptcore import SoftPrompt, register_method
from promptcore.errors import UserError
from textpt.config import trainable_dtype

from .model import VLMPromptedModel


@dataclass
class VLMPromptTuningConfig:
    """Soft prompt tuning in a vision-language model's language model.

    Attributes:
        num_tokens: prompt vectors before each sequence.
        init_std: the prompt starts as ``init_std`` times a standard normal draw.
        seed: the seed of that draw.
    """

    method: Literal["vlm_prompt_tuning"] = "vlm_prompt_tuning"
    num_tokens: int = 8
    init_std: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.num_tokens, int) or self.num_tokens < 1:
            raise UserError(f"num_tokens: must be a positive number of prompt vectors, got {self.num_tokens!r}")
        if self.init_std <= 0:
            raise UserError(f"init_std: must be positive, got {self.init_std}")


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
