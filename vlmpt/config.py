"""Typed configs of the vision-language side: the model (:class:`VLMModelConfig`, the run config's ``model:``
section), the data (:class:`VLMDataConfig`, ``data:``) and the methods' configs (``prompt:``; each method's file,
:mod:`vlmpt.prompt_tuning`, :mod:`vlmpt.prefix`, :mod:`vlmpt.vision_prompts`, holds its model and gives its config
too).

This module imports no torch (nor transformers or datasets): ``vlmpt train`` validates a config, and reports its
errors, before they load. The families (:data:`FAMILIES`, registered by :mod:`vlmpt.families`, which imports torch)
are declared here, so a ``random:`` model type is checked without it; the other checks of the model's name (the
loaders import torch, a ``random:`` model's kwargs transformers) go through :func:`promptcore.config.library_check`,
after the rest is valid.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from promptcore.config import library_check, unknown_fields
from promptcore.errors import UserError
from promptcore.registry import Registry, did_you_mean
from textpt.config import DTYPES
from textpt.sources import SOURCES

if TYPE_CHECKING:
    from .families import Family

FAMILIES: Registry["Family"] = Registry("vision-language family")
"""Families by the backbone config's ``model_type`` (:class:`vlmpt.families.Family`); each is also a ``random:``
model type."""
# Declared here rather than in vlmpt's __init__, which imports no textpt (vlmpt --help stays quick).
for _family in ("llava", "qwen2_vl", "qwen2_5_vl", "llava_onevision", "paligemma", "idefics3"):
    FAMILIES.declare(_family, "vlmpt.families")

FILE_SOURCES = ("hf", "csv", "json", "parquet")
"""The sources of :data:`textpt.sources.SOURCES` a vision-language run reads (its synthetic and asset sources hold
texts only)."""


@dataclass
class VLMModelConfig:
    """The frozen vision-language model and its processor.

    Attributes:
        name: ``hf:ORG/NAME`` (a Hugging Face Hub id, e.g. ``hf:Qwen/Qwen2-VL-2B-Instruct``), a local folder written
            by ``save_pretrained``, or ``random:MODEL_TYPE`` (``random:qwen2_vl``, ``random:qwen2_5_vl``,
            ``random:llava``, ``random:llava_onevision``, ``random:paligemma``, ``random:idefics3``): a tiny random
            model (:func:`vlmpt.synthetic.tiny_backbone`, built with ``train.seed``) and its tiny processor
            (:func:`vlmpt.synthetic.tiny_processor`), for tests and smoke runs.
        dtype: the frozen weights' dtype (the prompt stays float32 on a 16-bit model).
        processor: where to load the processor from when it is not next to the model (same forms as ``name``).
        processor_kwargs: keyword arguments of ``AutoProcessor.from_pretrained`` (Qwen: ``{min_pixels: 200704,
            max_pixels: 1003520}`` bounds the image tokens).
        kwargs: for ``random:`` names, fields of the tiny language model's config (``{initializer_range: 0.3}``;
            a key that is not a field is refused); for every other name, extra keyword arguments of
            ``from_pretrained`` (``{revision: main}``, ``{attn_implementation: sdpa}``).
        checkpoint: a prompt folder to load after wrapping, or ``None``.
        quantization: ``int8`` (torchao's weight-only int8) or ``nf4`` (QLoRA's 4-bit NormalFloat, the kind
            ``train.distributed: fsdp`` shards) stores the language model's linear weights in that many bits, through
            the ``prompttune[quant]`` extra (:func:`vlmpt.loading.quantize_language_model`); the vision tower, the
            projector, the LM head and the embeddings stay in ``dtype``. ``None``: every weight in ``dtype``.
    """

    name: str
    dtype: str = "float32"
    processor: str | None = None
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    quantization: Literal["int8", "nf4"] | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise UserError("name: empty model name; give 'hf:ORG/NAME', a local folder or 'random:TYPE'")
        if self.name.startswith("asset:"):
            raise UserError(f"name: {self.name!r}: no vision-language model is shipped as an asset; give 'hf:ORG/NAME', a local folder or 'random:TYPE'")
        target = self.name.removeprefix("random:").strip()
        if self.name.startswith("random:") and target:
            families = FAMILIES.known_names()
            if target not in families:
                raise UserError(f"name: {self.name!r}: no tiny model of type {target!r}; one of {', '.join('random:' + n for n in families)}.{did_you_mean(target, families)}")
            if self.processor is not None or self.processor_kwargs:
                raise UserError(f"processor: {self.name} comes with its tiny processor; drop model.processor and model.processor_kwargs")
        library_check(self._check_name)  # the loaders import torch, a random model's kwargs transformers
        if self.dtype not in DTYPES:
            raise UserError(f"dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")

    def _check_name(self) -> None:
        """Raises ``ValueError("name: ...")`` (or ``kwargs:``) for a name the loader would not take, or ``random:``
        kwargs that are not fields of its language model's config (an ``asset:`` name, a ``random:`` type that is not
        a family of :data:`FAMILIES` and a processor for a tiny model are refused before, without torch)."""
        from textpt.loading import resolve_name

        kind, target = resolve_name(self.name)
        if kind == "random" and self.kwargs:
            import transformers

            text = transformers.AutoConfig.for_model(target).get_text_config()
            unknown, hint = unknown_fields(self.kwargs, text)
            if unknown:
                raise UserError(f"kwargs: {', '.join(map(repr, unknown))} not a field of the {target} language model's config ({type(text).__name__}). {hint}")


@dataclass
class VLMDataConfig:
    """The ``data:`` section of a vision-language run config.

    Attributes:
        source: ``synthetic`` (seeded one-colour pictures with a question, answer, caption and label), ``hf``
            (``datasets.load_dataset(name, subset)``), or ``csv`` / ``json`` / ``parquet`` (local files in
            ``data_files``, one per split; ``json`` reads JSON Lines too).
        name: the dataset name for ``hf``. subset: its configuration name.
        data_files: split name -> file path, for ``csv`` / ``json`` / ``parquet``.
        image_dir: the folder image paths in the image column are relative to; default: the folder of the split's
            data file (for ``hf``: the working directory). Absolute paths are used as they are.
        train_split: the split trained on. eval_split: the split evaluated on, or ``null``.
        image_column: the column holding the image (an ``Image`` feature or a path).
        question_column: the column holding the question, or ``null`` (captioning: the template holds the whole
            instruction).
        answer_column: the column holding the answer to learn (a caption for captioning): a string, or a list of
            reference strings (trained on the first, scored against all).
        references_column: the column evaluation scores against instead (a string or a list of references, e.g.
            VQAv2's ten annotator answers; items may be ``{"answer": ...}`` records); default: ``answer_column``.
        label_column: a column of class indices, for ``shots`` (K rows per class); without it the answer text is
            the class.
        template: the text of the user turn, with ``{column}`` fields (default ``"{question}"``; captioning: a
            fixed instruction such as ``"describe the picture ."``); write literal braces as ``{{`` and ``}}``.
        shots: K training rows per class (drawn with ``seed``, :func:`promptcore.data.few_shot_indices`); ``null``:
            every row.
        max_length: the longest example in tokens: the processor's input (the chat template, the image
            placeholders as the processor expanded them, the instruction), then the answer and its EOS; prompt
            vectors not counted. A longer example keeps the beginning of its answer and its EOS; a row whose input
            leaves no room for one answer token and EOS is refused (an error naming it). ``null``: no limit.
        max_train_samples: use only the first N training rows. max_eval_samples: likewise for evaluation.
        num_samples: ``synthetic`` only: training rows. num_eval_samples: evaluation rows.
        seed: the synthetic rows' and the K-shot draw's seed.
    """

    source: str = "synthetic"
    name: str | None = None
    subset: str | None = None
    data_files: dict[str, str] = field(default_factory=dict)
    image_dir: str | None = None
    train_split: str = "train"
    eval_split: str | None = "test"
    image_column: str = "image"
    question_column: str | None = "question"
    answer_column: str = "answer"
    references_column: str | None = None
    label_column: str | None = None
    template: str = "{question}"
    shots: int | None = None
    max_length: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    num_samples: int = 64
    num_eval_samples: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source != "synthetic":
            if self.source not in FILE_SOURCES:
                known = ["synthetic", *FILE_SOURCES]
                raise UserError(f"source: {self.source!r} is not one of {', '.join(known)}.{did_you_mean(str(self.source), known)}")
            SOURCES.get(self.source).check_config(self)
        try:
            list(string.Formatter().parse(self.template))
        except ValueError as e:
            raise UserError(f"template: {self.template!r} is not a format string ({e}); write literal braces as {{{{ and }}}}") from None
        for key in ("shots", "max_train_samples", "max_eval_samples", "num_samples", "num_eval_samples"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"{key}: must be a positive number of rows or null, got {value!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise UserError(f"max_length: must be a number of tokens, at least 2 (an answer token and EOS), or null; got {self.max_length!r}")

    def columns(self, evaluated: bool = False, classify: bool = False) -> list[str]:
        """The columns every row must have: the image, the answer (the label when the run ``classify``-es), the
        template's fields and the label column (and in the ``evaluated`` split the references column)."""
        fields = [f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(self.template) if f]
        optional = [c for c in (self.references_column if evaluated and not classify else None, self.label_column) if c]
        wanted = [self.image_column, *([] if classify else [self.answer_column]), *fields, *optional]
        return list(dict.fromkeys(wanted))


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


