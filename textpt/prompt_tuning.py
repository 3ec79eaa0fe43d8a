"""Prompt tuning (Lester et al. 2021): ``num_tokens`` trainable vectors in front of the input's token embeddings.

Inits as the official code (google-research/prompt-tuning) builds them: ``class_labels`` (their
``configs/prompts/from_class_labels.gin``) with ``init_vocab_size: 5000``, ``vocab`` with ``init_vocab_size: 5000``
(``from_sampled_vocab.gin``). The preset ``configs/textpt/t5_prompt_tuning_lester.yaml`` runs their SST-2 recipe.

One task: a :class:`promptcore.SoftPrompt`. Several tasks: a :class:`promptcore.PromptBank`, each sample choosing
its prompt by ``task_ids``, so one batch can mix tasks in training and inference.

On decoder-only models on the CPU the prompt goes through the exact shared-prefix path (:mod:`textpt.fast_prefix`)
unless ``fast: off``; on a GPU only with ``fast: on``; seq2seq and encoder models get the concatenated embeddings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from promptcore import PromptBank, SoftPrompt, register_method
from promptcore.errors import UserError

from .config import PromptTuningConfig, trainable_dtype
from .fast_prefix import KeyValues, prompt_key_values, select_rows
from .model import SoftPromptedModel


class PromptTuningModel(SoftPromptedModel):
    """Shallow soft prompt on a frozen text model (see :class:`textpt.model.TextPromptedModel` for the arguments)."""

    method = "prompt_tuning"
    config: PromptTuningConfig

    def __init__(self, backbone: nn.Module, config: PromptTuningConfig, tokenizer: Any = None, task: str | None = None, name: str | None = None) -> None:
        super().__init__(backbone, config, tokenizer, task, name)
        if config.fast == "on" and not self.strategy.decoder_only:
            raise UserError(f"fast: the shared-prefix path needs a decoder-only model (causal_lm), this task is {self.task}; use fast: auto or off")
        self.prompts = self._build_prompts().to(trainable_dtype(backbone))
        self.freeze_backbone()

    def _build_prompts(self) -> nn.Module:
        n, kwargs = self.config.num_tokens, prompt_init(self)
        if self.config.num_tasks > 1:
            return PromptBank(self.config.num_tasks, (n, self.dim), **kwargs)
        return SoftPrompt(n, self.dim, **kwargs)

    def prompt_table(self) -> torch.Tensor:
        """``[T, n, D]``: every task's prompt (T = 1 without a bank), the encoder applied."""
        return self.prompts.table()

    def shallow_prompt(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        return self.prompts.for_batch(task_ids, batch_size)

    def use_fast_path(self) -> bool:
        if not self.strategy.decoder_only or self.config.fast == "off":
            return False
        # auto takes the shared prefix on the CPU, where it saves the prompt's compute in every example. On a GPU
        # the prompt's own pass costs more than it saves at the sizes measured on an H200 (bench/RESULTS.md: train
        # steps 1.2-2.2x PEFT's with it, 0.9-1.05x with concatenation), so auto concatenates there.
        return self.config.fast == "on" or self.embedding.weight.device.type == "cpu"

    def prefix_key_values(self, task_ids: torch.Tensor | None, batch_size: int) -> KeyValues:
        """The prompt's keys/values computed once per task, then shared by the batch (views when one task)."""
        table, rows = self.prompts.used_table(task_ids)
        return select_rows(prompt_key_values(self.backbone, table), rows, batch_size)


def prompt_init(model: SoftPromptedModel) -> dict[str, Any]:
    """The keyword arguments of :func:`promptcore.init_prompt_` for the init a prompt tuning config names (the
    methods built on prompt tuning's config share them)."""
    config: PromptTuningConfig = model.config
    generator = torch.Generator().manual_seed(config.seed)
    weight = model.embedding.weight.float()
    if config.init in ("random", "normal"):
        return {"init": "normal", "std": config.init_std, "generator": generator}
    if config.init == "vocab":
        return {"init": "vocab", "embedding": weight, "population": config.init_vocab_size, "generator": generator}
    if config.init == "class_labels":
        return {
            "init": "class_labels", "embedding": weight, "token_groups": model.verbalizer_ids,
            "population": config.init_vocab_size, "generator": generator,
        }
    if config.init == "text" and config.init_text_special_tokens:
        if model.tokenizer is None:
            raise UserError("init 'text': the tokenizer is needed; call textpt.wrap(model, config, tokenizer=tokenizer)")
        return {"init": "text", "embedding": weight, "token_ids": model.tokenizer(config.init_text)["input_ids"]}
    return {"init": "text", "embedding": weight, "token_ids": model.init_token_ids()}


register_method("prompt_tuning", PromptTuningConfig, PromptTuningModel, kind="text", summary="prompt tuning (Lester et al. 2021)")
