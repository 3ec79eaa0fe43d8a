"""Prompts for vision-language models (LLaVA, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, PaliGemma, Idefics3 /
SmolVLM): soft prompts in the language model, with the positions, masks and labels each architecture needs, data
through the model's own processor and chat template, and answer scoring (docs/vlm.md).

Using the package (the first lookup of one of its names) registers its methods (``vlm_prompt_tuning``,
``vlm_prefix``, ``vlm_vpt``, ``vlm_coupled``) with :mod:`promptcore.methods`, so ``promptcore.wrap(backbone, VLMPromptTuningConfig(...))``
builds them; ``import vlmpt`` alone imports no torch (:func:`promptcore.plugins.lazy_exports`), so ``vlmpt --help`` is
quick. A prompt folder written by ``vlmpt train`` loads ready to run with ``vlmpt.load_prompted(folder)``
(``vlmpt.answer`` / ``vlmpt.classify`` then take images); ``vlmpt serve`` serves such folders over HTTP
(:mod:`vlmpt.serving`, the ``vision-language`` serving backend).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from promptcore.methods import declare_method
from promptcore.plugins import lazy_exports

if TYPE_CHECKING:
    from .answers import AnswerScorer, ClassScorer, exact_match, normalize_answer, token_f1, with_intervals
    from .data import VLMCollator, VLMDataConfig, VLMEncoder, build_vlm_data, class_names_of, collate_examples
    from .families import FAMILIES, Family, family_of
    from .inference import answer, classify, encode_images, load_prompted, prepare_for_inference
    from .loading import VLMModelConfig, load_model_and_processor, load_processor
    from .model import VLMPromptedModel
    from .prefix import VLMPrefixConfig, VLMPrefixModel
    from .prompt_tuning import VLMPromptTuningConfig, VLMPromptTuningModel
    from .run_config import VLMRunConfig, VLMTaskConfig
    from .serving import VLMBackend, build_vlm_backend
    from .vision_prompts import VLMVisionPromptConfig, VLMVisionPromptModel
    from .coupled import VLMCoupledConfig, VLMCoupledModel
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
        "answer": ".inference",
        "classify": ".inference",
        "encode_images": ".inference",
        "load_prompted": ".inference",
        "prepare_for_inference": ".inference",
        "VLMModelConfig": ".loading",
        "load_model_and_processor": ".loading",
        "load_processor": ".loading",
        "VLMPromptedModel": ".model",
        "VLMPrefixConfig": ".prefix",
        "VLMPrefixModel": ".prefix",
        "VLMPromptTuningConfig": ".prompt_tuning",
        "VLMPromptTuningModel": ".prompt_tuning",
        "VLMRunConfig": ".run_config",
        "VLMTaskConfig": ".run_config",
        "VLMBackend": ".serving",
        "build_vlm_backend": ".serving",
        "VLMVisionPromptConfig": ".vision_prompts",
        "VLMVisionPromptModel": ".vision_prompts",
        "synthetic_rows": ".synthetic",
        "tiny_backbone": ".synthetic",
        "tiny_batch": ".synthetic",
        "tiny_examples": ".synthetic",
        "tiny_processor": ".synthetic",
        "VLMCoupledConfig": ".coupled",
        "VLMCoupledModel": ".coupled",
    },
    # what registers the families and the methods
    on_first_use=(
        ".answers", ".data", ".families", ".inference", ".loading", ".model", ".prefix", ".prompt_tuning", ".run_config",
        ".synthetic", ".vision_prompts", ".coupled",
    ),
)

# The methods (of kind text: their prompts live in the language model), with their config classes (vlmpt.config,
# free of torch): a run config is validated before their modules load.
declare_method("vlm_prompt_tuning", "text", config=("vlmpt.config", "VLMPromptTuningConfig"), module="vlmpt.prompt_tuning")
declare_method("vlm_prefix", "text", config=("vlmpt.config", "VLMPrefixConfig"), module="vlmpt.prefix")
declare_method("vlm_vpt", "text", config=("vlmpt.config", "VLMVisionPromptConfig"), module="vlmpt.vision_prompts")
declare_method("vlm_coupled", "text", config=("vlmpt.config", "VLMCoupledConfig"), module="vlmpt.coupled")

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
    "VLMBackend",
    "VLMTaskConfig",
    "VLMVisionPromptConfig",
    "VLMVisionPromptModel",
    "answer",
    "build_vlm_backend",
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
    "VLMCoupledConfig",
    "VLMCoupledModel",
]
