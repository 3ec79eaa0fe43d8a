"""transformers vision encoders: ``hf:<repo id or local folder>`` building ``ViTModel``, ``CLIPVisionModel`` or
``SiglipVisionModel`` (a full CLIP/SigLIP checkpoint gives its vision tower).

Seams used: ``embeddings`` (patches, class token, positions; CLIP's ``pre_layrnorm``), the encoder layers
(``layer(hidden_states, attention_mask)``), the final layer norm and the model's own pooling (ViT's ``pooler``,
CLIP's post-norm class token, SigLIP's attention-pooling ``head``). The fast path runs the layers' own
``q_proj``/``k_proj``/``v_proj``/output projection, layer norms and MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ._base import FAMILIES, BackboneFamily, TokenBackbone, as_pair, find_module

if TYPE_CHECKING:
    from ..config import BackboneConfig

# model_type of a full two-tower config -> the vision tower's model_type
_VISION_TOWER = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}


def create(model_name: str, cfg: "BackboneConfig") -> nn.Module:
    import transformers

    kwargs = dict(cfg.kwargs)
    config_dict = kwargs.pop("config", None)
    if config_dict is not None:
        # A config dict builds a random model offline (tests, custom sizes); model_name is then only a label.
        config_dict = dict(config_dict)
        model_type = config_dict.pop("model_type", None)
        if model_type is None:
            raise ValueError("hf kwargs.config needs a model_type: 'vit', 'clip_vision_model' or 'siglip_vision_model'")
        config = transformers.AutoConfig.for_model(_VISION_TOWER.get(model_type, model_type), **config_dict, **kwargs)
        return _model_class(config)(config)
    config = transformers.AutoConfig.from_pretrained(model_name, **kwargs)
    vision_type = _VISION_TOWER.get(config.model_type)
    if vision_type is not None:
        config = config.vision_config
    cls = _model_class(config)
    if cfg.pretrained:
        return cls.from_pretrained(model_name, config=config)
    return cls(config)


def _model_class(config) -> type:
    import transformers

    classes = {
        "vit": transformers.ViTModel,
        "clip_vision_model": transformers.CLIPVisionModel,
        "siglip_vision_model": transformers.SiglipVisionModel,
    }
    if config.model_type not in classes:
        raise ValueError(
            f"hf model_type {config.model_type!r} is not a supported vision encoder; supported: {', '.join(classes)} "
            f"(and full 'clip'/'siglip' checkpoints, whose vision tower is used)"
        )
    return classes[config.model_type]


@dataclass(frozen=True)
class _LayerNames:
    """Where a transformers encoder layer keeps its parts (the names differ between model families)."""

    norm1: str
    attn: str
    out_proj: str
    norm2: str


_LAYOUTS = {
    "ViTModel": _LayerNames("layernorm_before", "attention", "o_proj", "layernorm_after"),
    "CLIPVisionModel": _LayerNames("layer_norm1", "self_attn", "out_proj", "layer_norm2"),
    "SiglipVisionModel": _LayerNames("layer_norm1", "self_attn", "out_proj", "layer_norm2"),
}


def adapt(model: nn.Module, name: str | None) -> TokenBackbone | None:
    if not type(model).__module__.startswith("transformers.") or type(model).__name__ not in _LAYOUTS:
        return None
    return HFVisionEncoder(model, name)


class HFVisionEncoder(TokenBackbone):
    """A transformers ``ViTModel`` / ``CLIPVisionModel`` / ``SiglipVisionModel`` seen as tokens."""

    def __init__(self, model: nn.Module, name: str | None) -> None:
        config = model.config
        kind = type(model).__name__
        self.model = model
        self.kind = kind
        self.names = _LAYOUTS[kind]
        self.name = name or f"hf:{getattr(config, '_name_or_path', '') or kind}"
        layers = find_module(model, ("encoder.layers", "encoder.layer", "layers"))
        if layers is None:
            raise TypeError(f"{kind} has no encoder layers where expected (encoder.layers / encoder.layer / layers)")
        self.layers = layers
        self.width = config.hidden_size
        self.depth = len(layers)
        self.patch_size = as_pair(config.patch_size)
        self.image_size = as_pair(config.image_size)
        self.num_prefix_tokens = 0 if kind == "SiglipVisionModel" else 1
        self.has_class_token = self.num_prefix_tokens == 1
        pooler = getattr(model, "pooler", None)
        self.pool_dim = pooler.dense.out_features if kind == "ViTModel" and pooler is not None else config.hidden_size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        # ViTModel.forward casts pixels to the weights' dtype before its embeddings; do the same for every kind.
        x = m.embeddings(images.to(next(m.embeddings.parameters()).dtype))
        return m.pre_layrnorm(x) if self.kind == "CLIPVisionModel" else x

    def run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        out = self.layers[index](x, None)
        return out[0] if isinstance(out, tuple) else out

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.layernorm(x) if self.kind == "ViTModel" else m.post_layernorm(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.kind == "ViTModel":
            x = m.layernorm(x)
            return m.pooler(x) if m.pooler is not None else x[:, 0]
        if self.kind == "CLIPVisionModel":
            return m.post_layernorm(x[:, 0])
        x = m.post_layernorm(x)
        return m.head(x) if m.use_head else x.mean(dim=1)

    # ----- fast path ----------------------------------------------------------------------------------------------
    def _attn(self, index: int) -> nn.Module:
        return getattr(self.layers[index], self.names.attn)

    def fast_unsupported(self, index: int) -> str | None:
        attn = getattr(self.layers[index], self.names.attn, None)
        needed = ("q_proj", "k_proj", "v_proj", self.names.out_proj)
        if attn is None or not all(hasattr(attn, n) for n in needed):
            return f"layer {index} of {self.kind} lacks {', '.join(needed)} (this transformers version lays it out differently)"
        return None

    def block_qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        layer = self.layers[index]
        attn = self._attn(index)
        h = getattr(layer, self.names.norm1)(x)
        split = (*h.shape[:-1], -1, attn.head_dim)
        return tuple(proj(h).view(split).transpose(1, 2) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))

    def attn_scale(self, index: int) -> float:
        attn = self._attn(index)
        return getattr(attn, "scaling", None) or attn.scale

    def block_finish(self, index: int, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        layer = self.layers[index]
        drop = getattr(layer, "dropout", None) or nn.Identity()
        y = getattr(self._attn(index), self.names.out_proj)(attn_out.transpose(1, 2).reshape(*x.shape[:-1], -1))
        x = x + drop(y)
        return x + drop(layer.mlp(getattr(layer, self.names.norm2)(x)))


FAMILIES.add(
    "hf",
    BackboneFamily(create=create, adapt=adapt, describe="transformers ViTModel, CLIPVisionModel, SiglipVisionModel"),
)
