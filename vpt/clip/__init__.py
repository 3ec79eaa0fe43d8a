"""CLIP prompt learning on open_clip models: zero-shot CLIP, CoOp, CoCoOp, MaPLe, IVLP, KgCoOp and PromptSRC.

A leaf of :mod:`vpt`: nothing else in vpt imports it. Importing it (the ``vpt`` CLI does, as a plugin) registers
its methods with :func:`promptcore.wrap` and the run configs' ``prompt:`` section, the ``zeroshot`` head of VPT
models, the ``gpa`` training callback (PromptSRC's prompt aggregation), the template sets of
:mod:`vpt.clip.templates`, and the ``vpt base2new`` and ``vpt interpret`` verbs::

    import open_clip, promptcore
    from vpt.clip import CoOpConfig
    model = open_clip.create_model("ViT-B-16", pretrained="openai")
    prompted = promptcore.wrap(model, CoOpConfig(class_names=["cat", "dog"], ctx_init="a photo of a", n_ctx=4))
    logits = prompted(pixel_values)

A new CLIP method is one file: a config deriving from :class:`CLIPContextConfig` (or :class:`CLIPMethodConfig`),
a model deriving from :class:`CLIPPromptModel` (or :class:`CLIPModel`), and ``register_method(name, Config,
Model, kind="vision")``.
"""

from . import cli  # noqa: F401  (registers the base2new and interpret commands)
from . import serving  # noqa: F401  (registers the CLIP methods' mixed-batch route)
from .base import CLIPModel, CLIPPromptModel, clip_logits
from .cocoop import CoCoOp
from .config import CLIPContextConfig, CLIPMethodConfig, CoCoOpConfig, CoOpConfig, IVLPConfig, MaPLeConfig, ZeroShotCLIPConfig
from .coop import CoOp
from .kgcoop import KgCoOp, KgCoOpConfig
from .maple import IVLP, MaPLe
from .promptsrc import GaussianPromptAggregation, PromptSRC, PromptSRCConfig
from .templates import TEMPLATE_SETS, templates_of
from .zeroshot import DEFAULT_TEMPLATES, ZeroShotCLIP, ZeroShotHead, zeroshot_weights

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
