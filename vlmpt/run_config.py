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

from .config import VLMCoupledConfig, VLMDataConfig, VLMModelConfig, VLMPrefixConfig, VLMPromptTuningConfig, VLMVisionPromptConfig


@dataclass
class VLMTaskConfig:
    """What the run learns and how evaluation scores it.

    Attributes:
        type: ``generate``: the answer (or caption) column's text is learned; evaluation generates each row's answer
            and scores it against the references (exact match and token F1 with 95% intervals,
            :class:`vlmpt.answers.AnswerScorer`), besides the token loss and accuracy. ``classify``: the word of each
            row's class (``data.label_column``) is learned as its answer; evaluation scores every class word after
            the input and takes the best (``accuracy`` with its 95% interval, :class:`vlmpt.answers.ClassScorer`),
            and ``vlmpt generate`` prints each class with its probability.
        max_new_tokens: the longest answer evaluation and ``vlmpt generate`` write (``generate``).
        class_names: ``classify``: the word of each class, in class order (a verbalizer); default: the label
            column's ``ClassLabel`` names.
    """

    type: Literal["generate", "classify"] = "generate"
    max_new_tokens: int = 16
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens: must be a positive number of tokens, got {self.max_new_tokens!r}")
        if self.class_names is not None and (self.type != "classify" or len(self.class_names) < 2):
            raise UserError(f"class_names: {self.class_names} are the words of a classify task's classes (at least two); set task.type: classify or drop them")


@dataclass
class VLMRunConfig:
    """A vision-language prompt-tuning run.

    Attributes:
        model: the frozen model and its processor.
        prompt: the method's config, chosen by its ``method`` key: ``vlm_prompt_tuning`` (the default: prompt rows
            in the input embeddings), ``vlm_prefix`` (keys and values before the sequence in every layer) or
            ``vlm_vpt`` (VPT in LLaVA's vision tower, optionally with prompt rows in the language model) or
            ``vlm_coupled`` (language prompts and vision prompts projected from them, MaPLe's coupling).
        data: the data source, columns and template.
        task: what is learned and how it is scored.
        train: the trainer's settings.
    """

    model: VLMModelConfig
    prompt: VLMPromptTuningConfig | VLMPrefixConfig | VLMVisionPromptConfig | VLMCoupledConfig = field(default_factory=VLMPromptTuningConfig)
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    task: VLMTaskConfig = field(default_factory=VLMTaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.task.type == "classify" and self.data.label_column is None:
            raise UserError("data.label_column: task.type classify reads each row's class from a label column; name it")


__all__ = ["VLMRunConfig", "VLMTaskConfig"]
