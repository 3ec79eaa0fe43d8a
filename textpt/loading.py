"""Text models and tokenizers by name: ``hf:ORG/NAME``, a local folder, ``asset:NAME`` or ``random:MODEL_TYPE``."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from promptcore.distributed import SHARDED_LOADING_ATTR
from promptcore.errors import UserError
from promptcore.hub import hub_access, offline_hint
from promptcore.memory import check_fits, module_bytes
from promptcore.registry import did_you_mean
from promptcore.library_notes import hold_back_deepspeed_cpu_note, import_torchao_quietly
from promptcore.quantization import int8_weight_only, quantize_nf4, require_quant_library, unpack_quanto_with_torch

from .config import POOLING_ATTR, TextModelConfig
from .synthetic import SYNTHETIC_WORDS
from .tasks import TASKS

logger = logging.getLogger(__name__)
# At import, not in the loaders: the notes come from importing torchao, which transformers (or peft) does as soon as
# a model class is touched, also in a user's own code once the toolkit's modules are loaded.
import_torchao_quietly()  # before transformers' model code imports it (with notes of torch on every process)
hold_back_deepspeed_cpu_note()  # transformers imports DeepSpeed's accelerator when it saves a model

# The built-in tokenizer of ``random:`` models: a word-level vocabulary, enough for tests and smoke runs.
TINY_WORDS = (
    "the a an and or but of to in on for with is are was were be been it this that these those i you he she we they "
    "my your his her our their not no very so too more most less good great fine nice best love loved excellent "
    "wonderful bad terrible awful worst boring poor hate hated dull movie film review story plot actor acting scene "
    "music ending positive negative neutral sentiment classify question answer yes no true false translate english "
    "german summary summarize text label one two three four five six seven eight nine ten . , : ; ! ? ' \" ( ) -"
).split() + list(SYNTHETIC_WORDS)
TINY_SPECIALS = ("<unk>", "<s>", "</s>")

class ModelLoadError(UserError):
    """A model name that cannot be resolved or a model that cannot carry prompts."""


_SHARDED_LOADING: contextvars.ContextVar[bool] = contextvars.ContextVar("textpt_sharded_loading", default=False)


@contextlib.contextmanager
def sharded_loading(enabled: bool = True) -> Iterator[None]:
    """Builds the models loaded and wrapped inside for sharded loading under ``train.distributed: fsdp``: rank 0
    loads the checkpoint (or draws the random weights) as usual, every other process builds the same modules on the
    meta device, holding no weight, and the FSDP engine then sends each process its shards from rank 0
    (:func:`promptcore.distributed.load_sharded`). Without several processes (``WORLD_SIZE``), or with ``enabled``
    false, models are built as usual.

    Wrap both the loading and the wrapping (a prompt initialised from the vocabulary reads the embedding)::

        with textpt.sharded_loading():
            backbone, tokenizer = textpt.load_model_and_tokenizer(model_config)
            model = textpt.wrap(backbone, prompt_config, tokenizer=tokenizer)
    """
    active = enabled and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    token = _SHARDED_LOADING.set(active)
    try:
        with torch.device("meta") if _on_meta() else contextlib.nullcontext():
            yield
    finally:
        _SHARDED_LOADING.reset(token)


def _on_meta() -> bool:
    """Whether this process builds models on the meta device: inside :func:`sharded_loading`, on a rank but 0."""
    return _SHARDED_LOADING.get() and int(os.environ.get("RANK", "0") or 0) != 0


def tiny_tokenizer():
    """A small word-level ``PreTrainedTokenizerFast`` built offline (no pad token: the loader sets one).

    Words outside :data:`TINY_WORDS` map to ``<unk>``; ``<s>`` is BOS and ``</s>`` EOS.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(dict.fromkeys((*TINY_SPECIALS, *TINY_WORDS)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def resolve_name(name: str) -> tuple[str, str]:
    """``(kind, target)`` of a model name; kind is ``hf``, ``local``, ``asset`` or ``random``."""
    for prefix in ("hf:", "asset:", "random:"):
        if name.startswith(prefix):
            target = name[len(prefix):].strip()
            if not target:
                raise ModelLoadError(f"model name {name!r} has nothing after {prefix!r}; e.g. 'hf:HuggingFaceTB/SmolLM2-135M'")
            return prefix[:-1], target
    if Path(name).expanduser().is_dir():
        return "local", str(Path(name).expanduser())
    raise ModelLoadError(
        f"model {name!r} is neither a local folder nor a prefixed name; use 'hf:ORG/NAME' for a Hugging Face Hub id, "
        f"'asset:NAME' for a packaged model, 'random:TYPE' for a random test model, or the path of an existing folder"
    )


def _folder(kind: str, target: str) -> str:
    if kind == "asset":
        from . import assets  # the assets module pulls in package lookups; only needed for asset names

        return str(assets.model_path(target))
    return target


def load_tokenizer(name: str, padding_side: str = "left", **kwargs: Any):
    """The tokenizer for model ``name``; one without a pad token gets its EOS token as pad (logged)."""
    kind, target = resolve_name(name)
    if kind == "random":
        tok = tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(_folder(kind, target), **kwargs)
    return prepare_tokenizer(tok, padding_side)


def prepare_tokenizer(tokenizer, padding_side: str = "left"):
    """Sets the padding side and, when the tokenizer has no pad token, uses EOS (or UNK) as pad.

    A pad token is only ever read where the attention mask is 0, so reusing EOS changes no output.
    """
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelLoadError(
                f"tokenizer {type(tokenizer).__name__} has no pad, EOS or UNK token to pad with; "
                f"set one with tokenizer.add_special_tokens({{'pad_token': '<pad>'}}) and resize the model's embeddings"
            )
        logger.warning("tokenizer has no pad token; padding with %r (pads are masked, so outputs do not change)", fallback)
        tokenizer.pad_token = fallback
    return tokenizer


def _random_model(model_type: str, task: str, kwargs: dict[str, Any], vocab_size: int, special_ids: dict[str, int]) -> nn.Module:
    import transformers

    config_kwargs = {"vocab_size": vocab_size, **special_ids, **kwargs}
    if task == "seq2seq":
        # a random encoder-decoder config has no first decoder input; T5 starts from the pad token
        config_kwargs.setdefault("decoder_start_token_id", config_kwargs.get("pad_token_id", 0))
    try:
        config = transformers.AutoConfig.for_model(model_type, **config_kwargs)
    except ValueError as e:
        types = list(transformers.CONFIG_MAPPING.keys())
        if model_type not in types:  # transformers' message lists every one of its model types
            raise ModelLoadError(
                f"model.name: random:{model_type}: transformers has no model type {model_type!r}.{did_you_mean(model_type, types)}"
            ) from None
        raise ModelLoadError(f"random:{model_type}: {e}") from None
    if config.vocab_size < vocab_size:
        raise ModelLoadError(
            f"random:{model_type} has vocab_size {config.vocab_size} but its tokenizer has {vocab_size} tokens; "
            f"raise model.kwargs.vocab_size to at least {vocab_size}"
        )
    cls = getattr(transformers, TASKS.get(task).auto_class)
    with torch.device("meta"):  # the shapes alone, to check the size before allocating it
        shape = cls.from_config(config)
    count = shape.num_parameters()
    if not kwargs and count > 10**9:  # the architecture's default size: for some (llama) a full-size model
        raise ModelLoadError(
            f"random:{model_type} without model.kwargs is its default size, {count:,} parameters ({count * 4 / 2**30:.1f} GiB in "
            f"float32); give small sizes in model.kwargs (hidden_size, num_hidden_layers, ...), or any size, even the default, to build it anyway"
        )
    check_fits(module_bytes(shape), f"model.kwargs of random:{model_type} (a {count:,}-parameter {type(shape).__name__})")
    return cls.from_config(config)


def load_model_and_tokenizer(cfg: TextModelConfig) -> tuple[nn.Module, Any]:
    """Loads the frozen model for ``cfg.task`` and its tokenizer.

    ``seq_cls`` loads the bare encoder (``AutoModel``): the prompted model adds its own trainable head.

    Raises:
        ModelLoadError: the name cannot be resolved, or the model has no input embeddings to prompt.
    """
    dtype = getattr(torch, cfg.dtype)
    kind, target = resolve_name(cfg.name)
    tok_name = cfg.tokenizer or cfg.name
    if kind == "random":
        tokenizer = load_tokenizer(tok_name, cfg.padding_side)
        special_ids = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id") for k in ("bos", "eos", "pad")}
        model = _random_model(target, cfg.task, cfg.kwargs, len(tokenizer), special_ids)
    else:
        import transformers

        folder = _folder(kind, target)
        tok_kwargs = {k: v for k, v in cfg.kwargs.items() if k in ("gguf_file", "revision")} if cfg.tokenizer is None else {}
        cls = getattr(transformers, TASKS.get(cfg.task).auto_class)
        offline = None  # why the hub cannot be used (promptcore.hub), for the error of a failed fetch
        try:
            with hub_access() if kind == "hf" else contextlib.nullcontext() as offline:
                tokenizer = load_tokenizer(tok_name, cfg.padding_side, **tok_kwargs)
                if _on_meta():  # sharded loading, not rank 0: the modules, without weights
                    model = cls.from_config(transformers.AutoConfig.from_pretrained(folder, **cfg.kwargs))
                else:
                    model = cls.from_pretrained(folder, dtype=dtype, **placement_kwargs(cfg), **cfg.kwargs)
        except OSError as e:
            # An offline hub, a name not in the cache, a folder without weights or tokenizer files.
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else repr(e)}"
            if offline:  # transformers' own words only repeat that the hub could not be reached
                reason = f"it could not be fetched, {offline}, and it is not in the Hugging Face cache"
            fetch = f"{offline_hint()}; or " if offline else ""
            raise ModelLoadError(
                f"model.name: cannot load {cfg.name} ({reason}); {fetch}put the model in the Hugging "
                f"Face cache (or give a local folder), or use 'random:TYPE' for a random test model"
            ) from None

    if not is_placed(model):  # a placed or quantized model keeps its weights where and as they were loaded
        model = model.to(dtype)
    if cfg.quantization == "nf4":
        quantize_nf4_model(model)
    check_prompt_ready(model, cfg.name)
    if _SHARDED_LOADING.get():
        setattr(model, SHARDED_LOADING_ATTR, True)
    if cfg.max_length is not None:
        tokenizer.model_max_length = cfg.max_length
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    setattr(model, POOLING_ATTR, cfg.pooling)  # the prompted model's head reads it (promptcore.wrap, textpt.wrap)
    return model, tokenizer


def placement_kwargs(cfg: TextModelConfig) -> dict[str, Any]:
    """``from_pretrained``'s ``device_map``, ``offload_folder`` and ``quantization_config`` for ``cfg``.

    Raises:
        UserError: a device map in a run of several processes, or a quantization whose library is not installed.
    """
    kwargs: dict[str, Any] = {}
    if cfg.device_map is not None:
        check_one_process("model.device_map")
        kwargs["device_map"] = cfg.device_map
        if cfg.offload_folder is not None:
            kwargs["offload_folder"] = cfg.offload_folder
    if cfg.quantization not in (None, "nf4"):  # nf4 converts the loaded model (quantize_nf4_model)
        kwargs["quantization_config"] = quantization_config(cfg.quantization)
        if cfg.device_map is None and torch.cuda.is_available():
            # quantized weights are not cast or moved after loading: load them onto the run's GPU
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    return kwargs


def check_one_process(key: str) -> None:
    """Raises :class:`UserError` when the run has several processes (``WORLD_SIZE`` > 1): a device map places one
    copy of the model across devices, and each process would place its own."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        raise UserError(
            f"{key}: places one model across devices in one process, but this run has {world} processes; drop "
            f"{key} and set train.distributed: fsdp to shard the frozen model over the processes"
        )


def quantization_config(kind: str):
    """transformers' quantization config of ``kind``: ``int8`` weight-only through torchao (CPU and GPU), ``int4``
    weight-only through optimum-quanto (torchao's int4 kernels need a GPU or bfloat16)."""
    import transformers

    if kind == "int8":
        return transformers.TorchAoConfig(int8_weight_only())
    require_quant_library(kind)
    unpack_quanto_with_torch()  # no C++ build on the CPU's first use
    return transformers.QuantoConfig(weights="int4")


def quantize_nf4_model(model: nn.Module) -> None:
    """Stores ``model``'s linear weights in nf4 (:func:`promptcore.quantization.quantize_nf4`), in place; the LM head
    (the output embeddings) stays in the model's dtype, as QLoRA leaves it, and so do the embeddings (not linear).

    Raises:
        UserError: torchao is not installed, no linear weight fits nf4's blocks, or the model is being built for
            sharded loading (its weights are not on this process).
    """
    if _SHARDED_LOADING.get():
        raise UserError(
            "model.quantization: nf4 quantizes the whole model on every process before FSDP shards it, so it cannot be "
            "built for sharded loading; set train.fsdp.sharded_loading: auto or false (or load outside textpt.sharded_loading())"
        )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    quantize_nf4(model, keep=[head] if isinstance(head, nn.Module) else [])


def is_placed(model: nn.Module) -> bool:
    """Whether ``model``'s weights were placed by a device map or quantized when loaded: such a model is not moved
    or cast as a whole (its hooks move activations between devices; its quantized weights keep their bits)."""
    return getattr(model, "hf_device_map", None) is not None or getattr(model, "is_quantized", False)


def check_prompt_ready(model: nn.Module, name: str | None = None) -> nn.Embedding:
    """The model's input embedding layer; raises :class:`ModelLoadError` when it has none."""
    label = name or type(model).__name__
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        emb = None
    if not isinstance(emb, nn.Module) or not hasattr(emb, "weight") or getattr(emb, "weight", None) is None:
        raise ModelLoadError(
            f"model {label} ({type(model).__name__}) has no input embeddings (get_input_embeddings() gave {emb!r}); "
            f"soft prompts are fed as inputs_embeds, so use a transformers text model that has a token embedding layer"
        )
    return emb


def model_max_length(model: nn.Module, tokenizer: Any = None) -> int | None:
    """The longest input the model takes (position table size), or ``None`` when unbounded (rotary, relative)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        model_type = getattr(config, "model_type", "")
        if isinstance(value, int) and value > 0 and model_type in ABSOLUTE_POSITION_MODELS:
            if model_type in PADDING_OFFSET_MODELS:  # positions count from padding_idx + 1 (roberta-base: 514 -> 512)
                value -= int(config.pad_token_id) + 1
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 1_000_000 else None


# Models whose learned position table is a hard limit (rotary models extrapolate, T5 is relative).
ABSOLUTE_POSITION_MODELS = frozenset({"gpt2", "bert", "roberta", "distilbert", "gpt_neo", "opt", "xlm-roberta", "electra"})
# Of those, the ones whose positions start after the padding index (the table's first rows are never used).
PADDING_OFFSET_MODELS = frozenset({"roberta", "xlm-roberta"})
