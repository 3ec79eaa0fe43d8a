"""Zero-shot classification: the frozen model scores the verbalizer's label words after the template; nothing trains.

The baseline of prompt tuning on generative models: a causal LM scores each word's log-probability after the
input, a seq2seq model each word's log-probability as its target (see :mod:`textpt.tasks`). There is no prompt
and no parameter to train, so ``textpt train`` refuses it and ``textpt eval`` (without ``--prompts``) measures it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from promptcore import register_method

from .config import ZeroShotConfig
from .model import TextPromptedModel


class ZeroShotModel(TextPromptedModel):
    """The frozen model classifying by its verbalizer's words (arguments of :class:`textpt.model.TextPromptedModel`)."""

    method = "zero_shot"
    prompt_module_names = ()
    config: ZeroShotConfig

    def __init__(self, backbone: nn.Module, config: ZeroShotConfig, tokenizer: Any = None, task: str | None = None, name: str | None = None) -> None:
        super().__init__(backbone, config, tokenizer, task, name)
        self.freeze_backbone()

    @property
    def classifies(self) -> bool:
        return True


register_method("zero_shot", ZeroShotConfig, ZeroShotModel, kind="text", summary="zero-shot: the frozen model scores the label words (nothing trains)", trains=False)
