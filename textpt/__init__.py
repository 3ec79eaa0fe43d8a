"""textpt: prompt tuning, P-tuning and prefix tuning for frozen Hugging Face text models, and their baselines.

Five lines::

    import textpt
    model, tok = textpt.load_model_and_tokenizer(textpt.TextModelConfig("hf:HuggingFaceTB/SmolLM2-135M"))
    pt = textpt.wrap(model, textpt.PromptTuningConfig(num_tokens=20, init="text", init_text="Summarize:"), tokenizer=tok)
    loss = pt.training_step({"input_ids": ..., "attention_mask": ..., "lm_labels": ...})
    new_tokens = pt.generate(ids, mask, max_new_tokens=20)

Each method is one file with its model, registered by name (``method:`` in YAML), and a config class in
:mod:`textpt.config` (which imports no torch, so that ``textpt train`` reports a config's errors before loading it):
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

``import textpt`` imports no torch (:func:`promptcore.plugins.lazy_exports`), so ``textpt --help`` is quick; the first
lookup of one of its names loads the package, and registers its methods, tasks, data sources, assets and the
``text`` serving backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import promptcore
from promptcore.methods import declare_method
from promptcore.plugins import lazy_exports

# declared below; not public names of the package
from .config import TASKS as _TASKS, CausalLMTraits as _CausalLM, Seq2SeqTraits as _Seq2Seq, SequenceClassificationTraits as _SeqCls

if TYPE_CHECKING:
    from torch import nn

    from .config import SoftPromptConfig, TextMethodConfig, TextModelConfig
    from .dept import DePTConfig, DePTModel
    from .linear_probe import LinearProbeConfig, LinearProbeModel
    from .loading import ModelLoadError, load_model_and_tokenizer, load_tokenizer, sharded_loading, tiny_tokenizer
    from .model import SoftPromptedModel, TextPromptedModel
    from .p_tuning import PTuningConfig, PTuningModel
    from .prefix import PrefixConfig, PrefixModel
    from .prompt_tuning import PromptTuningConfig, PromptTuningModel
    from .serving import TextBackend, load_prompted
    from .zero_shot import ZeroShotConfig, ZeroShotModel

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SoftPromptConfig": ".config",
        "TextMethodConfig": ".config",
        "TextModelConfig": ".config",
        "DePTConfig": ".dept",
        "DePTModel": ".dept",
        "LinearProbeConfig": ".linear_probe",
        "LinearProbeModel": ".linear_probe",
        "ModelLoadError": ".loading",
        "load_model_and_tokenizer": ".loading",
        "load_tokenizer": ".loading",
        "sharded_loading": ".loading",
        "tiny_tokenizer": ".loading",
        "SoftPromptedModel": ".model",
        "TextPromptedModel": ".model",
        "PTuningConfig": ".p_tuning",
        "PTuningModel": ".p_tuning",
        "PrefixConfig": ".prefix",
        "PrefixModel": ".prefix",
        "PromptTuningConfig": ".prompt_tuning",
        "PromptTuningModel": ".prompt_tuning",
        "TextBackend": ".serving",
        "load_prompted": ".serving",
        "ZeroShotConfig": ".zero_shot",
        "ZeroShotModel": ".zero_shot",
    },
    # what registers the text assets, the methods, mixed batches of prompts on one backbone and the "text" serving
    # backend
    on_first_use=(
        ".assets", ".config", ".dept", ".linear_probe", ".loading", ".model", ".p_tuning", ".prefix", ".prompt_tuning",
        ".zero_shot", ".mixed", ".serving",
    ),
)


# The methods, with their config classes (textpt.config, free of torch): a run config is validated before their
# modules load.
declare_method("prompt_tuning", "text", config=("textpt.config", "PromptTuningConfig"), module="textpt.prompt_tuning")
declare_method("p_tuning", "text", config=("textpt.config", "PTuningConfig"), module="textpt.p_tuning")
declare_method("prefix", "text", config=("textpt.config", "PrefixConfig"), module="textpt.prefix")
declare_method("dept", "text", config=("textpt.config", "DePTConfig"), module="textpt.dept")
declare_method("linear_probe", "text", config=("textpt.config", "LinearProbeConfig"), module="textpt.linear_probe")
declare_method("zero_shot", "text", config=("textpt.config", "ZeroShotConfig"), module="textpt.zero_shot")

# The model tasks (model.task), registered by textpt.tasks, with their traits: a config names them, and is checked
# across its sections, before torch is imported.
_TASKS.declare(_CausalLM.name, "textpt.tasks", _CausalLM())
_TASKS.declare(_Seq2Seq.name, "textpt.tasks", _Seq2Seq())
_TASKS.declare(_SeqCls.name, "textpt.tasks", _SeqCls())


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
