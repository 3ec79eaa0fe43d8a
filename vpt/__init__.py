"""vpt: prompt tuning for frozen vision encoders (timm, open_clip, transformers).

Five lines of Python::

    import vpt
    backbone = vpt.create_model(vpt.BackboneConfig("timm:vit_base_patch16_224.orig_in21k", pretrained=True))
    model = vpt.wrap(backbone, vpt.VPTConfig(method="vpt_deep", num_tokens=50, num_classes=100))
    logits = model(images)           # train model.prompt_parameters() only
    model.save_prompts("prompts/")   # prompts.safetensors + prompt_config.json

Importing vpt registers its methods (``vpt_shallow``, ``vpt_deep``, ``vfpt``, ``pixel_pad``, ``pixel_fixed_patch``,
``pixel_random_patch``, ``linear_probe``), backbone families, data sources and VPT heads, the ``vision`` serving
backend (:mod:`vpt.serving`) and the ``vpt merge-prompts`` verb; the CLIP methods come with :mod:`vpt.clip`, which
vpt itself never imports (the CLI loads it as a plugin).
"""

from promptcore import wrap

from . import assets  # noqa: F401  (registers the vision assets)
from .backbones import TokenBackbone, create_model, token_backbone
from .config import BackboneConfig, VPTConfig
from .linear_probe import LinearProbe, LinearProbeConfig
from .model import VisualPromptModel
from .pixel import PixelPromptConfig, PixelPromptModel
from .run_config import VisionRunConfig, load_run_config, resolve_run_config
from .serving import VisionBackend, load_prompted, merge_prompts
from .vfpt import VFPTConfig, VFPTModel

__all__ = [
    "BackboneConfig",
    "LinearProbe",
    "LinearProbeConfig",
    "PixelPromptConfig",
    "PixelPromptModel",
    "TokenBackbone",
    "VFPTConfig",
    "VFPTModel",
    "VPTConfig",
    "VisionBackend",
    "VisionRunConfig",
    "VisualPromptModel",
    "create_model",
    "load_prompted",
    "load_run_config",
    "merge_prompts",
    "resolve_run_config",
    "token_backbone",
    "wrap",
]
