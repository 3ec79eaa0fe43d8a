"""Linear probe: the frozen encoder's pooled features and a trained linear head, without a prompt.

The baseline of prompt tuning on an encoder classifier (``seq_cls``): the same backbone, the same pooled features
(``model.pooling``: by default what the checkpoint was trained for, the mean for sentence-transformers models; see
:meth:`textpt.tasks.SequenceClassification.resolve_pooling`), the same head and data; only the head trains, and a
prompt file holds only the head (and the pooling it was trained on).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from promptcore import register_method

from .config import LinearProbeConfig
from .model import TextPromptedModel


class LinearProbeModel(TextPromptedModel):
    """The frozen encoder with a trainable classification head and no prompt (arguments of
    :class:`textpt.model.TextPromptedModel`)."""

    method = "linear_probe"
    prompt_module_names = ("head",)
    config: LinearProbeConfig

    def __init__(self, backbone: nn.Module, config: LinearProbeConfig, tokenizer: Any = None, task: str | None = None, name: str | None = None) -> None:
        super().__init__(backbone, config, tokenizer, task, name)
        self.freeze_backbone()


register_method("linear_probe", LinearProbeConfig, LinearProbeModel, kind="text", summary="linear probe: a head on the frozen encoder's pooled features, no prompt")
