"""CLIP prompt learning on open_clip models: zero-shot CLIP, CoOp, CoCoOp, MaPLe, IVLP, KgCoOp and PromptSRC.

A leaf of :mod:`vpt`: nothing else in vpt imports it. Importing it (the ``vpt`` CLI does, as a plugin) declares the
``vpt base2new`` and ``vpt interpret`` verbs and imports no torch; using it (the first lookup of one of its names, or
:func:`promptcore.plugins.load_plugins`) registers its methods with :func:`promptcore.wrap` and the run configs'
``prompt:`` section, the ``zeroshot`` head of VPT models, the ``gpa`` training callback (PromptSRC's prompt
aggregation), the template sets of :mod:`vpt.clip.templates`, and the two verbs::

    import open_clip, promptcore
    from vpt.clip import CoOpConfig
    model = open_clip.create_model("ViT-B-16", pretrained="openai")
    prompted = promptcore.wrap(model, CoOpConfig(class_names=["cat", "dog"], ctx_init="a photo of a", n_ctx=4))
    logits = prompted(pixel_values)

A new CLIP method is one file: a config deriving from :class:`CLIPContextConfig` (or :class:`CLIPMethodConfig`),
a model deriving from :class:`CLIPPromptModel` (or :class:`CLIPModel`), and ``register_method(name, Config,
Model, kind="vision")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from promptcore.callbacks import CALLBACKS as _CALLBACKS  # declared below; not a public name of the package
from promptcore.cli import declare_command
from promptcore.methods import declare_method
from promptcore.plugins import lazy_exports

from ..config import HEADS as _HEADS  # declared below; not a public name of the package

if TYPE_CHECKING:
    from .base import CLIPModel, CLIPPromptModel, clip_logits
    from .cocoop import CoCoOp
    from .config import CLIPContextConfig, CLIPMethodConfig, CoCoOpConfig, CoOpConfig, IVLPConfig, MaPLeConfig, ZeroShotCLIPConfig
    from .coop import CoOp
    from .kgcoop import KgCoOp, KgCoOpConfig
    from .maple import IVLP, MaPLe
    from .promptsrc import GaussianPromptAggregation, PromptSRC, PromptSRCConfig
    from .templates import TEMPLATE_SETS, templates_of
    from .zeroshot import DEFAULT_TEMPLATES, ZeroShotCLIP, ZeroShotHead, zeroshot_weights

declare_command(
    "vpt", "base2new", "CLIP prompts: train on base classes per seed, report base / new / H (mean ± std)", "vpt.clip.cli"
)
declare_command("vpt", "interpret", "CLIP prompts: nearest vocabulary words to each learned context vector", "vpt.clip.cli")

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CLIPModel": ".base",
        "CLIPPromptModel": ".base",
        "clip_logits": ".base",
        "CoCoOp": ".cocoop",
        "CLIPContextConfig": ".config",
        "CLIPMethodConfig": ".config",
        "CoCoOpConfig": ".config",
        "CoOpConfig": ".config",
        "IVLPConfig": ".config",
        "MaPLeConfig": ".config",
        "ZeroShotCLIPConfig": ".config",
        "CoOp": ".coop",
        "KgCoOp": ".kgcoop",
        "KgCoOpConfig": ".kgcoop",
        "IVLP": ".maple",
        "MaPLe": ".maple",
        "GaussianPromptAggregation": ".promptsrc",
        "PromptSRC": ".promptsrc",
        "PromptSRCConfig": ".promptsrc",
        "TEMPLATE_SETS": ".templates",
        "templates_of": ".templates",
        "DEFAULT_TEMPLATES": ".zeroshot",
        "ZeroShotCLIP": ".zeroshot",
        "ZeroShotHead": ".zeroshot",
        "zeroshot_weights": ".zeroshot",
    },
    # what registers the CLIP methods, the zeroshot head, the gpa callback, the template sets, the mixed-batch route
    # and the verbs
    on_first_use=(".cli", ".serving", ".base", ".cocoop", ".config", ".coop", ".kgcoop", ".maple", ".promptsrc", ".templates", ".zeroshot"),
)

# The methods, with their config classes (vpt.clip.config, free of torch): a run config is validated before their
# modules load.
declare_method("coop", "vision", config=("vpt.clip.config", "CoOpConfig"), module="vpt.clip.coop")
declare_method("cocoop", "vision", config=("vpt.clip.config", "CoCoOpConfig"), module="vpt.clip.cocoop")
declare_method("kgcoop", "vision", config=("vpt.clip.config", "KgCoOpConfig"), module="vpt.clip.kgcoop")
declare_method("maple", "vision", config=("vpt.clip.config", "MaPLeConfig"), module="vpt.clip.maple")
declare_method("ivlp", "vision", config=("vpt.clip.config", "IVLPConfig"), module="vpt.clip.maple")
declare_method("promptsrc", "vision", config=("vpt.clip.config", "PromptSRCConfig"), module="vpt.clip.promptsrc")
declare_method("clip_zeroshot", "vision", config=("vpt.clip.config", "ZeroShotCLIPConfig"), module="vpt.clip.zeroshot")

# The head of zero-shot class weights (prompt.head: zeroshot): a config names it before torch is imported.
_HEADS.declare("zeroshot", "vpt.clip.zeroshot")
# PromptSRC's Gaussian prompt aggregation (train.callbacks: [gpa]): named by a config before torch is imported.
_CALLBACKS.declare("gpa", "vpt.clip.promptsrc")

__all__ = [
    "CLIPContextConfig",
    "CLIPMethodConfig",
    "CLIPModel",
    "CLIPPromptModel",
    "CoCoOp",
    "CoCoOpConfig",
    "CoOp",
    "CoOpConfig",
    "DEFAULT_TEMPLATES",
    "GaussianPromptAggregation",
    "IVLP",
    "IVLPConfig",
    "KgCoOp",
    "KgCoOpConfig",
    "MaPLe",
    "MaPLeConfig",
    "PromptSRC",
    "PromptSRCConfig",
    "TEMPLATE_SETS",
    "ZeroShotCLIP",
    "ZeroShotCLIPConfig",
    "ZeroShotHead",
    "clip_logits",
    "templates_of",
    "zeroshot_weights",
]
