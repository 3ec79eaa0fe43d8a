"""Vision-language models and their processors by name: ``hf:ORG/NAME``, a local folder, or ``random:MODEL_TYPE``
(a tiny random model with its tiny processor, :mod:`vlmpt.synthetic`)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from promptcore.errors import UserError
from promptcore.preflight import unknown_fields
from promptcore.registry import did_you_mean
from textpt.config import DTYPES
from textpt.loading import ModelLoadError, _folder, prepare_tokenizer, resolve_name

from .families import FAMILIES


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
    """

    name: str
    dtype: str = "float32"
    processor: str | None = None
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise UserError("name: empty model name; give 'hf:ORG/NAME', a local folder or 'random:TYPE'")
        kind, target = resolve_name(self.name)
        if kind == "asset":
            raise UserError(f"name: {self.name!r}: no vision-language model is shipped as an asset; give 'hf:ORG/NAME', a local folder or 'random:TYPE'")
        if kind == "random" and target not in FAMILIES:
            raise UserError(f"name: {self.name!r}: no tiny model of type {target!r}; one of {', '.join('random:' + n for n in FAMILIES.names())}.{did_you_mean(target, FAMILIES.names())}")
        if kind == "random" and (self.processor is not None or self.processor_kwargs):
            raise UserError(f"processor: {self.name} comes with its tiny processor; drop model.processor and model.processor_kwargs")
        if kind == "random" and self.kwargs:
            import transformers

            text = transformers.AutoConfig.for_model(target).get_text_config()
            unknown, hint = unknown_fields(self.kwargs, text)
            if unknown:
                raise UserError(f"kwargs: {', '.join(map(repr, unknown))} not a field of the {target} language model's config ({type(text).__name__}). {hint}")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")


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
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone, processor


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


__all__ = ["VLMModelConfig", "load_model_and_processor", "load_processor"]
