"""Typed configs of the text side: which model to load (:class:`TextModelConfig`, the run config's ``model:``
section) and the bases of the method configs (the ``prompt:`` section): :class:`TextMethodConfig` for every text
method, :class:`SoftPromptConfig` for the methods that train prompt tokens. Each method's own config lives in the
method's file (:mod:`textpt.prompt_tuning`, :mod:`textpt.p_tuning`, :mod:`textpt.prefix`,
:mod:`textpt.linear_probe`, :mod:`textpt.zero_shot`).

Each ``__post_init__`` rejects a bad value with ``ValueError("field: message")`` so that
:func:`promptcore.config.load_config` reports it next to the other problems of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from promptcore.config import library_check
from promptcore.errors import UserError
from promptcore.methods import METHODS
from promptcore.preflight import check_distinct_ids, unknown_fields
from promptcore.registry import did_you_mean

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
        if not is_registered_task(self.task):
            task_names = registered_tasks()
            raise UserError(
                f"task: {self.task!r} is not one of {', '.join(map(repr, task_names))}.{did_you_mean(str(self.task), list(task_names))} "
                f"A new task is registered with textpt.tasks.TASKS.add(name, strategy)"
            )
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


def registered_tasks() -> tuple[str, ...]:
    """The names of the registered model tasks (:data:`textpt.tasks.TASKS`), what ``model.task`` takes."""
    from .tasks import TASKS  # imported here: tasks.py builds heads in the trainable dtype defined in this module

    return tuple(TASKS.names())


def is_registered_task(name: str) -> bool:
    """Whether ``name`` is a registered model task, loading the plugins (:mod:`promptcore.plugins`) first when it
    is not, as for every name a config gives."""
    from promptcore.plugins import load_plugins

    if name not in registered_tasks():
        load_plugins()
    return name in registered_tasks()


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
