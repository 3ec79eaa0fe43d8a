"""timm ``VisionTransformer`` family (ViT, DeiT, DeiT-III, ViTs with register tokens ...): ``timm:<model name>``.

Seams used: ``patch_embed``, ``_pos_embed``, ``patch_drop``, ``norm_pre``, ``blocks``, ``norm``,
``forward_head(pre_logits=True)`` and ``num_prefix_tokens`` (class and register tokens, ``no_embed_class`` handled
by ``_pos_embed`` itself). The fast path runs timm's ``Block`` with its ``Attention`` (fused ``qkv``, ``q_norm``,
``k_norm``, ``norm``, ``proj``, layer scale, MLP); other block types run the plain path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ._base import FAMILIES, BackboneFamily, TokenBackbone, as_pair, unknown_model_error

if TYPE_CHECKING:
    from ..config import BackboneConfig


def create(model_name: str, cfg: "BackboneConfig") -> nn.Module:
    import timm

    architecture = model_name.split(".", 1)[0]
    if not timm.is_model(architecture):
        raise unknown_model_error("timm", model_name, timm.list_models())
    return timm.create_model(model_name, pretrained=cfg.pretrained, **cfg.kwargs)


def adapt(model: nn.Module, name: str | None) -> TokenBackbone | None:
    if not type(model).__module__.startswith("timm."):
        return None
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        return None
    return TimmViT(model, name)


class TimmViT(TokenBackbone):
    """A timm ``VisionTransformer`` seen as tokens."""

    def __init__(self, model: nn.Module, name: str | None) -> None:
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
        self.model = model
        self.name = name or f"timm:{arch}"
        self.width = model.embed_dim
        self.depth = len(model.blocks)
        self.patch_size = as_pair(model.patch_embed.patch_size)
        pe = model.patch_embed
        fixed = not getattr(model, "dynamic_img_size", False) and getattr(pe, "strict_img_size", True)
        self.image_size = as_pair(pe.img_size) if fixed and pe.img_size is not None else None
        self.num_prefix_tokens = model.num_prefix_tokens
        self.has_class_token = model.cls_token is not None
        self.pool_dim = getattr(model, "head_hidden_size", None) or model.num_features

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.patch_embed(images)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        return m.norm_pre(x)

    def run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.model.blocks[index](x)

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


FAMILIES.add(
    "timm",
    BackboneFamily(create=create, adapt=adapt, describe="timm VisionTransformer (ViT, DeiT, DeiT-III, register tokens)"),
)
