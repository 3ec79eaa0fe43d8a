"""Prompts for vision-language models (LLaVA, Qwen2-VL, Qwen2.5-VL): soft prompts in the language model, with the
positions, masks and labels each architecture needs, data through the model's own processor and chat template, and
answer scoring (docs/vlm.md).

Importing the package registers its methods (``vlm_prompt_tuning``, ``vlm_prefix``, ``vlm_vpt``) with :mod:`promptcore.methods`,
so ``promptcore.wrap(backbone, VLMPromptTuningConfig(...))`` builds them. A prompt folder written by ``vlmpt train``
loads ready to run with ``vlmpt.load_prompted(folder)`` (``vlmpt.answer`` / ``vlmpt.classify`` then take images).
"""

from .answers import AnswerScorer, ClassScorer, exact_match, normalize_answer, token_f1, with_intervals
from .data import VLMCollator, VLMDataConfig, VLMEncoder, build_vlm_data, class_names_of, collate_examples
from .families import FAMILIES, Family, family_of
from .inference import answer, classify, encode_images, load_prompted, prepare_for_inference
from .loading import VLMModelConfig, load_model_and_processor, load_processor
from .model import VLMPromptedModel
from .prefix import VLMPrefixConfig, VLMPrefixModel
from .prompt_tuning import VLMPromptTuningConfig, VLMPromptTuningModel
from .run_config import VLMRunConfig, VLMTaskConfig
from .vision_prompts import VLMVisionPromptConfig, VLMVisionPromptModel
from .synthetic import synthetic_rows, tiny_backbone, tiny_batch, tiny_examples, tiny_processor

__all__ = [
    "FAMILIES",
    "AnswerScorer",
    "ClassScorer",
    "Family",
    "VLMCollator",
    "VLMDataConfig",
    "VLMEncoder",
    "VLMModelConfig",
    "VLMPrefixConfig",
    "VLMPrefixModel",
    "VLMPromptTuningConfig",
    "VLMPromptTuningModel",
    "VLMPromptedModel",
    "VLMRunConfig",
    "VLMTaskConfig",
    "VLMVisionPromptConfig",
    "VLMVisionPromptModel",
    "answer",
    "build_vlm_data",
    "class_names_of",
    "classify",
    "collate_examples",
    "encode_images",
    "exact_match",
    "family_of",
    "load_model_and_processor",
    "load_processor",
    "load_prompted",
    "normalize_answer",
    "prepare_for_inference",
    "synthetic_rows",
    "tiny_backbone",
    "tiny_batch",
    "tiny_examples",
    "tiny_processor",
    "token_f1",
    "with_intervals",
]
