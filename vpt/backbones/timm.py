"""The timm family: ``timm:<model name>``, any timm model (CNNs included); token prompts on its
``VisionTransformer`` (ViT, DeiT, DeiT-III, ViTs with register tokens ...).

Image config: ``timm.data.resolve_model_data_config`` (the model's ``pretrained_cfg``), with the fixed input size
of a ViT built for another size; transforms: ``timm.data.create_transform``. Pooled features:
``forward_head(forward_features(x), pre_logits=True)``; the classifier: the model's own ``forward``.

Token view seams: ``patch_embed``, ``_pos_embed``, ``patch_drop``, ``norm_pre``, ``blocks``, ``norm``,
``forward_head(pre_logits=True)`` and ``num_prefix_tokens`` (class and register tokens, ``no_embed_class`` handled
by ``_pos_embed`` itself). The fast path runs timm's ``Block`` with its ``Attention`` (fused ``qkv``, ``q_norm``,
``k_norm``, ``norm``, ``proj``, layer scale, MLP); other block types run the plain path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from promptcore.errors import UserError
from promptcore.registry import did_you_mean

from ._base import FAMILIES, BackboneFamily, ImageConfig, TokenBackbone, as_pair, from_library, unknown_model_error

if TYPE_CHECKING:
    from ..config import BackboneConfig


class TimmFamily(BackboneFamily):
    describe = "timm models; token prompts on its VisionTransformer (ViT, DeiT, DeiT-III, register tokens)"

    def fetches_from_hub(self, cfg: "BackboneConfig") -> bool:
        return cfg.library_weights  # pretrained weights only; a random model is built offline

    def create(self, model_name: str, cfg: "BackboneConfig") -> nn.Module:
        import timm

        architecture = model_name.split(".", 1)[0]
        if not timm.is_model(architecture):
            raise unknown_model_error("timm", model_name, timm.list_models())
        if "." in model_name and cfg.library_weights and model_name not in (tags := timm.list_pretrained(f"{architecture}.*")):
            raise UserError(
                f"model.name: timm has no pretrained tag {model_name!r}.{did_you_mean(model_name, tags)} "
                f"Tags of {architecture}: {', '.join(t.split('.', 1)[1] for t in tags) or 'none'}"
            )
        return timm.create_model(model_name, pretrained=cfg.library_weights, **cfg.kwargs)

    def owns(self, model: nn.Module) -> bool:
        return from_library(model, "timm")

    def default_name(self, model: nn.Module) -> str:
        return f"timm:{(getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or type(model).__name__}"

    def adapt(self, model: nn.Module, name: str) -> TokenBackbone | None:
        from timm.models.vision_transformer import VisionTransformer

        return TimmViT(model, name) if isinstance(model, VisionTransformer) else None

    def image_config(self, model: nn.Module) -> ImageConfig:
        from timm.data import resolve_model_data_config

        cfg = dict(resolve_model_data_config(model))
        return ImageConfig(
            # A ViT built with img_size=... keeps its pretrained_cfg's 224 while its patch embedding only takes its own size.
            size=fixed_image_size(model) or as_pair(cfg["input_size"]),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            interpolation=cfg["interpolation"],
            crop_pct=float(cfg["crop_pct"]),
            channels=int(cfg["input_size"][0]),
            source="timm resolve_model_data_config",
            family=self,
            options={k: v for k, v in cfg.items() if k not in _IMAGE_CONFIG_KEYS},
        )

    def transform(self, image: ImageConfig, training: bool) -> Callable:
        from timm.data import create_transform

        return create_transform(
            input_size=(image.channels, *image.size),
            is_training=training,
            interpolation=image.interpolation,
            mean=image.mean,
            std=image.std,
            crop_pct=image.crop_pct,
            **image.options,
        )

    def pooled_features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(images), pre_logits=True)

    def feature_width(self, model: nn.Module, image: ImageConfig) -> int:
        return pooled_width(model)

    def classifier_classes(self, model: nn.Module, image: ImageConfig) -> int:
        if model.num_classes <= 0:
            raise UserError(
                f"head 'backbone' needs the model's classifier, but {type(model).__name__} was built without one "
                f"(num_classes=0); build it with its classifier or use head 'linear'"
            )
        return int(model.num_classes)


# resolve_model_data_config keys that ImageConfig holds in its own fields; the rest go to create_transform as options.
_IMAGE_CONFIG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct")


def fixed_image_size(model: nn.Module) -> tuple[int, int] | None:
    """The only input size a ViT's patch embedding takes (``None`` for CNNs and dynamic-size ViTs)."""
    pe = getattr(model, "patch_embed", None)
    if getattr(pe, "img_size", None) is None or not getattr(pe, "strict_img_size", True):
        return None
    if getattr(model, "dynamic_img_size", False) or getattr(pe, "dynamic_img_size", False):
        return None
    return as_pair(pe.img_size)


def pooled_width(model: nn.Module) -> int:
    """Width of ``forward_head(pre_logits=True)``: the pre-logits layer's, where the model has one."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


class TimmViT(TokenBackbone):
    """A timm ``VisionTransformer`` seen as tokens."""

    def __init__(self, model: nn.Module, name: str) -> None:
        self.model = model
        self.name = name
        self.width = model.embed_dim
        self.depth = len(model.blocks)
        self.patch_size = as_pair(model.patch_embed.patch_size)
        self.image_size = fixed_image_size(model)
        self.num_prefix_tokens = model.num_prefix_tokens
        self.has_class_token = model.cls_token is not None
        self.pool_dim = pooled_width(model)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.patch_embed(images)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        return m.norm_pre(x)

    def block(self, index: int) -> nn.Module:
        return self.model.blocks[index]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(x), pre_logits=True)

    # ----- fast path ----------------------------------------------------------------------------------------------
    def fast_unsupported(self, index: int) -> str | None:
        from timm.layers import Attention
        from timm.models.vision_transformer import Block

        blk = self.model.blocks[index]
        if type(blk) is not Block or type(blk.attn) is not Attention:
            return f"block {index} is {type(blk).__name__} with {type(getattr(blk, 'attn', None)).__name__} (fast path: timm Block + Attention)"
        if getattr(blk.attn, "gate", None) is not None:
            return f"block {index} has a gated attention"
        return None

    def block_qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        blk = self.model.blocks[index]
        attn = blk.attn
        B, N, _ = x.shape
        qkv = attn.qkv(blk.norm1(x)).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return attn.q_norm(q), attn.k_norm(k), v

    def attn_scale(self, index: int) -> float:
        return self.model.blocks[index].attn.scale

    def block_finish(self, index: int, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        blk = self.model.blocks[index]
        attn = blk.attn
        B, N, _ = x.shape
        y = attn.proj_drop(attn.proj(attn.norm(attn_out.transpose(1, 2).reshape(B, N, attn.attn_dim))))
        x = x + blk.drop_path1(blk.ls1(y))
        return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


FAMILIES.add("timm", TimmFamily())
