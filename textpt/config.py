"""Typed configs of the text side: which model to load (:class:`TextModelConfig`, the run config's ``model:``
section), the method configs (the ``prompt:`` section): their bases :class:`TextMethodConfig` for every text method
and :class:`SoftPromptConfig` for the methods that train prompt tokens, and each method's own config (the method's
file, :mod:`textpt.prompt_tuning`, :mod:`textpt.p_tuning`, :mod:`textpt.prefix`, :mod:`textpt.dept`,
:mod:`textpt.linear_probe`, :mod:`textpt.zero_shot`, holds its model and gives its config too), and the data
(:class:`TextDataConfig`, the ``data:`` section).

This module imports no torch (nor transformers or datasets): ``textpt train`` validates a config, and reports its
errors, before they load. The model tasks are registered in :data:`TASKS` by :mod:`textpt.tasks` (which imports
torch) and declared in the package's ``__init__`` with their :class:`TaskTraits` (what the checks of a run config
ask of a task, the base of each task's class), so ``model.task`` and the checks across sections run without it. A
check that needs a library (``random:`` model kwargs: transformers) goes through
:func:`promptcore.config.library_check`, after the rest of the config is found valid.

Each ``__post_init__`` rejects a bad value with ``ValueError("field: message")`` so that
:func:`promptcore.config.load_config` reports it next to the other problems of the file.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Union, get_args

from promptcore.errors import UserError
from promptcore.methods import METHODS
from promptcore.plugins import known
from promptcore.config import check_distinct_ids, library_check, unknown_fields
from promptcore.registry import Registry, did_you_mean

from .sources import SOURCES

if TYPE_CHECKING:
    from .tasks import TextTask

TASKS: Registry["TextTask"] = Registry("text model task")
"""Task name -> its strategy (:class:`textpt.tasks.TextTask`, registered by :mod:`textpt.tasks`); the toolkit's tasks
are declared (in the package's ``__init__``) with their :class:`TaskTraits`."""


class TaskTraits:
    """What the checks of a run config ask of a model task, free of torch: the base of
    :class:`textpt.tasks.TextTask` (each built-in task's class subclasses its traits' class, so the two cannot differ),
    and the record its name is declared with in :data:`TASKS` (:func:`task_traits`).

    Attributes:
        name: the task's name (``model.task`` in run configs).
        decoder_only: the model is a decoder-only LM (its prompt can be a key/value prefix).
        label_words: the model classifies through label words (a verbalizer), not a head.
    """

    name: ClassVar[str] = ""
    decoder_only: ClassVar[bool] = False
    label_words: ClassVar[bool] = False

    def check_run(self, prompt: "TextMethodConfig", target_column: str | None) -> None:
        """Raises ``ValueError("section.field: ...")`` when a run of this task cannot learn with the method config
        ``prompt`` from data whose targets are ``target_column`` (``None``: class labels)."""


class CausalLMTraits(TaskTraits):
    """``causal_lm`` (:class:`textpt.tasks.CausalLM`): learns to write targets, or classifies by label words."""

    name = "causal_lm"
    decoder_only = True
    label_words = True

    _NEEDS = (
        "model.task causal_lm needs prompt.verbalizer (one word per class, to classify by scoring them) or "
        "data.target_column (target texts, to train generation)"
    )

    def check_run(self, prompt: "TextMethodConfig", target_column: str | None) -> None:
        if prompt.verbalizer and target_column is not None:
            raise UserError(
                "prompt.verbalizer: with data.target_column set, a causal_lm run learns to write the targets, so it "
                "takes no verbalizer; drop one of the two (verbalizer: classify; target_column: generate)"
            )
        if not prompt.verbalizer and target_column is None:
            raise UserError(f"data.target_column: {self._NEEDS}")


class Seq2SeqTraits(TaskTraits):
    """``seq2seq`` (:class:`textpt.tasks.Seq2Seq`): learns target texts or the verbalizer's words."""

    name = "seq2seq"
    label_words = True

    def check_run(self, prompt: "TextMethodConfig", target_column: str | None) -> None:
        if target_column is None and not prompt.verbalizer:
            raise UserError("prompt.verbalizer: a seq2seq run learns data.target_column or the verbalizer's words; set one of them")


class SequenceClassificationTraits(TaskTraits):
    """``seq_cls`` (:class:`textpt.tasks.SequenceClassification`): a trainable head of ``prompt.num_classes``."""

    name = "seq_cls"

    def check_run(self, prompt: "TextMethodConfig", target_column: str | None) -> None:
        if prompt.num_classes is None:
            raise UserError("prompt.num_classes: model.task seq_cls needs the number of classes (the head's size)")


def task_traits(name: str) -> TaskTraits:
    """The traits of model task ``name`` (registered or declared, :func:`check_task`): the registered task, else the
    record of its declaration (nothing imported), else the task its declaration's module registers."""
    if name not in TASKS and TASKS.declaration(name).record is not None:
        return TASKS.declaration(name).record
    return TASKS.get(name)


PoolingName = Literal["auto", "cls", "mean", "last", "pooler"]
POOLING_ATTR = "textpt_pooling"
"""The attribute :func:`textpt.load_model_and_tokenizer` sets on the model it returns: its config's ``pooling``."""
InitName = Literal["random", "normal", "vocab", "text", "labels", "class_labels"]

DTYPES: tuple[str, ...] = ("float32", "float64", "bfloat16", "float16")


def trainable_dtype(backbone: Any) -> Any:
    """The dtype of the trained parameters (prompts, heads) on ``backbone``: its own, but float32 when it is a
    16-bit float, as mixed precision keeps master weights (updates of a bfloat16 prompt round away); they are cast
    to the backbone's dtype, differentiably, where they enter it."""
    import torch

    dtype = getattr(backbone, "dtype", torch.float32)
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


@dataclass
class TextModelConfig:
    """The frozen text model and its tokenizer.

    Attributes:
        name: what to load. ``hf:ORG/NAME`` (a Hugging Face Hub id; the hub is not reached when ``HF_HUB_OFFLINE=1``
            and the model is not cached), a local folder written by ``save_pretrained``, ``asset:NAME`` (a model
            shipped in a Python package, see :mod:`textpt.assets`), or ``random:MODEL_TYPE`` (``random:llama``,
            ``random:gpt2``, ``random:t5``, ``random:bert``): a randomly initialised model built offline from
            ``kwargs`` with a small built-in word-level tokenizer, for tests and smoke runs.
        task: a name in :data:`textpt.tasks.TASKS`: ``causal_lm`` (generation, and classification by scoring
            verbalizer words), ``seq2seq`` (T5-style targets), ``seq_cls`` (an encoder with a trainable
            classification head), or any registered task.
        dtype: the frozen weights' dtype. Prompts and heads are kept in it too, except on a ``bfloat16`` or
            ``float16`` model, where they stay ``float32`` (:func:`trainable_dtype`).
        kwargs: for ``random:`` names, the model config's fields (``{"hidden_size": 64, "num_hidden_layers": 2,
            ...}``; ``vocab_size`` defaults to the built-in tokenizer's size); for every other name, extra keyword
            arguments of ``from_pretrained`` (``{"revision": "main"}``, ``{"gguf_file": "model.gguf"}``) or fields
            of the model's config. A key that is neither is refused (for ``random:`` names when the config is
            checked, naming the close matches), never ignored.
        tokenizer: where to load the tokenizer from when it is not next to the model (same forms as ``name``).
        checkpoint: a prompt folder (``save_prompts``) to load after wrapping, or ``None``.
        padding_side: the side the tokenizer pads. Both give the same logits; ``left`` suits generation.
        max_length: longest tokenized input (prompt tokens not counted); ``None``: the model's maximum.
        pooling: what a ``seq_cls`` head reads: ``cls`` (the first token, ``[CLS]``), ``mean`` (the mean of the
            input's real tokens; padding and prompt positions excluded), ``last`` (the last real token), ``pooler``
            (the first token through the model's own frozen pooler, where it has one) or ``auto`` (what the
            checkpoint was trained for: mean or what its pooling config says for sentence-transformers folders,
            ModernBERT's ``classifier_pooling``, else the pooler where the model has one, else cls). Other tasks
            pool nothing and take ``auto`` only. :func:`textpt.load_model_and_tokenizer` records it on the model it
            returns, and :func:`textpt.wrap` uses it unless given another.
        device_map: where the frozen model's modules live, for a model bigger than one device (transformers'
            ``device_map``, placed by Accelerate): ``auto``, ``balanced``, ``balanced_low_0`` or ``sequential``
            (filled in from the devices' free memory), or ``{module name: device}`` with devices ``cpu``, a GPU
            index (``0``, ``cuda:1``) or ``disk``. ``None``: the whole model on the run's device. Only for one-process
            runs (several processes shard with ``train.distributed: fsdp``). See docs/big_models.md.
        offload_folder: where the weights that ``device_map`` sends to ``disk`` are kept; needed when it does.
        quantization: ``int8`` or ``int4`` stores the frozen linear layers' weights in that many bits (weight-only:
            activations, prompts and heads stay in ``dtype``), through the ``prompttune[quant]`` extra; ``nf4``
            stores them in QLoRA's 4-bit NormalFloat (torchao), the LM head and embeddings left in ``dtype``, and is
            the kind ``train.distributed: fsdp`` shards; ``None``: weights in ``dtype``.
    """

    name: str
    task: str = "causal_lm"
    dtype: str = "float32"
    kwargs: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    checkpoint: str | None = None
    padding_side: Literal["left", "right"] = "left"
    max_length: int | None = None
    pooling: PoolingName = "auto"
    device_map: str | dict[str, str | int] | None = None
    offload_folder: str | None = None
    quantization: Literal["int8", "int4", "nf4"] | None = None

    def __post_init__(self) -> None:
        check_task(self.task)
        if self.pooling not in get_args(PoolingName):
            raise UserError(f"pooling: {self.pooling!r} is not one of {', '.join(get_args(PoolingName))}")
        if self.pooling != "auto" and self.task != "seq_cls":
            raise UserError(f"pooling: {self.pooling!r} pools an encoder's features for task seq_cls; a {self.task} model pools nothing, so leave it at auto")
        if not self.name or not isinstance(self.name, str):
            raise UserError("name: empty model name; give 'hf:ORG/NAME', a local folder, 'asset:NAME' or 'random:TYPE'")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.max_length is not None and self.max_length <= 0:
            raise UserError(f"max_length: must be a positive number of tokens or null, got {self.max_length}")
        if self.name.startswith("random:") and self.kwargs:
            model_type, kwargs = self.name.removeprefix("random:").strip(), self.kwargs
            library_check(lambda: check_config_kwargs(model_type, kwargs))  # imports transformers
        check_placement(self.device_map, self.offload_folder)
        # nf4 converts the built model's linear layers (textpt.loading), random ones too; the other kinds and device
        # maps are transformers' loading options.
        if self.name.startswith("random:") and (self.device_map is not None or self.quantization not in (None, "nf4")):
            key = "device_map" if self.device_map is not None else "quantization"
            raise UserError(
                f"{key}: applies to weights loaded from a folder, and {self.name} builds its model in memory; "
                f"save it with model.save_pretrained(FOLDER) and set model.name: FOLDER"
            )


DEVICE_MAPS: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")


def check_task(name: str) -> None:
    """Raises ``ValueError("task: ...")`` when ``name`` is not a registered (or declared) model task, loading the
    plugins (:mod:`promptcore.plugins`) first when it is neither, as for every name a config gives."""
    if not known(TASKS, name):
        task_names = registered_tasks()
        raise UserError(
            f"task: {name!r} is not one of {', '.join(map(repr, task_names))}.{did_you_mean(str(name), list(task_names))} "
            f"A new task is registered with textpt.tasks.TASKS.add(name, strategy)"
        )


def registered_tasks() -> tuple[str, ...]:
    """The names of the registered and declared model tasks (:data:`TASKS`), what ``model.task`` takes."""
    return tuple(TASKS.known_names())


def check_placement(device_map: str | dict[str, str | int] | None, offload_folder: str | None) -> None:
    """Raises ``ValueError("device_map: ...")`` (or ``offload_folder:``) for a device map transformers would not
    take, or one that sends weights to ``disk`` without an ``offload_folder``."""
    if device_map is None:
        if offload_folder is not None:
            raise UserError("offload_folder: only used with a device_map that sends modules to disk; set model.device_map too")
        return
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAPS:
            raise UserError(
                f"device_map: {device_map!r} is not one of {', '.join(DEVICE_MAPS)} or a {{module name: device}} map."
                f"{did_you_mean(device_map, list(DEVICE_MAPS))}"
            )
        return
    if not device_map:
        raise UserError("device_map: an empty map places nothing; give {module name: device} or 'auto'")
    bad = {k: v for k, v in device_map.items() if not _is_device(v)}
    if bad:
        raise UserError(
            f"device_map: {bad} {'is not a device' if len(bad) == 1 else 'are not devices'}; use 'cpu', 'disk', a GPU "
            f"index (0) or 'cuda:N'"
        )
    if "disk" in device_map.values() and offload_folder is None:
        raise UserError("offload_folder: device_map sends modules to 'disk'; set model.offload_folder to a folder for their weights")


def _is_device(value: str | int) -> bool:
    if isinstance(value, int):
        return value >= 0 and not isinstance(value, bool)
    if value in ("cpu", "disk", "mps", "cuda"):
        return True
    kind, _, index = value.partition(":")
    return kind in ("cuda", "xpu", "npu") and index.isdigit()


def check_config_kwargs(model_type: str, kwargs: dict[str, Any]) -> None:
    """Raises ``ValueError("kwargs: ...")`` naming each key of ``kwargs`` that is not a field of transformers' config
    of ``model_type`` (which would take it silently and build the default), with the close matches. An unknown
    model type is left to the loader, which names the known ones."""
    import transformers

    try:
        default = transformers.AutoConfig.for_model(model_type)
    except ValueError:
        return
    unknown, hint = unknown_fields(kwargs, default)
    if unknown:
        raise UserError(
            f"kwargs: {', '.join(map(repr, unknown))} {'is not a field' if len(unknown) == 1 else 'are not fields'} of "
            f"the {model_type} config ({type(default).__name__}), which would ignore them and build its default. {hint}"
        )


@dataclass
class TextMethodConfig:
    """The base of every text method's config (a run config's ``prompt:`` section, whose ``method:`` chooses the
    class among the registered text methods).

    A method's config subclasses this one (or :class:`SoftPromptConfig`, for methods that train prompt tokens),
    declares ``method: Literal["its_name"] = "its_name"`` and adds its own fields.

    Attributes:
        method: the method's registered name.
        num_classes: classes of a classification task (``seq_cls``, or a causal LM scoring a verbalizer); defaults
            to the verbalizer's length.
        verbalizer: one label word per class (``[" negative", " positive"]``): a causal LM classifies by scoring
            them after the input, a seq2seq model learns to write them. Each word is tokenized as written; a word
            of several tokens scores the sum of its tokens' log-probabilities. The words must differ, and so must
            their tokens (checked when the model is wrapped): two classes with the same tokens get the same score.
        seed: seed of the method's random initialisations (its prompts, a ``seq_cls`` head).
        tasks: (class attribute) the model tasks the method runs on; ``None``: every registered task.
    """

    tasks: ClassVar[tuple[str, ...] | None] = None

    method: str = ""
    num_classes: int | None = None
    verbalizer: list[str] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.verbalizer is not None:
            if not self.verbalizer or any(not isinstance(w, str) or not w.strip() for w in self.verbalizer):
                raise UserError(f"verbalizer: give one non-empty word per class, found {self.verbalizer!r}")
            repeated = sorted({w for w in self.verbalizer if self.verbalizer.count(w) > 1})
            if repeated:
                raise UserError(
                    f"verbalizer: {', '.join(map(repr, repeated))} names several classes, which would all get the same "
                    f"score; give each class its own word"
                )
            if self.num_classes is None:
                self.num_classes = len(self.verbalizer)
            elif self.num_classes != len(self.verbalizer):
                raise UserError(
                    f"verbalizer: has {len(self.verbalizer)} words but num_classes is {self.num_classes}; give one word per class"
                )
        if self.num_classes is not None and self.num_classes < 2:
            raise UserError(f"num_classes: a classifier needs at least 2 classes, got {self.num_classes}")

    @property
    def num_tasks(self) -> int:
        """Prompts in the method's bank: one (the methods with a bank, :class:`SoftPromptConfig`'s, make it a field)."""
        return 1

    def input_limit(self) -> int | None:
        """The most input tokens the method can take (``None``: no limit of its own, the model's applies)."""
        return None

    def check_task(self, task: str, target_column: str | None = None) -> None:
        """Raises ``ValueError("field: ...")`` when the method cannot run a ``task`` model on data whose targets are
        ``target_column`` (``None``: class labels). Called when a model is wrapped and when a run config is checked.
        """
        tasks = runs_tasks(type(self))
        if task not in tasks:
            others = [m.name for _, m in METHODS.items() if m.kind == "text" and task in runs_tasks(m.config_class)]
            raise UserError(
                f"method: {self.method} is implemented for {' and '.join(tasks)} models, not {task}; a {task} "
                f"model runs {', '.join(others) or 'no registered method'}"
            )


def runs_tasks(config_class: type) -> tuple[str, ...]:
    """The model tasks a text method's config class runs on: its ``tasks``, or every registered task."""
    tasks = getattr(config_class, "tasks", ())
    return registered_tasks() if tasks is None else tasks


def check_label_word_ids(words: list[str], ids: list[list[int]]) -> None:
    """Raises :class:`promptcore.UserError` when two verbalizer words have the same token ids as the task scores
    them (e.g. two words unknown to the vocabulary, both ``<unk>``): their classes would always score the same, and
    a two-class loss would stay at ln 2."""
    check_distinct_ids("verbalizer", words, ids, "this tokenizer", "choose label words the tokenizer tells apart")


@dataclass
class SoftPromptConfig(TextMethodConfig):
    """The base of the configs of methods that train ``num_tokens`` prompt positions (prompt tuning, P-tuning,
    prefix).

    Attributes:
        num_tokens: prompt length.
        init: ``random``/``normal`` (N(0, init_std²)), ``vocab`` (embeddings of randomly sampled vocabulary
            tokens), ``text`` (the embeddings of ``init_text``'s tokens, repeated to ``num_tokens``), ``labels``
            (the tokens of the verbalizer's words one after another, repeated to ``num_tokens``) or, where the
            method offers it (``inits``), ``class_labels`` (Lester et al.'s class-label init as their code builds
            it, see :class:`textpt.prompt_tuning.PromptTuningConfig`).
        init_text: the text for ``init: text``.
        init_std: the standard deviation of the random init.
        num_tasks: size of the prompt bank; batches then carry per-sample ``task_ids``.
        inits: (class attribute) the inits the method offers.
    """

    inits: ClassVar[tuple[str, ...]] = ("random", "normal", "vocab", "text", "labels")

    num_tokens: int = 20
    init: InitName = "random"
    init_text: str | None = None
    init_std: float = 0.02
    num_tasks: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_tokens <= 0:
            raise UserError(f"num_tokens: must be a positive prompt length, got {self.num_tokens}")
        if self.num_tasks <= 0:
            raise UserError(f"num_tasks: must be at least 1, got {self.num_tasks}")
        if self.init_std <= 0:
            raise UserError(f"init_std: must be positive, got {self.init_std}")
        if self.init not in self.inits:
            raise UserError(f"init: {self.init!r} is not offered by method {self.method}; choose one of {', '.join(self.inits)}")
        if self.init == "text" and not (self.init_text or "").strip():
            raise UserError("init_text: init 'text' needs a non-empty init_text, e.g. 'Classify the sentiment of this review:'")
        if self.init in ("labels", "class_labels") and not self.verbalizer:
            raise UserError(f"verbalizer: init {self.init!r} starts from the verbalizer's words; give verbalizer: [word per class]")


@dataclass
class PromptTuningConfig(SoftPromptConfig):
    """Prompt tuning (``method: prompt_tuning``); the common fields are :class:`textpt.config.SoftPromptConfig`'s.

    Inits (besides :class:`~textpt.config.SoftPromptConfig`'s): ``class_labels``, Lester et al.'s class-label
    init as ``prompt_tuning/prompts.py`` builds it (``from_embedded_list`` over ``from_sample_of_embeddings``):
    position ``i`` holds the ``i``-th verbalizer word's embedding (the mean of its tokens' embeddings when it has
    several), and every other position an embedding drawn without replacement from the first ``init_vocab_size``
    rows of the vocabulary (their configs: 5,000). The official code draws from the embedding table's first rows;
    T5's SentencePiece vocabulary lists its pieces by score, so those are its most frequent ones, while the ids of a
    BPE vocabulary (GPT-2, Llama) follow the merge order, which only roughly tracks frequency. ``labels`` differs:
    it repeats the label words' tokens one after another over every position.

    Attributes:
        fast: the shared-prefix path for shallow prompts on decoder-only models (the prompt's keys and values are
            computed once per step and shared by the batch); ``auto`` uses it where it applies and the model sits on
            the CPU (on a GPU the extra pass costs more than it saves: bench/RESULTS.md), ``on`` requires it on
            any device, ``off`` always concatenates embeddings (the reference path). Both give the same numbers.
        init_vocab_size: ``vocab`` and ``class_labels`` draw from the vocabulary's first ``init_vocab_size`` rows
            (``null``: the whole vocabulary).
        init_text_special_tokens: ``init: text`` takes the text as the tokenizer encodes a whole input, special
            tokens included (``[CLS] text [SEP]`` on BERT, ``<s> text`` on Llama, ``text </s>`` on T5), as PEFT's
            ``PromptTuningInit.TEXT`` does. Default ``false``: the text's own tokens only; the input after the
            prompt already carries the model's special tokens.
    """

    inits: ClassVar[tuple[str, ...]] = (*SoftPromptConfig.inits, "class_labels")

    method: Literal["prompt_tuning"] = "prompt_tuning"
    fast: Literal["auto", "on", "off"] = "auto"
    init_vocab_size: int | None = None
    init_text_special_tokens: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_vocab_size is not None:
            if self.init_vocab_size <= 0:
                raise UserError(f"init_vocab_size: must be a positive number of vocabulary rows or null, got {self.init_vocab_size}")
            if self.init not in ("vocab", "class_labels"):
                raise UserError(f"init_vocab_size: only the vocab and class_labels inits draw from the vocabulary, init is {self.init!r}; remove it")
        if self.init_text_special_tokens and self.init != "text":
            raise UserError(f"init_text_special_tokens: applies to init 'text', init is {self.init!r}; remove it")


@dataclass
class PTuningConfig(PromptTuningConfig):
    """P-tuning (``method: p_tuning``): prompt tuning's fields plus the encoder.

    Attributes:
        reparam: the encoder, ``mlp`` or ``lstm`` (a 2-layer bidirectional LSTM followed by an MLP, the structure of
            the official ``LAMA/p_tuning/prompt_encoder.py``; see :class:`promptcore.PromptEncoder`). The official
            encoder's inputs are an ``nn.Embedding``, drawn N(0, 1): ``init: random`` with ``init_std: 1.0``.
        reparam_hidden: the encoder's hidden width (default: the model's width).
    """

    method: Literal["p_tuning"] = "p_tuning"
    reparam: Literal["mlp", "lstm"] = "mlp"
    reparam_hidden: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_tasks > 1:
            raise UserError("num_tasks: a prompt bank (num_tasks > 1) holds plain prompts; P-tuning's encoder is for one task")
        if self.reparam_hidden is not None and self.reparam_hidden <= 0:
            raise UserError(f"reparam_hidden: must be a positive width or null, got {self.reparam_hidden}")


@dataclass
class PrefixConfig(SoftPromptConfig):
    """Prefix tuning (``method: prefix``); the fields are :class:`textpt.config.SoftPromptConfig`'s. The token inits
    (``vocab``, ``text``, ``labels``) run the tokens through the frozen model and start from their keys and values.
    Causal LMs, encoders (BERT, RoBERTa) and encoder-decoders (T5, BART); see :mod:`textpt.prefix`."""

    tasks: ClassVar[tuple[str, ...]] = ("causal_lm", "seq2seq", "seq_cls")

    method: Literal["prefix"] = "prefix"


@dataclass
class DePTConfig(PromptTuningConfig):
    """DePT (``method: dept``): prompt tuning's fields (``num_tokens`` is the shorter prompt's length ``m``) plus the
    low-rank update.

    Attributes:
        rank: the rank ``r`` of the update ``A @ B`` (the official config's default is 8; its README runs 45 with a
            40-token prompt).
        max_length: the input positions the update covers (``A``'s rows; the official ``max_seq_length``, 256);
            inputs are cut to it (:meth:`input_limit`).
        alpha: the update is scaled by ``alpha / sqrt(rank)`` (the official ``lora_alpha``, 8, which its runs keep).
        fast: always ``off``: the update changes the input's embeddings, so DePT concatenates them with the prompt.
    """

    method: Literal["dept"] = "dept"
    fast: Literal["off"] = "off"
    rank: int = 8
    max_length: int = 256
    alpha: float = 8.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rank", "max_length"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name}: must be positive, got {getattr(self, name)}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise UserError(f"alpha: must be a positive number, got {self.alpha}")
        if self.num_tasks > 1:
            raise UserError("num_tasks: a prompt bank (num_tasks > 1) holds plain prompts; DePT's update is for one task")

    def input_limit(self) -> int:
        return self.max_length


@dataclass
class LinearProbeConfig(TextMethodConfig):
    """A linear head on the frozen encoder (``method: linear_probe``; ``model.task: seq_cls``); the fields are
    :class:`textpt.config.TextMethodConfig`'s (``num_classes``: the head's size, ``seed``: its initialisation)."""

    tasks: ClassVar[tuple[str, ...]] = ("seq_cls",)

    method: Literal["linear_probe"] = "linear_probe"


@dataclass
class ZeroShotConfig(TextMethodConfig):
    """Zero-shot scoring of label words (``method: zero_shot``; ``model.task: causal_lm`` or ``seq2seq``). Needs
    ``verbalizer`` (on synthetic data the run config fills in the class keywords)."""

    tasks: ClassVar[tuple[str, ...]] = ("causal_lm", "seq2seq")

    method: Literal["zero_shot"] = "zero_shot"

    def check_task(self, task: str, target_column: str | None = None) -> None:
        super().check_task(task, target_column)
        if not self.verbalizer:
            raise UserError("verbalizer: zero_shot scores one label word per class; give verbalizer: [word per class]")
        if target_column is not None:
            raise UserError("method: zero_shot classifies by label words, it does not learn target texts; drop data.target_column")


PackingMode = Union[Literal["auto"], bool]
"""``data.packing``: ``auto`` packs where it is exact, ``true`` requires it, ``false`` keeps the padded path."""


@dataclass
class TextDataConfig:
    """The ``data:`` section of a text run config.

    Attributes:
        source: a registered source (:data:`textpt.sources.SOURCES`): ``synthetic``
            (:class:`textpt.synthetic.SyntheticTexts`: keyword-bearing texts, columns ``text`` and ``label``), ``hf``
            (``datasets.load_dataset(name, subset)``), ``csv`` / ``json`` / ``parquet`` (local files in
            ``data_files``) or ``asset`` (``textpt.assets.load_dataset(name)``, e.g. ``rotten_tomatoes``).
        name: the dataset name for ``hf`` and ``asset``.
        subset: the dataset's configuration name for ``hf`` (``load_dataset(name, subset)``).
        data_files: for ``csv`` / ``json`` / ``parquet``: split name -> file path (``{train: a.csv, test: b.csv}``).
        train_split: the split trained on.
        eval_split: the split evaluated on, or ``null`` for none.
        text_column: the column holding the text; it is the field that is shortened when an input is too long (see
            ``truncation_side``) and that must not be empty.
        label_column: the column holding class labels (integers ``0..C-1``, or strings mapped by ``label_names``
            or else by the verbalizer's words); ``null`` for unlabelled data.
        target_column: the column holding target texts for generation (``causal_lm``) or ``seq2seq`` training.
            A ``seq2seq`` run without it learns to write the class's verbalizer word.
        task_column: a column of integer task ids (``0..num_tasks-1``) for a prompt bank.
        template: how a row becomes the input, with ``{column}`` fields (``"Review: {text}\\nSentiment:"``);
            default ``"{<text_column>}"``. Write literal braces as ``{{`` and ``}}``.
        target_template: how a row becomes the target (``causal_lm`` and ``seq2seq`` with ``target_column``);
            default ``" {<target_column>}"`` for ``causal_lm`` (a space after the prompt, as BPE vocabularies
            expect) and ``"{<target_column>}"`` for ``seq2seq``.
        label_names: class names in class order, mapping string labels to class indices (``[rotten, fresh]``);
            default: the dataset's ``ClassLabel`` names, else the verbalizer's words.
        max_length: the longest tokenized input (prompt tokens not counted); ``null``: ``model.max_length``, else
            the model's maximum less the prompt length (:func:`model_input_budget`). A longer input is shortened by
            cutting its ``text_column`` field only, so the template's other words (an instruction before it, the
            ``"Sentiment:"`` after it that a causal LM's verbalizer follows) and the model's special tokens always
            stay; one warning per run counts the shortened rows. What is cut, by task: ``causal_lm``
            classification and ``seq_cls``: the text field of the input; ``causal_lm`` generation training: the
            target keeps at most half of ``max_length`` when input and target do not fit together, then the input's
            text field is cut to the rest; ``seq2seq``: the input's text field (the target is limited separately,
            keeping its end-of-sequence token).
        truncation_side: which end of the text field is cut: ``right`` (keep its beginning, as T5's and Hugging
            Face tokenizers' truncation do) or ``left`` (keep its end).
        max_train_samples: use only the first N training rows.
        max_eval_samples: use only the first N evaluation rows.
        skip_empty: drop rows whose text (or target) is empty, counting them in the bundle's ``info``, instead of
            raising an error naming the first such row.
        packing: whether causal LM batches run packed into one row, without padding (:mod:`textpt.packing`):
            ``auto`` where that gives the padded path's numbers (a decoder-only model with ``sdpa`` or ``eager``
            attention and full-attention layers; encoder and encoder-decoder batches stay padded), ``true`` requires
            it (refused, with the reason, where it would not be exact), ``false`` (default) keeps the padded path. Batches are
            collated padded either way; the model packs them (:meth:`textpt.model.TextPromptedModel.set_packing`).
        group_by_length: batch training rows of similar length together (:func:`textpt.packing.length_grouped_order`:
            each epoch's seeded order sorted longest first within buckets of 50 batches), so a padded batch pads
            less; for the runs that stay padded (encoders, encoder-decoders, models ``packing`` cannot run exactly).
            It changes which rows share a batch, so the numbers of a run differ from the seeded random order's.
        num_proc: processes that encode the rows (``datasets.map``'s ``num_proc``); ``null``: this process.
        test_size: sources that split their rows anew only (``source: asset``): split the dataset's rows anew, this fraction (``0.1``) or number of rows
            (``500``) into ``test`` (:func:`textpt.assets.load_dataset`, stratified by label, seeded by ``seed``);
            ``null``: the asset's default split (80/20, seed 0). A whole number is a row count, a number below 1
            a fraction.
        train_size: ``source: asset`` only: likewise for ``train`` (``null``: every row not in ``test``).
        num_samples: synthetic training rows.
        num_eval_samples: synthetic evaluation rows.
        num_classes: synthetic classes (2 to 8).
        text_length: synthetic filler words per text.
        keywords_per_text: synthetic class keywords mixed into each text (more: an easier task).
        seed: the synthetic data's seed, and the seed of an asset's split when ``test_size`` or ``train_size`` is set.
    """

    source: str = "synthetic"
    name: str | None = None
    subset: str | None = None
    data_files: dict[str, str] = field(default_factory=dict)
    train_split: str = "train"
    eval_split: str | None = "test"
    text_column: str = "text"
    label_column: str | None = "label"
    target_column: str | None = None
    task_column: str | None = None
    template: str | None = None
    target_template: str | None = None
    label_names: list[str] | None = None
    max_length: int | None = None
    truncation_side: Literal["right", "left"] = "right"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    skip_empty: bool = False
    packing: PackingMode = False
    group_by_length: bool = False
    num_proc: int | None = None
    test_size: int | float | None = None
    train_size: int | float | None = None
    num_samples: int = 512
    num_eval_samples: int = 256
    num_classes: int = 2
    text_length: int = 12
    keywords_per_text: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not known(SOURCES, self.source):
            raise UserError(f"source: {SOURCES.unknown(self.source)}")
        source = SOURCES.get(self.source)
        source.check_config(self)
        if self.template is None:
            self.template = "{" + self.text_column + "}"
        fields = template_fields(self.template, "template")
        if not fields:
            raise UserError(f"template: {self.template!r} has no {{column}} field; e.g. 'Review: {{{self.text_column}}}'")
        if self.target_template is not None:
            template_fields(self.target_template, "target_template")
        for name in ("max_length", "max_train_samples", "max_eval_samples", "num_samples", "num_eval_samples", "text_length", "keywords_per_text", "num_proc"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"{name}: must be positive, got {value}")
        for name in ("test_size", "train_size"):
            value = getattr(self, name)
            if value is None:
                continue
            if not source.resplits:
                raise UserError(
                    f"{name}: splits a packaged dataset's rows anew (source: asset); source {self.source!r} brings its "
                    f"own splits, chosen with train_split / eval_split"
                )
            if not (isinstance(value, int) and value >= 1) and not (isinstance(value, float) and 0 < value < 1):
                raise UserError(f"{name}: give a fraction between 0 and 1 (0.2) or a number of rows (500), got {value!r}")


def template_fields(template: str, what: str = "template") -> list[str]:
    """The ``{field}`` names of a format string; raises ``ValueError("<what>: ...")`` on a malformed one."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise UserError(f"{what}: {template!r} is not a valid template ({e}); write literal braces as {{{{ and }}}}") from None
    fields = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or any(c in name for c in ".[]"):
            raise UserError(f"{what}: field {{{name}}} in {template!r} must name a column, e.g. {{text}}")
        if spec or conversion:
            raise UserError(f"{what}: field {{{name}}} in {template!r} has a format spec or conversion; use plain {{column}} fields")
        fields.append(name)
    return fields