@dataclass
class VLMPrefixConfig:
    """Prefix tuning (deep prompts) in a vision-language model's language model.

    Attributes:
        num_tokens: prefix positions in every layer.
        init_std: the keys and values start as ``init_std`` times a standard normal draw.
        seed: the seed of that draw.
    """

    method: Literal["vlm_prefix"] = "vlm_prefix"
    num_tokens: int = 8
    init_std: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.num_tokens, int) or self.num_tokens < 1:
            raise UserError(f"num_tokens: must be a positive number of prefix positions, got {self.num_tokens!r}")
        if self.init_std <= 0:
            raise UserError(f"init_std: must be positive, got {self.init_std}")


@dataclass
class VLMVisionPromptConfig:
    """VPT prompts in a vision-language model's vision tower, and optionally prompt rows in its language model.

    Attributes:
        num_tokens: prompt tokens after the class token of the vision tower's sequence.
        deep: fresh prompts before every encoder layer (VPT-deep) instead of before the first only (VPT-shallow).
        lm_tokens: prompt rows in the language model's input embeddings too, before each sequence (as
            ``vlm_prompt_tuning`` places them); 0: none.
        init_std: every prompt starts as ``init_std`` times a standard normal draw.
        seed: the seed of that draw.
    """

    method: Literal["vlm_vpt"] = "vlm_vpt"
    num_tokens: int = 8
    deep: bool = False
    lm_tokens: int = 0
    init_std: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.num_tokens, int) or self.num_tokens < 1:
            raise UserError(f"num_tokens: must be a positive number of vision prompt tokens, got {self.num_tokens!r}")
        if not isinstance(self.lm_tokens, int) or self.lm_tokens < 0:
            raise UserError(f"lm_tokens: must be a number of language-model prompt rows (0: none), got {self.lm_tokens!r}")
        if self.init_std <= 0:
            raise UserError(f"init_std: must be positive, got {self.init_std}")


