"""CLIP prompt learning on open_clip models: zero-shot CLIP, CoOp, CoCoOp, MaPLe and IVLP.

Importing this package registers each method config with :func:`promptcore.wrap`::

    import open_clip, promptcore
    from vpt.clip import CoOpConfig
    model = open_clip.create_model("ViT-B-16", pretrained="openai")
    prompted = promptcore.wrap(model, CoOpConfig(class_names=["cat", "dog"], ctx_init="a photo of a", n_ctx=4))
    logits = prompted(pixel_values)
"""

from . import cli  # noqa: F401  (registers the base2new and interpret commands)
from .cocoop import CoCoOp
from .config import CLIP_METHODS, CLIPPromptConfig, CoCoOpConfig, CoOpConfig, IVLPConfig, MaPLeConfig, ZeroShotCLIPConfig
from .coop import CoOp
from .maple import IVLP, MaPLe
from .zeroshot import DEFAULT_TEMPLATES, ZeroShotCLIP, zeroshot_weights

__all__ = [
    "CLIP_METHODS",
    "CLIPPromptConfig",
    "CoCoOp",
    "CoCoOpConfig",
    "CoOp",
    "CoOpConfig",
    "DEFAULT_TEMPLATES",
    "IVLP",
    "IVLPConfig",
    "MaPLe",
    "MaPLeConfig",
    "ZeroShotCLIP",
    "ZeroShotCLIPConfig",
    "zeroshot_weights",
]
