"""The transformers family: ``hf:<repo id or local folder>`` building ``ViTModel``, ``CLIPVisionModel`` or
``SiglipVisionModel`` (a full CLIP/SigLIP checkpoint gives its vision tower); it answers for every transformers
model.

Image config: the image processor saved with the model when it can be loaded locally, else the model config's
``image_size`` with the mean/std its processor family uses; torchvision transforms from those values. Pooled
features: ``pooler_output``, else the mean of the last hidden states; the classifier: a
``*ForImageClassification``'s ``logits``.

Token view seams: ``embeddings`` (patches, class token, positions; CLIP's ``pre_layrnorm``), the encoder layers
(``layer(hidden_states, attention_mask)``), the final layer norm and the model's own pooling (ViT's ``pooler``,
CLIP's post-norm class token, SigLIP's attention-pooling ``head``). The fast path runs the layers' own
``q_proj``/``k_proj``/``v_proj``/output projection, layer norms and MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from promptcore.errors import UnsupportedModelError, UserError
from promptcore.preflight import unknown_fields
from promptcore.library_notes import import_torchao_quietly

from ._base import (
    FAMILIES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneFamily,
    ImageConfig,
    TokenBackbone,
    as_pair,
    find_module,
    from_library,
)

if TYPE_CHECKING:
    from ..config import BackboneConfig

# model_type of a full two-tower config -> the vision tower's model_type
_VISION_TOWER = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}


OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
# Mean/std of the HF image processors of each model type, used when no processor config can be loaded offline.
DEFAULT_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "vit": (HALF, HALF),
    "siglip": (HALF, HALF),
    "siglip_vision_model": (HALF, HALF),
    "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    "clip_vision_model": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
}


def _check_config_fields(model_type: str, values: dict[str, Any]) -> None:
    """Refuses keys of a config dict that are not fields of transformers' config of ``model_type``: the config
    would keep them as unused attributes and build its default size without a word (textpt checks its random
    models' kwargs with the same :func:`promptcore.preflight.unknown_fields`)."""
    import transformers

    try:
        default = transformers.AutoConfig.for_model(model_type)
    except ValueError:
        return  # an unknown model type: _model_class names the supported ones
    unknown, hint = unknown_fields(values, default)
    if unknown:
        raise UserError(
            f"model.kwargs.config: {', '.join(map(repr, unknown))} {'is not a field' if len(unknown) == 1 else 'are not fields'} "
            f"of the {model_type} config ({type(default).__name__}), which would ignore them and build its default. {hint}"
        )


class HFFamily(BackboneFamily):
    describe = "transformers models; token prompts on ViTModel, CLIPVisionModel, SiglipVisionModel"

    def fetches_from_hub(self, cfg: "BackboneConfig") -> bool:
        return not cfg.builds_from_config  # the model config too, also for random weights

    def create(self, model_name: str, cfg: "BackboneConfig") -> nn.Module:
        import transformers

        import_torchao_quietly()  # before transformers' model code imports it

        kwargs = dict(cfg.kwargs)
        config_dict = kwargs.pop("config", None)
        if config_dict is not None:
            # A config dict builds a random model offline (tests, custom sizes); model_name is then only a label.
            config_dict = dict(config_dict)
            model_type = config_dict.pop("model_type", None)
            if model_type is None:
                raise UserError("hf kwargs.config needs a model_type: 'vit', 'clip_vision_model' or 'siglip_vision_model'")
            model_type = _VISION_TOWER.get(model_type, model_type)
            _check_config_fields(model_type, {**config_dict, **kwargs})
            config = transformers.AutoConfig.for_model(model_type, **config_dict, **kwargs)
            return _model_class(config)(config)
        config = transformers.AutoConfig.from_pretrained(model_name, **kwargs)
        vision_type = _VISION_TOWER.get(config.model_type)
        if vision_type is not None:
            config = config.vision_config
        cls = _model_class(config)
        if cfg.library_weights:
            return cls.from_pretrained(model_name, config=config)
        return cls(config)

    def owns(self, model: nn.Module) -> bool:
        return from_library(model, "transformers")

    def default_name(self, model: nn.Module) -> str:
        return f"hf:{getattr(model, 'name_or_path', '') or type(model).__name__}"

    def adapt(self, model: nn.Module, name: str) -> TokenBackbone | None:
        return HFVisionEncoder(model, name) if type(model).__name__ in _LAYOUTS else None

    def image_config(self, model: nn.Module) -> ImageConfig:
        return _image_config(model, self)

    def pooled_features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        out = model(pixel_values=images)
        pooled = getattr(out, "pooler_output", None)
        # No pooler: the mean over all tokens, which assumes nothing about class or register tokens.
        return pooled.flatten(1) if pooled is not None else out.last_hidden_state.mean(1)

    def classifier_classes(self, model: nn.Module, image: ImageConfig) -> int:
        if not type(model).__name__.endswith("ForImageClassification"):
            raise UserError(
                f"head 'backbone' needs a model with its own classifier (a transformers *ForImageClassification); "
                f"{type(model).__name__} has none, use head 'linear'"
            )
        return int(model.config.num_labels)

    def classify(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=images).logits


def _image_config(model: nn.Module, family: BackboneFamily) -> ImageConfig:
    config = model.config
    vision = getattr(config, "vision_config", None) or config
    model_type = getattr(vision, "model_type", "") or getattr(config, "model_type", "")
    name = getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "")
    processor = None
    if name:
        try:
            from transformers import AutoImageProcessor

            processor = AutoImageProcessor.from_pretrained(name)
        except (OSError, ValueError):
            processor = None  # no processor saved with the model, or none reachable offline: use the config below
    if processor is not None:
        size = dict(getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {})
        if "height" in size:
            hw = (size["height"], size["width"])
        elif "shortest_edge" in size:
            hw = (size["shortest_edge"], size["shortest_edge"])
        else:
            hw = as_pair(vision.image_size)
        mean, std = getattr(processor, "image_mean", None), getattr(processor, "image_std", None)
        resize = dict(getattr(processor, "size", None) or {})
        crop_pct = hw[0] / resize["shortest_edge"] if getattr(processor, "do_center_crop", False) and "shortest_edge" in resize else 1.0
        return ImageConfig(
            size=tuple(hw),
            mean=tuple(mean) if mean is not None else IMAGENET_MEAN,
            std=tuple(std) if std is not None else IMAGENET_STD,
            interpolation="bicubic" if int(getattr(processor, "resample", 3) or 3) == 3 else "bilinear",
            crop_pct=float(crop_pct),
            channels=int(getattr(vision, "num_channels", 3)),
            source=f"HF image processor of {name}",
            family=family,
        )
    mean, std = DEFAULT_STATS.get(model_type, (IMAGENET_MEAN, IMAGENET_STD))
    return ImageConfig(
        size=as_pair(vision.image_size),
        mean=mean,
        std=std,
        channels=int(getattr(vision, "num_channels", 3)),
        source=f"HF model config image_size ({model_type or 'unknown type'}; no image processor found)",
        family=family,
    )


def _model_class(config) -> type:
    import transformers

    classes = {
        "vit": transformers.ViTModel,
        "clip_vision_model": transformers.CLIPVisionModel,
        "siglip_vision_model": transformers.SiglipVisionModel,
    }
    if config.model_type not in classes:
        raise UserError(
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


class HFVisionEncoder(TokenBackbone):
    """A transformers ``ViTModel`` / ``CLIPVisionModel`` / ``SiglipVisionModel`` seen as tokens."""

    def __init__(self, model: nn.Module, name: str) -> None:
        config = model.config
        kind = type(model).__name__
        self.model = model
        self.kind = kind
        self.names = _LAYOUTS[kind]
        self.name = name
        layers = find_module(model, ("encoder.layers", "encoder.layer", "layers"))
        if layers is None:
            raise UnsupportedModelError(f"{kind} has no encoder layers where expected (encoder.layers / encoder.layer / layers)")
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

    def block(self, index: int) -> nn.Module:
        return self.layers[index]

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


FAMILIES.add("hf", HFFamily())
