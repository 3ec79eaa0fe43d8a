"""Prompts for vision-language models (LLaVA, Qwen2-VL, Qwen2.5-VL): soft prompts in the language model, with the
positions, masks and labels each architecture needs, data through the model's own processor and chat template, and
answer scoring (docs/vlm.md).

Using the package (the first lookup of one of its names) registers its methods (``vlm_prompt_tuning``) with
:mod:`promptcore.methods`, so ``promptcore.wrap(backbone, VLMPromptTuningConfig(...))`` builds them; ``import vlmpt``
alone imports no torch (:func:`promptcore.plugins.lazy_exports`), so ``vlmpt --help`` is quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from promptcore.plugins import lazy_exports

if TYPE_CHECKING:
    from .answers import AnswerScorer, ClassScorer, exact_match, normalize_answer, token_f1, with_intervals
    from .data import VLMCollator, VLMDataConfig, VLMEncoder, build_vlm_data, class_names_of, collate_examples
    from .families import FAMILIES, Family, family_of
    from .loading import VLMModelConfig, load_model_and_processor
    from .model import VLMPromptedModel
    from .prompt_tuning import VLMPromptTuningConfig, VLMPromptTuningModel
    from .run_config import VLMRunConfig, VLMTaskConfig
    from .synthetic import synthetic_rows, tiny_backbone, tiny_batch, tiny_examples, tiny_processor

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AnswerScorer": ".answers",
        "ClassScorer": ".answers",
        "exact_match": ".answers",
        "normalize_answer": ".answers",
        "token_f1": ".answers",
        "with_intervals": ".answers",
        "VLMCollator": ".data",
        "VLMDataConfig": ".data",
        "VLMEncoder": ".data",
        "build_vlm_data": ".data",
        "class_names_of": ".data",
        "collate_examples": ".data",
        "FAMILIES": ".families",
        "Family": ".families",
        "family_of": ".families",
        "VLMModelConfig": ".loading",
        "load_model_and_processor": ".loading",
        "VLMPromptedModel": ".model",
        "VLMPromptTuningConfig": ".prompt_tuning",
        "VLMPromptTuningModel": ".prompt_tuning",
        "VLMRunConfig": ".run_config",
        "VLMTaskConfig": ".run_config",
        "synthetic_rows": ".synthetic",
        "tiny_backbone": ".synthetic",
        "tiny_batch": ".synthetic",
        "tiny_examples": ".synthetic",
        "tiny_processor": ".synthetic",
    },
    # what registers the families and the methods
    on_first_use=(".answers", ".data", ".families", ".loading", ".model", ".prompt_tuning", ".run_config", ".synthetic"),
)

__all__ = [
    "FAMILIES",
    "AnswerScorer",
    "ClassScorer",
    "Family",
    "VLMCollator",
    "VLMDataConfig",
    "VLMEncoder",
    "VLMModelConfig",
    "VLMPromptTuningConfig",
    "VLMPromptTuningModel",
    "VLMPromptedModel",
    "VLMRunConfig",
    "VLMTaskConfig",
    "build_vlm_data",
    "class_names_of",
    "collate_examples",
    "exact_match",
    "family_of",
    "load_model_and_processor",
    "normalize_answer",
    "synthetic_rows",
    "tiny_backbone",
    "tiny_batch",
    "tiny_examples",
    "tiny_processor",
    "token_f1",
    "with_intervals",
]
