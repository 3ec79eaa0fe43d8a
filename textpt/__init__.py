"""textpt: prompt tuning, P-tuning and prefix tuning for frozen Hugging Face text models.

Five lines::

    import textpt
    model, tok = textpt.load_model_and_tokenizer(textpt.TextModelConfig("hf:HuggingFaceTB/SmolLM2-135M"))
    pt = textpt.wrap(model, textpt.TextPromptConfig(num_tokens=20, init="text", init_text="Summarize:"), tokenizer=tok)
    loss = pt.training_step({"input_ids": ..., "attention_mask": ..., "lm_labels": ...})
    new_tokens = pt.generate(ids, mask, max_new_tokens=20)

``promptcore.wrap(model, TextPromptConfig(...))`` works too (without a tokenizer: no ``text``/``labels`` init, no
verbalizer, pad id 0).
"""

from __future__ import annotations

from typing import Any

from torch import nn

import promptcore
from promptcore import register_method

from . import assets  # noqa: F401  (registers the text assets)
from .config import TextModelConfig, TextPromptConfig
from .loading import ModelLoadError, load_model_and_tokenizer, load_tokenizer, tiny_tokenizer
from .model import TextPromptedModel
from .p_tuning import PTuningModel
from .prefix import PrefixModel
from .prompt_tuning import PromptTuningModel

def wrap(
    backbone: nn.Module, config: TextPromptConfig, tokenizer: Any = None, task: str | None = None, name: str | None = None
) -> TextPromptedModel:
    """Puts the prompts ``config`` describes on a frozen transformers model.

    Args:
        backbone: the model (``load_model_and_tokenizer`` gives one); its parameters are frozen.
        config: the prompt config; ``config.method`` chooses the class.
        tokenizer: needed for ``text``/``labels`` inits, verbalizers, the pad id and the padding side.
        task: ``causal_lm``, ``seq2seq`` or ``seq_cls``; inferred from the backbone when ``None``.
        name: the backbone's name for prompt files (default: its ``name_or_path``).
    """
    return promptcore.wrap(backbone, config, tokenizer=tokenizer, task=task, name=name)


register_method("prompt_tuning", TextPromptConfig, PromptTuningModel, kind="text", summary="prompt tuning (Lester et al. 2021)")
register_method("p_tuning", TextPromptConfig, PTuningModel, kind="text", summary="P-tuning: prompts from an MLP/LSTM encoder (Liu et al. 2021)")
register_method("prefix", TextPromptConfig, PrefixModel, kind="text", summary="prefix tuning / deep prompts (Li & Liang 2021)")


__all__ = [
    "ModelLoadError",
    "PTuningModel",
    "PrefixModel",
    "PromptTuningModel",
    "TextModelConfig",
    "TextPromptConfig",
    "TextPromptedModel",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "tiny_tokenizer",
    "wrap",
]
