"""vpt: prompt tuning for frozen vision encoders (timm, open_clip, transformers).

Five lines of Python::

    import vpt
    backbone = vpt.create_model(vpt.BackboneConfig("timm:vit_base_patch16_224.augreg_in21k", pretrained=True))
    model = vpt.wrap(backbone, vpt.VPTConfig(method="vpt_deep", num_tokens=50, num_classes=100))
    logits = model(images)           # train model.prompt_parameters() only
    model.save_prompts("prompts/")   # prompts.safetensors + prompt_config.json
"""

from promptcore import wrap

from . import assets  # noqa: F401  (registers the vision assets)
from .backbones import TokenBackbone, create_model, token_backbone
from .config import BackboneConfig, VPTConfig
from .model import VisualPromptModel
from .pixel import PixelPromptConfig, PixelPromptModel

__all__ = [
    "BackboneConfig",
    "PixelPromptConfig",
    "PixelPromptModel",
    "TokenBackbone",
    "VPTConfig",
    "VisualPromptModel",
    "create_model",
    "token_backbone",
    "wrap",
]
