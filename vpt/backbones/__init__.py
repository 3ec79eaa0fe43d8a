"""Backbones by name: ``create_model(BackboneConfig("timm:vit_base_patch16_224"))`` and the token view VPT uses.

Each family is one file that adds one :class:`BackboneFamily` to :data:`FAMILIES` (``timm``, ``open_clip``,
``hf``, ``asset``). A new family is a new file with ``FAMILIES.add("name", BackboneFamily(...))`` imported here.
The libraries themselves are imported lazily, when a model of theirs is built or adapted.
"""

from __future__ import annotations

from torch import nn

from ..config import BackboneConfig
from . import asset, hf, open_clip, timm  # noqa: F401  (each registers its family)
from ._base import FAMILIES, BackboneFamily, TokenBackbone, load_weights_file

NAME_ATTR = "vpt_backbone_name"  # set on models built by create_model, read when they are wrapped

__all__ = ["FAMILIES", "BackboneFamily", "TokenBackbone", "create_model", "token_backbone", "backbone_name"]


def create_model(cfg: BackboneConfig) -> nn.Module:
    """Builds the library's own model (timm model, full open_clip CLIP model, transformers model) with weights.

    Raises:
        KeyError: unknown family or model name (the message lists close matches).
    """
    family_name, _, model_name = cfg.name.partition(":")
    family = FAMILIES.get(family_name)
    model = family.create(model_name, cfg)
    if cfg.checkpoint:
        load_weights_file(model, cfg.checkpoint, cfg.name)
    setattr(model, NAME_ATTR, cfg.name)
    return model.eval()


def backbone_name(model: nn.Module) -> str | None:
    """The name a model was built under by :func:`create_model` (``None`` for models built elsewhere)."""
    return getattr(model, NAME_ATTR, None)


def token_backbone(model: nn.Module, name: str | None = None) -> TokenBackbone:
    """The token-level view of ``model`` for token prompts.

    Args:
        model: a model from :func:`create_model` or the library directly (timm ``VisionTransformer``, open_clip
            CLIP model or its ViT ``visual``, transformers ``ViTModel``/``CLIPVisionModel``/``SiglipVisionModel``).
        name: recorded in prompt files; defaults to the name the model was built under, else one derived from it.

    Raises:
        TypeError: the model has no token sequence (a CNN): use pixel prompts.
    """
    name = name or backbone_name(model)
    for family_name in FAMILIES:
        adapter = FAMILIES.get(family_name).adapt(model, name)
        if adapter is not None:
            return adapter
    supported = "; ".join(f"{n}: {FAMILIES.get(n).describe}" for n in FAMILIES)
    raise TypeError(
        f"backbone {name or type(model).__name__} ({type(model).__module__}.{type(model).__name__}) has no token "
        f"sequence that token prompts (VPT) can extend. Token prompts need a ViT-style encoder ({supported}). "
        f"For CNNs and other image models use pixel prompts: set prompt.method: pixel_pad (or pixel_fixed_patch, "
        f"pixel_random_patch)."
    )

