"""The run config of ``textpt train | eval | generate``: one YAML file with ``model``, ``prompt``, ``data`` and
``train`` sections.

Load it with ``promptcore.load_config(TextRunConfig, "run.yaml", overrides=["train.lr=0.3"])``; every problem of
the file is reported at once, each naming its field. The ``prompt`` section is the config of the method its
``method:`` names (any registered text method; ``prompt_tuning`` when the key is left out).

Loading validates; it fills in nothing. The recipe's config-resolution hook,
:meth:`textpt.cli.TextRecipe.resolve_config` (:func:`resolve_prompt`), returns the config with the defaults that
depend on other sections filled in (a new object; the loaded one is left as it is): the ``textpt`` CLI works with,
and records in the run directory, the resolved config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from promptcore.config import check_sources
from promptcore.errors import UserError
from promptcore.methods import method_config
from promptcore.train_config import TrainConfig

from .config import PromptTuningConfig, TextDataConfig, TextMethodConfig, TextModelConfig, task_traits
from .sources import SOURCES


@dataclass
class TextRunConfig:
    """A text prompt-tuning run.

    Defaults filled by :func:`resolve_prompt` (on a source that knows its class names before loading, such as the
    synthetic data):

    - without ``data.target_column`` and ``prompt.verbalizer``, a task that classifies by label words
      (``causal_lm``, ``seq2seq``) gets the class names as its verbalizer, each after a space
      (``[" excellent", " terrible"]``);
    - otherwise an unset ``prompt.num_classes`` becomes the number of classes.

    Checks across sections (on the resolved config):

    - the method runs the model's task (``linear_probe``: seq_cls; ``zero_shot``: causal_lm or seq2seq, with a
      verbalizer; ``prefix`` runs every task, on the encoder architectures :mod:`textpt.attention_prefix` lists);
    - ``seq_cls`` needs ``prompt.num_classes``;
    - ``causal_lm`` classifies when ``prompt.verbalizer`` is set and learns to write ``data.target_column``
      otherwise (one of them, not both); ``seq2seq`` learns ``data.target_column`` or the verbalizer's words;
    - a prompt bank (``prompt.num_tasks > 1``) needs ``data.task_column``;
    - ``model.device_map`` (one process) goes with ``train.distributed: auto`` only;
    - ``data.packing: true`` needs a decoder-only task (the model, its attention and the method are checked when
      the model is built, :meth:`textpt.model.TextPromptedModel.set_packing`);
    - ``data.max_length`` and ``model.max_length`` stay within the method's own input limit (DePT's
      ``prompt.max_length``), which caps the inputs when neither is set.

    Attributes:
        model: the frozen model and tokenizer.
        prompt: the method's config, chosen by its ``method`` key.
        data: the data source, columns and template.
        train: the trainer's settings.
        source: a paper preset's provenance: dotted field path -> where the value comes from
            (:func:`promptcore.config.check_sources`).
    """

    model: TextModelConfig
    prompt: method_config("text", default="prompt_tuning") = field(default_factory=PromptTuningConfig)
    data: TextDataConfig = field(default_factory=TextDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_sources(self, self.source)
        self._check_sections()  # free of torch: the tasks' traits are declared, the synthetic class names need no data

    def _check_sections(self) -> None:
        """The checks across sections (see the class's docstring)."""
        data = self.data
        names = known_class_names(data)
        if names is not None and self.prompt.num_classes not in (None, len(names)):
            raise UserError(
                f"prompt.num_classes: {self.prompt.num_classes} does not match data.num_classes {len(names)} of "
                f"the {data.source} data; make them equal (or drop prompt.num_classes)"
            )
        _check(self.model, resolve_prompt(self.model.task, self.prompt, data), data)
        if self.model.device_map is not None and self.train.distributed != "auto":
            sharding = self.train.distributed if self.train.distributed in ("fsdp", "deepspeed") else "fsdp"
            raise ValueError(
                f"model.device_map: places one model across devices in one process; train.distributed: "
                f"{self.train.distributed} runs several. Drop model.device_map and keep train.distributed: {sharding} to "
                f"shard the frozen model over the processes, or set train.distributed: auto for one process"
            )


def known_class_names(data: TextDataConfig) -> list[str] | None:
    """The class names ``data``'s source knows before loading any row (:attr:`textpt.sources.TextSource.class_names`),
    or None."""
    source = SOURCES.get(data.source)
    return source.class_names(data) if source.class_names is not None else None


def resolve_prompt(task: str, prompt: TextMethodConfig, data: TextDataConfig) -> TextMethodConfig:
    """``prompt`` with the defaults of a source that knows its classes (see :class:`TextRunConfig`): a new config,
    or ``prompt`` itself when nothing is filled in."""
    names = known_class_names(data)
    if names is None:
        return prompt
    if task_traits(task).label_words and prompt.verbalizer is None and data.target_column is None:
        return dataclasses.replace(prompt, verbalizer=[" " + name for name in names], num_classes=None)
    if prompt.num_classes is None:
        return dataclasses.replace(prompt, num_classes=len(names))
    return prompt


def _check(model: TextModelConfig, prompt: TextMethodConfig, data: TextDataConfig) -> None:
    """The checks across sections of a resolved run config; raises ``ValueError("section.field: ...")``."""
    task, traits = model.task, task_traits(model.task)
    try:
        prompt.check_task(task, data.target_column)
    except ValueError as e:
        raise UserError(f"prompt.{e}") from None
    traits.check_run(prompt, data.target_column)
    if data.task_column is None and prompt.num_tasks > 1:
        raise UserError(
            f"data.task_column: prompt.num_tasks is {prompt.num_tasks}, so batches need per-row task ids; name the column "
            f"holding them"
        )
    if data.packing is True and not traits.decoder_only:
        raise UserError(
            f"data.packing: true packs the batches of decoder-only models (causal_lm); model.task {task} runs padded "
            f"batches, so set data.packing: auto or false"
        )
    limit = prompt.input_limit()
    for key, value in (("data.max_length", data.max_length), ("model.max_length", model.max_length)):
        if limit is not None and value is not None and value > limit:
            raise UserError(
                f"{key}: {value} tokens, but method {prompt.method} takes at most {limit} input tokens "
                f"(prompt.max_length); lower {key} or raise prompt.max_length"
            )


__all__ = ["TextRunConfig", "known_class_names", "resolve_prompt"]
