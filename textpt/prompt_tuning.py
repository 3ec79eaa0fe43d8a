"""Prompt tuning (Lester et al. 2021): ``num_tokens`` trainable vectors in front of the input's token embeddings.

One task: a :class:`promptcore.SoftPrompt`. Several tasks: a :class:`promptcore.PromptBank`, each sample choosing
its prompt by ``task_ids``, so one batch can mix tasks in training and inference.

On decoder-only models the prompt goes through the exact shared-prefix path (:mod:`textpt.fast_prefix`) unless
``fast: off``; seq2seq and encoder models get the concatenated embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from promptcore import PromptBank, SoftPrompt, register_method

from .config import SoftPromptConfig
from .fast_prefix import KeyValues, prompt_key_values, select_rows
from .model import SoftPromptedModel


@dataclass
class PromptTuningConfig(SoftPromptConfig):
    """Prompt tuning (``method: prompt_tuning``); the common fields are :class:`textpt.config.SoftPromptConfig`'s.

    Attributes:
        fast: the shared-prefix path for shallow prompts on decoder-only models (the prompt's keys and values are
            computed once per step and shared by the batch); ``auto`` uses it where it applies, ``on`` requires
            it, ``off`` always concatenates embeddings (the reference path). Both give the same numbers.
    """

    method: Literal["prompt_tuning"] = "prompt_tuning"
    fast: Literal["auto", "on", "off"] = "auto"


class PromptTuningModel(SoftPromptedModel):
    """Shallow soft prompt on a frozen text model (see :class:`textpt.model.TextPromptedModel` for the arguments)."""

    method = "prompt_tuning"
    config: PromptTuningConfig

    def __init__(self, backbone: nn.Module, config: PromptTuningConfig, tokenizer: Any = None, task: str | None = None, name: str | None = None) -> None:
        super().__init__(backbone, config, tokenizer, task, name)
        if config.fast == "on" and not self.strategy.decoder_only:
            raise ValueError(f"fast: the shared-prefix path needs a decoder-only model (causal_lm), this task is {self.task}; use fast: auto or off")
        self.prompts = self._build_prompts().to(backbone.dtype)
        self.freeze_backbone()

    def _init_kwargs(self) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(self.config.seed)
        init = self.config.init
        weight = self.embedding.weight
        if init in ("random", "normal"):
            return {"init": "normal", "std": self.config.init_std, "generator": generator}
        if init == "vocab":
            return {"init": "vocab", "embedding": weight.float(), "generator": generator}
        return {"init": "text", "embedding": weight.float(), "token_ids": self.init_token_ids()}

    def _build_prompts(self) -> nn.Module:
        n, kwargs = self.config.num_tokens, self._init_kwargs()
        if self.config.num_tasks > 1:
            return PromptBank(self.config.num_tasks, (n, self.dim), **kwargs)
        return SoftPrompt(n, self.dim, **kwargs)

    def prompt_table(self) -> torch.Tensor:
        """``[T, n, D]``: every task's prompt (T = 1 without a bank), the encoder applied."""
        if isinstance(self.prompts, PromptBank):
            return self.prompts.weight
        return self.prompts().unsqueeze(0)

    def shallow_prompt(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        if isinstance(self.prompts, PromptBank):
            return self.prompts(task_ids)
        return self.prompts(batch_size)

    def use_fast_path(self) -> bool:
        return self.strategy.decoder_only and self.config.fast != "off"

    def prefix_key_values(self, task_ids: torch.Tensor | None, batch_size: int) -> KeyValues:
        """The prompt's keys/values computed once per task, then shared by the batch (views when one task)."""
        if isinstance(self.prompts, PromptBank):
            self.prompts.check_task_ids(task_ids)
            used, rows = torch.unique(task_ids, return_inverse=True)
            return select_rows(prompt_key_values(self.backbone, self.prompts.weight[used]), rows, batch_size)
        return select_rows(prompt_key_values(self.backbone, self.prompt_table()), None, batch_size)


register_method("prompt_tuning", PromptTuningConfig, PromptTuningModel, kind="text", summary="prompt tuning (Lester et al. 2021)")
