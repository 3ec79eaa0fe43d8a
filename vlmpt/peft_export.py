"""PEFT export of a vision-language model's language-model prompt: ``vlm_prompt_tuning`` as a PEFT PROMPT_TUNING
adapter (``task_type: CAUSAL_LM``) for the whole ``...ForConditionalGeneration`` model, written with textpt's
writer (:mod:`textpt.peft_interop`).

PEFT puts its virtual tokens before all input embeddings, image placeholders included, and calls the model with
``inputs_embeds`` alone (no ``input_ids``, ``position_ids`` or ``token_type_ids``); ``vlm_prompt_tuning`` puts its
rows at the same place (before each sequence's first token, :mod:`vlmpt.model`). Where the model finds its image
placeholders in the embeddings and counts positions from 0 (LLaVA, LLaVA-OneVision, Idefics3), PEFT's logits on an
unpadded batch equal vlmpt's. Refused with the reason where they do not (:data:`PEFT_WRONG`). Before PEFT 0.22,
PEFT's cached ``generate`` is wrong on all of them; PEFT 0.22 generates as vlmpt on LLaVA and Idefics3 (the tests
compare them): the export warns (:data:`PEFT_GENERATE_WARNING`) with an older PEFT, and on LLaVA-OneVision, where
it is not checked.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import warnings
from pathlib import Path

from promptcore.errors import UserError
from textpt.peft_interop import prompt_tuning_fields, write_peft_adapter

from .model import VLMPromptedModel
from .prompt_tuning import VLMPromptTuningModel

PEFT_WRONG: dict[str, str] = {
    "qwen2_vl": (
        "PEFT calls the model with inputs_embeds and no input_ids, so Qwen2-VL's get_rope_index cannot find the image "
        "and gives its tokens text positions instead of their mRoPE (t, h, w) grid (and PEFT's cached generation "
        "drifts, huggingface/peft #2899): PEFT's logits are not the prompt's"
    ),
    "qwen2_5_vl": (
        "PEFT calls the model with inputs_embeds and no input_ids, so Qwen2.5-VL's get_rope_index cannot find the "
        "image and gives its tokens text positions instead of their mRoPE (t, h, w) grid (and PEFT's cached "
        "generation drifts, huggingface/peft #2899): PEFT's logits are not the prompt's"
    ),
    "paligemma": (
        "PEFT drops token_type_ids ('Token type ids are not supported for parameter efficient tuning'), so PaliGemma "
        "loses its prefix-LM mask (the image and instruction attend causally, not both ways): PEFT's logits are not "
        "the prompt's"
    ),
}
"""Families whose PEFT prompt-tuning result is wrong, with the reason (the export is refused for them)."""

PEFT_GENERATE_WARNING = (
    "PEFT's forward gives this prompt's logits, but its cached generate() on vision-language models departs from a "
    "step-by-step decode after a few tokens before PEFT 0.22 (the huggingface/peft #2899 symptom, also on LLaVA, "
    "LLaVA-OneVision and Idefics3; 0.22 generates as vlmpt on LLaVA and Idefics3, LLaVA-OneVision is not checked); "
    "generate with vlmpt (vlmpt.answer, vlmpt generate), or with PEFT's generate(use_cache=False)"
)
PEFT_GENERATES_RIGHT = ((0, 22), ("llava", "idefics3"))
"""From which PEFT release, and on which families, PEFT's cached generate equals vlmpt's (the tests check it)."""


def peft_version() -> tuple[int, int] | None:
    """The installed PEFT's (major, minor), or None without PEFT."""
    try:
        major, minor = (int(p) for p in re.findall(r"\d+", importlib.metadata.version("peft"))[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    return major, minor


def peft_generate_is_wrong(model_type: str) -> bool:
    """Whether the installed PEFT's cached ``generate`` may depart from vlmpt's on ``model_type`` (see
    :data:`PEFT_GENERATES_RIGHT`); True without PEFT (the adapter may meet any release)."""
    since, families = PEFT_GENERATES_RIGHT
    version = peft_version()
    return version is None or version < since or model_type not in families


def save_peft_adapter(model: VLMPromptedModel, directory: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Writes ``model``'s prompt (a ``vlm_prompt_tuning`` model) as a PEFT PROMPT_TUNING adapter folder for
    ``CAUSAL_LM`` (replaced atomically), which ``peft.PeftModel.from_pretrained(backbone, directory)`` loads onto the
    ``...ForConditionalGeneration`` backbone.

    Args:
        model: the prompted model.
        directory: the adapter folder to write.
        base_model_name_or_path: recorded in the adapter config; default: the backbone's name without ``hf:``.

    Raises:
        UserError: another method (prefix, vision prompts: no PEFT prompt-tuning counterpart), or a family whose
            PEFT result is wrong (:data:`PEFT_WRONG`: Qwen2-VL, Qwen2.5-VL, PaliGemma).

    Warns:
        UserWarning: (:data:`PEFT_GENERATE_WARNING`) where the installed PEFT's cached ``generate`` may be wrong on
            the model (:func:`peft_generate_is_wrong`).
    """
    if not isinstance(model, VLMPromptTuningModel):
        raise UserError(
            f"PEFT export takes a vlm_prompt_tuning prompt (rows before the language model's input embeddings, PEFT's "
            f"PROMPT_TUNING); {type(model).__name__} (method {model.method!r}) has no PEFT prompt-tuning counterpart"
        )
    model_type = model.backbone.config.model_type
    if model_type in PEFT_WRONG:
        raise UserError(f"PEFT export of a {model_type} prompt is refused: {PEFT_WRONG[model_type]}")
    name = base_model_name_or_path or model.backbone_name
    weight = model.prompts.weight
    folder = write_peft_adapter(directory, weight, prompt_tuning_fields(model.backbone, weight), "CAUSAL_LM", name.removeprefix("hf:"))
    if peft_generate_is_wrong(model_type):
        warnings.warn(PEFT_GENERATE_WARNING, stacklevel=2)
    return folder


__all__ = ["PEFT_GENERATES_RIGHT", "PEFT_GENERATE_WARNING", "PEFT_WRONG", "peft_generate_is_wrong", "peft_version", "save_peft_adapter"]