@dataclass
class VLMCoupledConfig:
    """Coupled language and vision prompts (MaPLe's coupling; M2PT's free vision prompts optional).

    Attributes:
        num_tokens: language prompt rows per prompted language-model layer, and the vision prompts projected from
            them per prompted tower layer.
        depth: prompted layers J on both sides (1: the language model's input rows and the tower's first layer
            only); at most the layers of the shallower of the two.
        vision_tokens: free vision prompts per prompted tower layer, after the projected ones (M2PT's visual
            prompts); 0: none (MaPLe).
        init_std: the language and free vision prompts start as ``init_std`` times a standard normal draw.
        seed: the seed of those draws and of the projections' initialisation.
    """

    method: Literal["vlm_coupled"] = "vlm_coupled"
    num_tokens: int = 2
    depth: int = 9
    vision_tokens: int = 0
    init_std: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.num_tokens, int) or self.num_tokens < 1:
            raise UserError(f"num_tokens: must be a positive number of prompt rows, got {self.num_tokens!r}")
        if not isinstance(self.depth, int) or self.depth < 1:
            raise UserError(f"depth: must be a positive number of prompted layers (1: the inputs only), got {self.depth!r}")
        if not isinstance(self.vision_tokens, int) or self.vision_tokens < 0:
            raise UserError(f"vision_tokens: must be a number of free vision prompts (0: none), got {self.vision_tokens!r}")
        if self.init_std <= 0:
            raise UserError(f"init_std: must be positive, got {self.init_std}")
