"""Backbones by name: ``create_model(BackboneConfig("timm:vit_base_patch16_224"))``, and what each library's models
need, asked of the family that owns them.

Each family is one file that registers one :class:`BackboneFamily` in :data:`FAMILIES` (``timm``, ``open_clip``,
``hf``, ``asset``). A new family is a new file with ``FAMILIES.add("name", MyFamily())``, imported before use or
declared as a plugin (:mod:`promptcore.plugins`; a name not registered loads the plugins first). The libraries themselves are imported lazily, when a model of
theirs is built or used.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys

import torch
from torch import nn

from promptcore.errors import UnsupportedModelError, UserError
from promptcore.hub import hub_access, offline_hint
from promptcore.memory import check_fits, module_bytes
from promptcore.plugins import lookup
from promptcore.quantization import quantize_linear_weights
from promptcore.registry import did_you_mean

from ..config import BackboneConfig
from . import asset, hf, open_clip, timm  # noqa: F401  (each registers its family)
from ._base import FAMILIES, OTHER, BackboneFamily, ImageConfig, TokenBackbone, family_of, load_weights_file

NAME_ATTR = "vpt_backbone_name"  # set on models built by create_model, read when they are wrapped

__all__ = [
    "FAMILIES",
    "OTHER",
    "BackboneFamily",
    "ImageConfig",
    "TokenBackbone",
    "backbone_name",
    "create_model",
    "family_of",
    "token_backbone",
]


def create_model(cfg: BackboneConfig) -> nn.Module:
    """Builds the library's own model (timm model, full open_clip CLIP model, transformers model) with weights.

    A model left with random weights (``pretrained: false``, or built from a config dict) is announced in one line
    on stderr: prompts trained on a random backbone are of no use on real images.

    Raises:
        UserError: unknown family or model name (the message lists close matches), files the name needs that
            cannot be had.
    """
    family_name, _, model_name = cfg.name.partition(":")
    family = lookup(FAMILIES, family_name)
    offline = None  # why the hub cannot be used (promptcore.hub), for the error of a failed fetch
    try:
        with hub_access() if family.fetches_from_hub(cfg) else contextlib.nullcontext() as offline:
            if not cfg.library_weights and cfg.kwargs:  # a size the config sets: checked on shapes before allocating it
                with torch.device("meta"):
                    shape = family.create(model_name, cfg)
                check_fits(module_bytes(shape), f"model.kwargs of {cfg.name}")
            model = family.create(model_name, cfg)
    except TypeError as e:
        key = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if key is None:
            raise
        known = constructor_arguments(e)
        hint = did_you_mean(key.group(1), known) if known else ""
        raise UserError(
            f"model.kwargs.{key.group(1)}: not an argument of {cfg.name}'s builder ({e}).{hint} Correct or remove it"
        ) from None
    except (OSError, RuntimeError) as e:
        # An offline hub, a missing cache entry, a misspelt hub id, a folder without weights: the config asked for
        # files it cannot get (with pretrained: false, the model's config file). open_clip reports a failed download
        # as a RuntimeError; any other RuntimeError is not about files and keeps its traceback.
        if isinstance(e, RuntimeError) and not str(e).startswith("Failed to download"):
            raise
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r}"
        if offline:  # the library's own words only repeat that the hub could not be reached
            reason = f"it could not be fetched, {offline}, and it is not in the library's cache"
        fetch = f"{offline_hint()}; or " if offline else ""
        if not cfg.library_weights:
            raise UserError(
                f"model.name: cannot load the model config of {cfg.name} ({reason}); {fetch}check the name, put its "
                f"files in the library's cache (or name a local folder), or build it from a config dict in model.kwargs"
            ) from None
        raise UserError(
            f"model.name: cannot load the pretrained weights of {cfg.name} ({reason}); {fetch}put them in the library's "
            f"cache (or name a local folder), or set model.pretrained: false for a random backbone"
        ) from None
    if cfg.checkpoint:
        load_weights_file(model, cfg.checkpoint, cfg.name)
    if cfg.quantization is not None:
        quantize_linear_weights(model, cfg.quantization)
    setattr(model, NAME_ATTR, cfg.name)
    if cfg.random_weights:
        why = "pretrained: false" if cfg.pretrained is False else "built from a config dict in model.kwargs"
        print(f"model: {cfg.name} has random weights ({why}); prompts trained on it fit no pretrained model", file=sys.stderr)
    return model.eval()


def constructor_arguments(error: TypeError) -> list[str]:
    """The keyword arguments of the class whose constructor raised ``error`` ("X.__init__() got an unexpected
    keyword argument ..."), found among the locals of the frames it was raised through; empty when not found."""
    name = re.search(r"(\w+)\.__init__\(\)", str(error))
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, type) and name is not None and value.__name__ == name.group(1):
                params = inspect.signature(value.__init__).parameters.values()
                return sorted(p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return []


def backbone_name(model: nn.Module) -> str:
    """The name prompt files record for ``model``: the one :func:`create_model` built it under, else its family's
    name for it (``timm:vit_base_patch16_224``, ``hf:google/vit-base-patch16-224``, the class name)."""
    return getattr(model, NAME_ATTR, None) or family_of(model).default_name(model)


def token_backbone(model: nn.Module, name: str | None = None) -> TokenBackbone:
    """The token-level view of ``model`` for token prompts, from the family that owns it.

    Args:
        model: a model from :func:`create_model` or the library directly (timm ``VisionTransformer``, open_clip
            CLIP model or its ViT ``visual``, transformers ``ViTModel``/``CLIPVisionModel``/``SiglipVisionModel``).
        name: recorded in prompt files; default: :func:`backbone_name`.

    Raises:
        TypeError: the model has no token sequence (a CNN): use pixel prompts.
    """
    name = name or backbone_name(model)
    view = family_of(model).adapt(model, name)
    if view is None:
        supported = "; ".join(f"{n}: {FAMILIES.get(n).describe}" for n in FAMILIES)
        raise UnsupportedModelError(
            f"backbone {name} ({type(model).__module__}.{type(model).__name__}) has no token sequence that token "
            f"prompts (VPT) can extend. Token prompts need a ViT-style encoder ({supported}). For CNNs and other "
            f"image models use pixel prompts: set prompt.method: pixel_pad (or pixel_fixed_patch, "
            f"pixel_random_patch)."
        )
    return view
