"""Prompts for vision-language models (LLaVA, Qwen2-VL, Qwen2.5-VL): soft prompts in the language model, with the
positions, masks and labels each architecture needs (docs/vlm.md).

Importing the package registers its methods (``vlm_prompt_tuning``) with :mod:`promptcore.methods`, so
``promptcore.wrap(backbone, VLMPromptTuningConfig(...))`` builds them.
"""

from .families import FAMILIES, Family, family_of
from .model import VLMPromptedModel
from .prompt_tuning import VLMPromptTuningConfig, VLMPromptTuningModel
from .synthetic import collate_examples, tiny_backbone, tiny_batch, tiny_examples

__all__ = [
    "FAMILIES",
    "Family",
    "VLMPromptTuningConfig",
    "VLMPromptTuningModel",
    "VLMPromptedModel",
    "collate_examples",
    "family_of",
    "tiny_backbone",
    "tiny_batch",
    "tiny_examples",
]
