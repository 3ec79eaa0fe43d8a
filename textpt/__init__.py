"""textpt: prompt tuning, P-tuning and prefix tuning for frozen Hugging Face text models, and their baselines.

Five lines::

    import textpt
    model, tok = textpt.load_model_and_tokenizer(textpt.TextModelConfig("hf:HuggingFaceTB/SmolLM2-135M"))
    pt = textpt.wrap(model, textpt.PromptTuningConfig(num_tokens=20, init="text", init_text="Summarize:"), tokenizer=tok)
    loss = pt.training_step({"input_ids": ..., "attention_mask": ..., "lm_labels": ...})
    new_tokens = pt.generate(ids, mask, max_new_tokens=20)

Each method is one file with its config class and its model, registered by name (``method:`` in YAML):
``prompt_tuning`` (:class:`PromptTuningConfig`), ``p_tuning`` (:class:`PTuningConfig`), ``prefix``
(:class:`PrefixConfig`), ``dept`` (:class:`DePTConfig`), and the baselines ``linear_probe`` (:class:`LinearProbeConfig`) and ``zero_shot``
(:class:`ZeroShotConfig`). A new method is a file that subclasses :class:`TextMethodConfig` (or
:class:`SoftPromptConfig`) and :class:`TextPromptedModel` (or :class:`SoftPromptedModel`), then calls
``promptcore.register_method(name, Config, Model, kind="text")``; the tasks (causal LM, seq2seq, encoder
classification) are :mod:`textpt.tasks`'s.

A prompt folder written by ``textpt train`` loads ready to run with ``textpt.load_prompted(folder)``; prompts of one
backbone mix in one batch (:mod:`textpt.mixed`) and serve through :class:`TextBackend`.

``promptcore.wrap(model, PromptTuningConfig(...))`` works too (without a tokenizer: no ``text``/``labels`` init, no
verbalizer, pad id 0).
"""

from __future__ import annotations

from typing import Any

from torch import nn

import promptcore

from . import assets  # noqa: F401  (registers the text assets)
from .config import SoftPromptConfig, TextMethodConfig, TextModelConfig
from .dept import DePTConfig, DePTModel
from .linear_probe import LinearProbeConfig, LinearProbeModel
from .loading import ModelLoadError, load_model_and_tokenizer, load_tokenizer, sharded_loading, tiny_tokenizer
from .model import SoftPromptedModel, TextPromptedModel
from .p_tuning import PTuningConfig, PTuningModel
from .prefix import PrefixConfig, PrefixModel
from .prompt_tuning import PromptTuningConfig, PromptTuningModel
from .zero_shot import ZeroShotConfig, ZeroShotModel

from . import mixed  # noqa: F401  (mixed batches of prompts on one backbone)
from .serving import TextBackend, load_prompted  # registers the "text" serving backend


def wrap(
    backbone: nn.Module,
    config: TextMethodConfig,
    tokenizer: Any = None,
    task: str | None = None,
    name: str | None = None,
    pooling: str | None = None,
) -> TextPromptedModel:
    """Puts the method ``config`` describes on a frozen transformers model.

    Args:
        backbone: the model (``load_model_and_tokenizer`` gives one); its parameters are frozen.
        config: a registered text method's config (``PromptTuningConfig(...)``, ``PrefixConfig(...)`` ...); its
            ``method`` chooses the model class.
        tokenizer: needed for ``text``/``labels`` inits, verbalizers, the pad id and the padding side.
        task: ``causal_lm``, ``seq2seq`` or ``seq_cls``; inferred from the backbone when ``None``.
        name: the backbone's name for prompt files (default: its ``name_or_path``).
        pooling: what a ``seq_cls`` head reads (``auto``, ``cls``, ``mean``, ``last``, ``pooler``; see
            :class:`textpt.TextModelConfig`); ``None``: the ``pooling`` of the config
            :func:`load_model_and_tokenizer` loaded the backbone from, else ``auto``.
    """
    model = promptcore.wrap(backbone, config, tokenizer=tokenizer, task=task, name=name)
    if pooling is not None:
        model.set_pooling(pooling)
    else:
        model.check_pooling()  # a pooling the checkpoint asks for and the model cannot offer is refused here
    return model


__all__ = [
    "DePTConfig",
    "DePTModel",
    "LinearProbeConfig",
    "LinearProbeModel",
    "ModelLoadError",
    "PTuningConfig",
    "PTuningModel",
    "PrefixConfig",
    "PrefixModel",
    "PromptTuningConfig",
    "PromptTuningModel",
    "SoftPromptConfig",
    "SoftPromptedModel",
    "TextBackend",
    "TextMethodConfig",
    "TextModelConfig",
    "TextPromptedModel",
    "ZeroShotConfig",
    "ZeroShotModel",
    "load_model_and_tokenizer",
    "load_prompted",
    "load_tokenizer",
    "sharded_loading",
    "tiny_tokenizer",
    "wrap",
]
