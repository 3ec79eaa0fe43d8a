"""Vision-language models and their processors by name: ``hf:ORG/NAME``, a local folder, or ``random:MODEL_TYPE``
(a tiny random model with its tiny processor, :mod:`vlmpt.synthetic`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from promptcore.errors import UserError
from promptcore.quantization import quantize_linear_weights
from textpt.loading import ModelLoadError, _folder, prepare_tokenizer, resolve_name

from .config import VLMModelConfig


def load_model_and_processor(cfg: VLMModelConfig, seed: int = 0) -> tuple[nn.Module, Any]:
    """The frozen ``...ForConditionalGeneration`` model of ``cfg`` (eval mode) and its processor
    (:func:`load_processor`).

    Raises:
        ModelLoadError: the model or processor cannot be loaded (not in the cache on an offline machine, no such
            folder).
    """
    kind, target = resolve_name(cfg.name)
    processor = load_processor(cfg)
    if kind == "random":
        from .synthetic import tiny_backbone

        backbone = tiny_backbone(target, seed, **cfg.kwargs)
    else:
        import transformers

        with _load_errors("model.name", cfg.name):
            backbone = transformers.AutoModelForImageTextToText.from_pretrained(_folder(kind, target), dtype=getattr(torch, cfg.dtype), **cfg.kwargs)
    backbone = backbone.to(getattr(torch, cfg.dtype)).eval()
    if cfg.quantization is not None:
        quantize_language_model(backbone, cfg.quantization)
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone, processor


def quantize_language_model(backbone: nn.Module, kind: str) -> None:
    """Stores the linear weights of ``backbone``'s language model in ``kind`` (``model.quantization``), in place,
    with :func:`promptcore.quantization.quantize_linear_weights`: ``int8``, torchao's weight-only int8 (every linear
    layer of the language model); ``nf4``, QLoRA's 4-bit NormalFloat (the layers whose weights fill its blocks).
    The vision tower, the projector, the LM head and the embeddings stay in their dtype, as QLoRA leaves the head:
    the prompts and image features enter a quantized language model, and its logits leave a float head.

    Raises:
        UserError: torchao is not installed, ``int8`` of float64 weights (torchao quantizes 32- and 16-bit ones), or
            no linear weight of the language model fills nf4's blocks.
    """
    language_model = backbone.get_decoder()
    if kind == "int8" and backbone.get_input_embeddings().weight.dtype == torch.float64:
        raise UserError(
            "model.quantization: int8 quantizes float32, bfloat16 or float16 weights, and model.dtype is float64; set "
            "model.dtype: float32, or use model.quantization: nf4"
        )
    quantize_linear_weights(language_model, kind)


def load_processor(cfg: VLMModelConfig) -> Any:
    """The processor of ``cfg``'s model (``cfg.processor`` when set), whose tokenizer pads on the left (generation
    appends after every row) and has a pad token.

    Raises:
        ModelLoadError: the processor cannot be loaded.
    """
    kind, target = resolve_name(cfg.name)
    if kind == "random":
        from .synthetic import tiny_processor

        processor = tiny_processor(target)
    else:
        import transformers

        source = cfg.processor or cfg.name
        with _load_errors("model.processor" if cfg.processor else "model.name", source):
            processor = transformers.AutoProcessor.from_pretrained(_folder(*resolve_name(source)), **cfg.processor_kwargs)
    prepare_tokenizer(processor.tokenizer, "left")
    return processor


@contextmanager
def _load_errors(key: str, name: str) -> Iterator[None]:
    """Turns a loader's ``OSError`` into one :class:`ModelLoadError` naming the config ``key`` and its value ``name``."""
    try:
        yield
    except OSError as e:
        first = str(e).splitlines()[0] if str(e) else repr(e)
        raise ModelLoadError(
            f"{key}: cannot load {name} ({type(e).__name__}: {first}); put the model in the Hugging Face cache (or "
            f"give a local folder), or use 'random:qwen2_vl' for a tiny random test model"
        ) from None


__all__ = ["VLMModelConfig", "load_model_and_processor", "load_processor", "quantize_language_model"]
