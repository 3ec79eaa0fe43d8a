"""The run config of ``vlmpt train | eval | generate``: one YAML file with ``model``, ``prompt``, ``data``, ``task``
and ``train`` sections.

Load it with ``promptcore.load_config(VLMRunConfig, "run.yaml", overrides=["train.lr=0.3"])``; every problem of the
file is reported at once, each naming its field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from promptcore.errors import UserError
from promptcore.train_config import TrainConfig

from .data import VLMDataConfig
from .loading import VLMModelConfig
from .prompt_tuning import VLMPromptTuningConfig


@dataclass
class VLMTaskConfig:
    """What the run learns and how evaluation scores it.

    Attributes:
        type: ``generate``: the answer (or caption) column's text is learned; evaluation generates each row's answer
            and scores it against the references (exact match and token F1 with 95% intervals,
            :mod:`vlmpt.answers`), besides the token loss and accuracy.
        max_new_tokens: the longest answer evaluation and ``vlmpt generate`` write.
    """

    type: Literal["generate"] = "generate"
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens: must be a positive number of tokens, got {self.max_new_tokens!r}")


@dataclass
class VLMRunConfig:
    """A vision-language prompt-tuning run.

    Attributes:
        model: the frozen model and its processor.
        prompt: the method's config (``vlm_prompt_tuning``).
        data: the data source, columns and template.
        task: what is learned and how it is scored.
        train: the trainer's settings.
    """

    model: VLMModelConfig
    prompt: VLMPromptTuningConfig = field(default_factory=VLMPromptTuningConfig)
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    task: VLMTaskConfig = field(default_factory=VLMTaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


__all__ = ["VLMRunConfig", "VLMTaskConfig"]
