"""vpt: prompt tuning for frozen vision encoders (timm, open_clip, transformers).

Five lines of Python::

    import vpt
    backbone = vpt.create_model(vpt.BackboneConfig("timm:vit_base_patch16_224.orig_in21k", pretrained=True))
    model = vpt.wrap(backbone, vpt.VPTConfig(method="vpt_deep", num_tokens=50, num_classes=100))
    logits = model(images)           # train model.prompt_parameters() only
    model.save_prompts("prompts/")   # prompts.safetensors + prompt_config.json

Using vpt (the first lookup of any of its names) registers its methods (``vpt_shallow``, ``vpt_deep``, ``vfpt``,
``pixel_pad``, ``pixel_fixed_patch``, ``pixel_random_patch``, ``linear_probe``), backbone families, data sources and
VPT heads, the ``vision`` serving backend (:mod:`vpt.serving`) and the ``vpt merge-prompts`` verb; ``import vpt``
alone imports no torch (:func:`promptcore.plugins.lazy_exports`), so ``vpt --help`` is quick. The CLIP methods come
with :mod:`vpt.clip`, which vpt itself never imports (the CLI loads it as a plugin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from promptcore.methods import declare_method
from promptcore.plugins import lazy_exports

from .config import HEADS as _HEADS, SOURCES as _SOURCES  # declared below; not public names of the package

if TYPE_CHECKING:
    from promptcore import wrap

    from .backbones import TokenBackbone, create_model, token_backbone
    from .config import BackboneConfig, VPTConfig
    from .linear_probe import LinearProbe, LinearProbeConfig
    from .model import VisualPromptModel
    from .pixel import PixelPromptConfig, PixelPromptModel
    from .run_config import VisionRunConfig, load_run_config, resolve_run_config
    from .serving import VisionBackend, load_prompted, merge_prompts
    from .vfpt import VFPTConfig, VFPTModel

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "wrap": "promptcore",
        "TokenBackbone": ".backbones",
        "create_model": ".backbones",
        "token_backbone": ".backbones",
        "BackboneConfig": ".config",
        "VPTConfig": ".config",
        "LinearProbe": ".linear_probe",
        "LinearProbeConfig": ".linear_probe",
        "VisualPromptModel": ".model",
        "PixelPromptConfig": ".pixel",
        "PixelPromptModel": ".pixel",
        "VisionRunConfig": ".run_config",
        "load_run_config": ".run_config",
        "resolve_run_config": ".run_config",
        "VisionBackend": ".serving",
        "load_prompted": ".serving",
        "merge_prompts": ".serving",
        "VFPTConfig": ".vfpt",
        "VFPTModel": ".vfpt",
    },
    # what registers the package's methods, families, data sources, heads, assets and serving backend
    on_first_use=(".assets", ".backbones", ".config", ".linear_probe", ".model", ".pixel", ".run_config", ".serving", ".vfpt"),
)

# The methods, with their config classes (vpt.config, free of torch): a run config is validated before their modules
# load.
declare_method("vpt_shallow", "vision", config=("vpt.config", "VPTConfig"), module="vpt.model")
declare_method("vpt_deep", "vision", config=("vpt.config", "VPTConfig"), module="vpt.model")
declare_method("vfpt", "vision", config=("vpt.config", "VFPTConfig"), module="vpt.vfpt")
declare_method("pixel_pad", "vision", config=("vpt.config", "PixelPromptConfig"), module="vpt.pixel")
declare_method("pixel_fixed_patch", "vision", config=("vpt.config", "PixelPromptConfig"), module="vpt.pixel")
declare_method("pixel_random_patch", "vision", config=("vpt.config", "PixelPromptConfig"), module="vpt.pixel")
declare_method("linear_probe", "vision", config=("vpt.config", "LinearProbeConfig"), module="vpt.linear_probe")

# The heads (prompt.head) and the data sources (data.source): a config names them before torch is imported.
for _name in ("linear", "prompt_mean", "backbone_pool"):
    _HEADS.declare(_name, "vpt.heads")
for _name in ("synthetic", "hf", "imagefolder", "asset"):
    _SOURCES.declare(_name, "vpt.data")

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
