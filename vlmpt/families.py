"""The vision-language architectures prompts can be placed in, one :class:`Family` record each.

A record answers the questions that differ between architectures, in one place: which transformers classes it
covers, which batch keys carry the images, and how the language model's position ids are computed for a sequence
that holds the prompt. Everything else (merging image features into the placeholder rows, attention, the LM head)
is the model's own code.

Positions, as each model computes them for its own inputs:

- LLaVA: one position per unmasked row, counted from 0 (the Llama / Mistral / Qwen2 language model's 1-D RoPE).
- Qwen2-VL / Qwen2.5-VL: mRoPE's 3-D position ids from the model's own ``get_rope_index`` over the sequence with
  the prompt rows given as text tokens (the prompt shifts every later position by its length); its ``rope_deltas``
  (the gap between the last position and the row count) continue the positions in decode steps.
- PaliGemma: as LLaVA, counted from 1 (its own convention; its deltas are 1). Its language model is a prefix LM:
  ``token_type_ids`` 0 (the image, BOS, the instruction; the prompt rows too, which sit before the image) attend to
  each other in both directions, 1 (the answer, and every generated token) causally.
- LLaVA-OneVision: as LLaVA. Its image is anyres: the base image and the tiles of the best grid, unpadded to the
  image's aspect ratio (``image_sizes``), so the number of placeholder rows depends on the image's size.
- Idefics3 (SmolVLM): as LLaVA. Its image is tiles plus the whole image, each shuffled 2 x 2 (or the configured
  ``scale_factor``) into its placeholder rows by the model's connector; the prompt sits before all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from promptcore.errors import UnsupportedModelError

from .config import FAMILIES

PositionFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, dict[str, Any]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Family:
    """One vision-language architecture.

    Attributes:
        classes: the transformers class names (the ``...ForConditionalGeneration`` models) it covers.
        image_keys: batch keys that carry the images, passed to the model's ``forward`` as they are.
        positions: ``positions(backbone, ids, mask, images) -> (position_ids, deltas)`` for a packed sequence
            ``ids`` ``[B, S]`` (prompt rows hold a text token id) and its ``mask``: the ``position_ids`` the
            language model takes (``[B, S]``, or ``[3, B, S]`` for mRoPE) and ``deltas`` ``[B, 1]``, so that the
            next token of row ``b`` sits at position ``mask[b].sum() + deltas[b]``.
        mrope: whether position ids are 3-D (a decode step then repeats its position over the three axes).
        derived_keys: batch keys the processor returns that are recomputed for the sequence with the prompt (from
            its ``input_ids``): accepted and not passed on. Qwen's ``mm_token_type_ids`` marks image rows, which
            the prompt moves.
        prefix_lm: the language model attends in both directions within the prefix (PaliGemma): batches may carry
            ``token_type_ids`` (0: prefix, 1: suffix; default all prefix), packed with the prompt rows as prefix and
            passed on; tokens written after the input are suffix, and only suffix tokens are targets of the loss.
        processor: the class name of the architecture's processor (data encoding finds the record by it).
        text_layout: the user turn's text for a processor without a chat template, from the processor's
            ``image_token`` and the instruction (PaliGemma's processor puts BOS between them itself).
    """

    classes: tuple[str, ...]
    image_keys: tuple[str, ...]
    positions: PositionFn
    mrope: bool = False
    derived_keys: tuple[str, ...] = ("mm_token_type_ids",)
    prefix_lm: bool = False
    processor: str = ""
    text_layout: str = "{image} {text}"


def counted_positions(backbone: nn.Module, ids: torch.Tensor, mask: torch.Tensor, images: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D positions that count unmasked rows (padding gets 0), and zero deltas."""
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    return positions, positions.new_zeros(ids.shape[0], 1)


def positions_from_one(backbone: nn.Module, ids: torch.Tensor, mask: torch.Tensor, images: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """PaliGemma: :func:`counted_positions` plus one (its first token sits at position 1), and deltas of one."""
    positions, deltas = counted_positions(backbone, ids, mask, images)
    return positions + 1, deltas + 1


def mrope_positions(backbone: nn.Module, ids: torch.Tensor, mask: torch.Tensor, images: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL / Qwen2.5-VL: the model's own ``get_rope_index`` over the packed sequence; image placeholder rows
    are the image modality (1), every other row text (0)."""
    types = (ids == backbone.config.image_token_id).int() * mask.int()
    return backbone.model.get_rope_index(ids, mm_token_type_ids=types, image_grid_thw=images.get("image_grid_thw"), attention_mask=mask)


# The registry is defined, and these names declared, in vlmpt.config (free of torch), so a config's random: type is
# checked before torch is imported.
FAMILIES.add("llava", Family(("LlavaForConditionalGeneration",), ("pixel_values",), counted_positions, processor="LlavaProcessor"))
FAMILIES.add("qwen2_vl", Family(("Qwen2VLForConditionalGeneration",), ("pixel_values", "image_grid_thw"), mrope_positions, mrope=True, processor="Qwen2VLProcessor"))
FAMILIES.add("qwen2_5_vl", Family(("Qwen2_5_VLForConditionalGeneration",), ("pixel_values", "image_grid_thw"), mrope_positions, mrope=True, processor="Qwen2_5_VLProcessor"))
FAMILIES.add("llava_onevision", Family(
    ("LlavaOnevisionForConditionalGeneration",), ("pixel_values", "image_sizes", "batch_num_images"), counted_positions, processor="LlavaOnevisionProcessor",
))
FAMILIES.add("paligemma", Family(("PaliGemmaForConditionalGeneration",), ("pixel_values",), positions_from_one, prefix_lm=True, processor="PaliGemmaProcessor", text_layout="{image}{text}"))
FAMILIES.add("idefics3", Family(("Idefics3ForConditionalGeneration",), ("pixel_values", "pixel_attention_mask"), counted_positions, processor="Idefics3Processor"))


def family_of_processor(processor: Any) -> Family | None:
    """The :class:`Family` whose processor ``processor`` is (by class name), or None for another processor."""
    name = type(processor).__name__
    return next((f for _, f in FAMILIES.items() if f.processor == name), None)


def family_of(backbone: nn.Module) -> Family:
    """The :class:`Family` of a transformers vision-language model.

    Raises:
        UnsupportedModelError: the model is not one of the supported ``...ForConditionalGeneration`` classes.
    """
    model_type = getattr(getattr(backbone, "config", None), "model_type", None)
    name = type(backbone).__name__
    supported = ", ".join(c for _, f in FAMILIES.items() for c in f.classes)
    if model_type not in FAMILIES or name not in FAMILIES.get(model_type).classes:
        raise UnsupportedModelError(
            f"{name} (model_type {model_type!r}) is not a supported vision-language model; vlmpt places prompts in "
            f"{supported}. Load the model with its ...ForConditionalGeneration class"
        )
    return FAMILIES.get(model_type)
