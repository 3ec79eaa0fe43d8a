"""The run config of ``textpt train | eval | generate``: one YAML file with ``model``, ``prompt``, ``data`` and
``train`` sections.

Load it with ``promptcore.load_config(TextRunConfig, "run.yaml", overrides=["train.lr=0.3"])``; every problem of
the file is reported at once, each naming its field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from promptcore.train_config import TrainConfig

from .config import TextModelConfig, TextPromptConfig
from .data import TextDataConfig, layout_for, synthetic_class_names


@dataclass
class TextRunConfig:
    """A text prompt-tuning run.

    The sections must agree on the task; checks across sections:

    - ``seq_cls`` needs ``prompt.num_classes`` (or a verbalizer); on synthetic data it defaults to
      ``data.num_classes``.
    - ``causal_lm`` classifies when ``prompt.verbalizer`` is set and learns to write ``data.target_column``
      otherwise (one of them, not both); ``seq2seq`` learns ``data.target_column`` or the verbalizer's words.
    - On synthetic data without a target column, the verbalizer defaults to the class keywords, each after a
      space (``[" excellent", " terrible"]``).

    Attributes:
        model: the frozen model and tokenizer.
        prompt: the prompt method and its sizes.
        data: the data source, columns and template.
        train: the trainer's settings.
    """

    model: TextModelConfig
    prompt: TextPromptConfig = field(default_factory=TextPromptConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        task, prompt, data = self.model.task, self.prompt, self.data
        if data.source == "synthetic":
            if prompt.num_classes is not None and prompt.num_classes != data.num_classes:
                raise ValueError(
                    f"prompt.num_classes: {prompt.num_classes} does not match data.num_classes {data.num_classes} of "
                    f"the synthetic data; make them equal (or drop prompt.num_classes)"
                )
            if prompt.verbalizer is None and data.target_column is None and task != "seq_cls":
                words = [" " + name for name in synthetic_class_names(data)]
                self.prompt = dataclasses.replace(prompt, verbalizer=words, num_classes=None)
            elif prompt.num_classes is None:
                self.prompt = dataclasses.replace(prompt, num_classes=data.num_classes)
        prompt = self.prompt
        if task == "seq_cls" and prompt.num_classes is None:
            raise ValueError("prompt.num_classes: model.task seq_cls needs the number of classes (the head's size)")
        if task == "causal_lm" and prompt.verbalizer and data.target_column is not None:
            raise ValueError(
                "prompt.verbalizer: with data.target_column set, a causal_lm run learns to write the targets, so it "
                "takes no verbalizer; drop one of the two (verbalizer: classify; target_column: generate)"
            )
        try:
            layout_for(task, prompt.verbalizer, data.target_column)
        except ValueError as e:
            raise ValueError(f"data.target_column: {e}") from None
        if task == "seq2seq" and data.target_column is None and not prompt.verbalizer:
            raise ValueError(
                "prompt.verbalizer: a seq2seq run learns data.target_column or the verbalizer's words; set one of them"
            )
        if data.task_column is None and prompt.num_tasks > 1:
            raise ValueError(
                f"data.task_column: prompt.num_tasks is {prompt.num_tasks}, so batches need per-row task ids; name "
                f"the column holding them"
            )


__all__ = ["TextRunConfig"]
