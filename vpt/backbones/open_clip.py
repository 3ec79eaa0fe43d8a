"""The open_clip family: ``open_clip:<architecture>[:<pretrained tag>]``, e.g.
``open_clip:ViT-B-16:laion2b_s34b_b88k``. ``create_model`` returns the full CLIP model (CLIP methods and the
``zeroshot`` head need its text tower); image prompts go into ``model.visual``.

Image config: ``open_clip.get_model_preprocess_cfg``; transforms: ``open_clip.transform.image_transform_v2``.
Pooled features: the image tower's output (the image embedding, ``visual.output_dim`` wide). CLIP has no
classifier of its own.

Token view seams: ``visual._embeds`` (conv patches, class embedding, positional embedding, patch dropout, ``ln_pre``),
``visual.transformer.resblocks``, ``visual._pool`` (``ln_post``, token/avg pooling, attentional pooling) and
``visual.proj``. The fast path runs ``ResidualAttentionBlock`` (``nn.MultiheadAttention``: ``in_proj_weight``,
``in_proj_bias``, ``out_proj``; layer scale; MLP); custom blocks (qk-norm, scaled cosine attention) run the
plain path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from promptcore.errors import UnsupportedModelError, UserError
from promptcore.registry import did_you_mean

from ._base import FAMILIES, BackboneFamily, ImageConfig, TokenBackbone, as_pair, from_library, unknown_model_error

if TYPE_CHECKING:
    from ..config import BackboneConfig


class OpenClipFamily(BackboneFamily):
    describe = "open_clip CLIP models; token prompts on a ViT image tower"

    def fetches_from_hub(self, cfg: "BackboneConfig") -> bool:
        return cfg.library_weights  # pretrained weights only; a random model is built offline

    def create(self, model_name: str, cfg: "BackboneConfig") -> nn.Module:
        import open_clip

        architecture, _, tag = model_name.partition(":")
        kwargs = dict(cfg.kwargs)
        model_cfg = kwargs.pop("model_cfg", None)
        if model_cfg is not None:
            # A config dict builds the model without a registered config or weights (tests, custom towers).
            if kwargs:
                raise UserError(f"open_clip model_cfg builds the model directly; other kwargs {sorted(kwargs)} would be ignored")
            return open_clip.CLIP(**model_cfg)
        if architecture not in open_clip.list_models():
            raise unknown_model_error("open_clip", architecture, open_clip.list_models())
        tags = [t for a, t in open_clip.list_pretrained() if a == architecture]
        if cfg.library_weights and not tag:
            raise UserError(
                f"model.name: open_clip:{architecture} names no pretrained weights; add a pretrained tag, "
                f"'open_clip:{architecture}:TAG' (tags: {', '.join(tags) or 'none'}), or set model.pretrained: false for "
                f"random weights"
            )
        # open_clip also takes the path of a weights file as the tag
        if cfg.library_weights and tag not in tags and not Path(tag).expanduser().is_file():
            raise UserError(
                f"model.name: open_clip:{architecture} has no pretrained tag {tag!r}.{did_you_mean(tag, tags)} "
                f"Tags: {', '.join(tags) or 'none'} (or the path of a weights file)"
            )
        return open_clip.create_model(architecture, pretrained=tag if cfg.library_weights else None, **kwargs)

    def owns(self, model: nn.Module) -> bool:
        return from_library(model, "open_clip") or from_library(getattr(model, "visual", None), "open_clip")

    def default_name(self, model: nn.Module) -> str:
        return f"open_clip:{type(model).__name__}"

    def adapt(self, model: nn.Module, name: str) -> TokenBackbone | None:
        from open_clip.transformer import VisionTransformer

        visual = getattr(model, "visual", model)
        if not isinstance(visual, VisionTransformer):
            if visual is not model:
                raise UnsupportedModelError(
                    f"open_clip image tower {type(visual).__name__} is not open_clip's VisionTransformer, which token "
                    f"prompts need; use its timm model through a 'timm:' backbone, or pixel prompts (prompt.method: pixel_pad)"
                )
            return None
        return OpenClipViT(model, visual, name)

    def image_config(self, model: nn.Module) -> ImageConfig:
        import open_clip

        fields = _preprocess_fields()
        cfg = {k: v for k, v in open_clip.get_model_preprocess_cfg(model).items() if k in fields}
        pre = open_clip.transform.PreprocessCfg(**cfg)
        return ImageConfig(
            size=as_pair(pre.size),
            mean=tuple(pre.mean),
            std=tuple(pre.std),
            interpolation=pre.interpolation,
            channels=3,
            source="open_clip preprocess_cfg",
            family=self,
            options={k: v for k, v in cfg.items() if k not in ("size", "mean", "std", "interpolation")},
        )

    def transform(self, image: ImageConfig, training: bool) -> Callable:
        import open_clip

        pre = open_clip.transform.PreprocessCfg(
            size=image.size, mean=image.mean, std=image.std, interpolation=image.interpolation, **image.options
        )
        return open_clip.transform.image_transform_v2(pre, is_train=training)

    def pooled_features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return getattr(model, "visual", model)(images)

    def feature_width(self, model: nn.Module, image: ImageConfig) -> int:
        return int(getattr(model, "visual", model).output_dim)

    def classifier_classes(self, model: nn.Module, image: ImageConfig) -> int:
        raise UserError(
            f"head 'backbone' needs a model with its own classifier; the open_clip {type(model).__name__} has none "
            f"(use head 'linear', or a CLIP method such as clip_zeroshot or coop)"
        )


def _preprocess_fields() -> tuple[str, ...]:
    """The fields of open_clip's ``PreprocessCfg`` (a model's preprocess config may hold other keys too)."""
    from open_clip.transform import PreprocessCfg

    return tuple(PreprocessCfg.__dataclass_fields__)


class OpenClipViT(TokenBackbone):
    """An open_clip ``VisionTransformer`` image tower seen as tokens (one class token)."""

    def __init__(self, model: nn.Module, visual: nn.Module, name: str) -> None:
        if not visual.transformer.batch_first:
            raise UnsupportedModelError("open_clip tower runs sequence-first (batch_first=False); token prompts need batch-first blocks")
        self.model = model
        self.visual = visual
        self.name = name
        self.width = visual.transformer.width
        self.depth = len(visual.transformer.resblocks)
        self.patch_size = as_pair(visual.patch_size)
        self.image_size = as_pair(visual.image_size)
        self.num_prefix_tokens = 1
        self.has_class_token = True
        self.pool_dim = visual.ln_post.normalized_shape[0]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual._embeds(images)

    def block(self, index: int) -> nn.Module:
        return self.visual.transformer.resblocks[index]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        # With attentional pooling ln_post normalises the pooler's output, not the tokens.
        return self.visual.ln_post(x) if self.visual.attn_pool is None else x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual._pool(x)[0]

    def image_embedding(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x)
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    # ----- fast path ----------------------------------------------------------------------------------------------
    def fast_unsupported(self, index: int) -> str | None:
        from open_clip.transformer import ResidualAttentionBlock

        blk = self.visual.transformer.resblocks[index]
        if type(blk) is not ResidualAttentionBlock:
            return f"block {index} is {type(blk).__name__} (fast path: ResidualAttentionBlock)"
        attn = blk.attn
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn or not attn.batch_first:
            return f"block {index}'s MultiheadAttention has separate k/v dims, k/v biases or zero attention"
        if hasattr(blk, "ln_1_kv"):
            return f"block {index} is a cross-attention block"
        return None

    def block_qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        blk = self.visual.transformer.resblocks[index]
        attn = blk.attn
        B, N, _ = x.shape
        q, k, v = F.linear(blk.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        split = (B, N, attn.num_heads, attn.head_dim)
        return q.reshape(split).transpose(1, 2), k.reshape(split).transpose(1, 2), v.reshape(split).transpose(1, 2)

    def attn_scale(self, index: int) -> float:
        return self.visual.transformer.resblocks[index].attn.head_dim ** -0.5

    def block_finish(self, index: int, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        blk = self.visual.transformer.resblocks[index]
        B, N, _ = x.shape
        y = blk.attn.out_proj(attn_out.transpose(1, 2).reshape(B, N, self.width))
        x = x + blk.ls_1(y)
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


FAMILIES.add("open_clip", OpenClipFamily())
