"""Plumbing of the backbone registry: the family record, the token-level view VPT runs on, weight files.

A family (:class:`BackboneFamily`) answers every library-specific question about its models: how to build one by
name, whether a model object is one of its own (:func:`family_of` asks each family in turn), its token view for
VPT (:class:`TokenBackbone`), its image config and transforms, its pooled features, its own classifier, and the
name prompt files record for it.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from PIL import Image
from torch import nn

from promptcore import Registry
from promptcore.errors import MissingFileError, UnsupportedModelError, UserError
from promptcore.registry import UnknownNameError, did_you_mean

from ..transforms import interpolation_mode, normalized

if TYPE_CHECKING:
    from ..config import BackboneConfig


class TokenBackbone:
    """The token-level view of a frozen ViT-style encoder.

    Subclasses set the attributes in ``__init__`` and implement the methods. Token tensors are ``[batch, tokens,
    width]`` with the ``num_prefix_tokens`` prefix (class, register tokens) first; VPT inserts prompts right
    after the prefix and removes them before :meth:`final_norm` / :meth:`pool`, so the backbone's pooling sees
    the sequence it was trained on.

    Attributes:
        model: the library's model object.
        name: the backbone name recorded in prompt files (``timm:vit_base_patch16_224``).
        width: token width.
        depth: number of transformer blocks.
        patch_size: ``(height, width)`` of a patch (VPT's xavier init reads it).
        image_size: ``(height, width)`` the model takes, or ``None`` when it takes any size.
        num_prefix_tokens: class and register tokens in front of the patch tokens.
        has_class_token: whether token 0 is a class token.
        pool_dim: width of :meth:`pool`'s output.
    """

    model: nn.Module
    name: str
    width: int
    depth: int
    patch_size: tuple[int, int]
    image_size: tuple[int, int] | None
    num_prefix_tokens: int
    has_class_token: bool
    pool_dim: int

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> the input of the first block ``[B, prefix + patches, width]``."""
        raise NotImplementedError

    def run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` through the library's own forward (the plain reference path)."""
        return self.block(index)(x)

    def block(self, index: int) -> nn.Module:
        """The module of block ``index`` (FSDP shards it as one unit; the fast path runs through its call)."""
        raise NotImplementedError

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's token-wise final norm (identity where it has none)."""
        raise NotImplementedError

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's own pooled features ``[B, pool_dim]`` from the last block's output (no prompts)."""
        raise NotImplementedError

    def class_feature(self, x: torch.Tensor) -> torch.Tensor:
        """Feature of the ``linear`` head: the normalised class token, or the pooled features without one."""
        return self.final_norm(x[:, :1])[:, 0] if self.has_class_token else self.pool(x)

    def image_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The image embedding in a joint image-text space (open_clip models have one)."""
        raise UserError(f"backbone {self.name} has no image-text embedding (an open_clip model has one)")

    # ----- the fast VPT-deep path (vpt/fast_deep.py) ------------------------------------------------------------
    def fast_unsupported(self, index: int) -> str | None:
        """Why block ``index`` cannot run the fast path, or ``None`` when it can."""
        return f"{type(self).__name__} has no fast-path block operations"

    def block_qkv(self, index: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block input ``[B, N, width]`` -> queries, keys, values ``[B, heads, N, head_dim]`` (pre-norm and
        query/key norms applied), as the block's attention computes them."""
        raise NotImplementedError

    def attn_scale(self, index: int) -> float:
        """The softmax scale of block ``index``'s attention."""
        raise NotImplementedError

    def block_finish(self, index: int, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """The rest of block ``index``: attention output ``[B, heads, N, head_dim]`` -> output projection,
        residual, MLP; ``x`` is the block input ``[B, N, width]``."""
        raise NotImplementedError


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageConfig:
    """How a backbone expects its images, as its family reads them from the model.

    Attributes:
        size: ``(height, width)`` of the model's input.
        mean, std: per-channel normalisation.
        interpolation: resizing filter (``nearest``, ``bilinear``, ``bicubic``, ``lanczos``).
        crop_pct: evaluation resizes to ``size / crop_pct`` and centre-crops ``size``.
        channels: input channels.
        source: where the values were read from (reported in the run's data info).
        family: the family whose :meth:`BackboneFamily.transform` turns images into tensors for this model.
        options: further settings of the family's own transform that have no field here (timm's ``crop_mode``,
            open_clip's ``resize_mode`` and ``fill_color``).
        resize: set by the data section (``data.resize`` / ``data.crop_pct``, :func:`vpt.data.with_data_overrides`),
            never by a family: the evaluation resize before the centre crop, replacing the family's own. An int
            resizes the shorter side to it (torchvision's ``Resize(int)``), ``(height, width)`` resizes straight
            to that size. ``None``: the family's own evaluation transform.
    """

    size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    channels: int = 3
    source: str = "default"
    family: "BackboneFamily | None" = None
    options: dict[str, Any] = field(default_factory=dict)
    resize: int | tuple[int, int] | None = None


class BackboneFamily:
    """Everything library-specific about one family of backbones, answered in one place.

    A family file subclasses this class, overrides what its library does differently, and registers one
    instance: ``FAMILIES.add("name", MyFamily())``. The defaults describe a model that no family owns (a plain
    torch module): no token view, no readable input size (``data.image_size`` gives it), torchvision's
    resize-and-crop transform, the model's output as its classifier's logits, and no pooled features.

    Attributes:
        describe: one line on the supported models, for error messages and docs.
    """

    describe: str = "any torch image model (no token view; give data.image_size)"

    def fetches_from_hub(self, cfg: "BackboneConfig") -> bool:
        """Whether :meth:`create` fetches files of ``cfg``'s model from the Hugging Face Hub (pretrained weights, for
        some families the model's config): the load then fails at once when the hub cannot be reached
        (:func:`promptcore.hub.hub_access`)."""
        return False

    def create(self, model_name: str, cfg: "BackboneConfig") -> nn.Module:
        """The library's model for ``model_name`` (the part of ``family:model`` after the colon)."""
        raise NotImplementedError(f"{type(self).__name__} builds no models by name")

    def owns(self, model: nn.Module) -> bool:
        """Whether ``model`` is one of this family's (only the family that owns a model answers for it)."""
        return False

    def default_name(self, model: nn.Module) -> str:
        """The name recorded in prompt files for a model not built by :func:`vpt.create_model`."""
        return type(model).__name__

    def adapt(self, model: nn.Module, name: str) -> TokenBackbone | None:
        """The token view of ``model`` for token prompts (VPT), or ``None`` when it has no token sequence."""
        return None

    def image_config(self, model: nn.Module) -> ImageConfig | None:
        """The input size, normalisation and resizing ``model`` was trained with, or ``None`` when unknown."""
        return None

    def transform(self, image: ImageConfig, training: bool) -> Callable[[Image.Image], torch.Tensor]:
        """PIL RGB image -> normalised ``[C, H, W]`` tensor for ``image``; ``training`` adds augmentation.

        The default is torchvision's: random resized crop and flip in training, else resize to
        ``size / crop_pct`` and centre-crop ``size``.
        """
        from torchvision import transforms as T

        mode = interpolation_mode(image.interpolation)
        h, w = image.size
        if training:
            steps = [T.RandomResizedCrop((h, w), interpolation=mode), T.RandomHorizontalFlip()]
        else:
            resize = (round(h / image.crop_pct), round(w / image.crop_pct))
            steps = [T.Resize(resize, interpolation=mode), T.CenterCrop((h, w))]
        return normalized(steps, image.mean, image.std)

    def pooled_features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The frozen model's own pooled features ``[B, D]`` (no classifier), through the library's API."""
        known = "; ".join(f"{n}: {FAMILIES.get(n).describe}" for n in FAMILIES)
        raise UnsupportedModelError(
            f"cannot read pooled features from a {type(model).__module__}.{type(model).__name__}: no backbone family "
            f"owns it (families: {known}). Use head 'backbone' to keep the model's own classifier, or register a "
            f"backbone family for it (vpt.backbones.FAMILIES)"
        )

    def feature_width(self, model: nn.Module, image: ImageConfig) -> int:
        """``D`` of :meth:`pooled_features`; the default runs one image of ``image.size`` through the model."""
        with torch.no_grad():
            return int(self.pooled_features(model, probe_image(model, image)).shape[-1])

    def classifier_classes(self, model: nn.Module, image: ImageConfig) -> int:
        """The class count of the model's own classifier (head ``backbone``).

        The default reads the width of the model's output for one image of ``image.size``.

        Raises:
            ValueError: the model has no classifier.
        """
        with torch.no_grad():
            out = self.classify(model, probe_image(model, image))
        if out.dim() != 2:
            raise UserError(
                f"head 'backbone' takes the output of {type(model).__name__} as class logits, but it has shape "
                f"{tuple(out.shape)} for one image, not [1, classes]; use a model that ends in its classifier"
            )
        return int(out.shape[-1])

    def classify(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, classes]`` of the model's own classifier."""
        return model(images)


def probe_image(model: nn.Module, image: ImageConfig) -> torch.Tensor:
    """One zero image of ``image``'s size, on the model's device and in its dtype (to read output widths)."""
    param = next(model.parameters())
    return torch.zeros(1, image.channels, *image.size, device=param.device, dtype=param.dtype)


def from_library(obj: object, package: str) -> bool:
    """Whether ``obj``'s class, or a class it derives from, is defined in ``package`` (``timm``, ``open_clip``)."""
    return any(cls.__module__.split(".")[0] == package for cls in type(obj).__mro__)


FAMILIES: Registry[BackboneFamily] = Registry("backbone family")
OTHER = BackboneFamily()
"""The family of models that no registered family owns (see :class:`BackboneFamily`'s defaults)."""


def family_of(model: nn.Module) -> BackboneFamily:
    """The family that owns ``model``: the registered families are asked in name order, :data:`OTHER` if none does."""
    for name in FAMILIES:
        family = FAMILIES.get(name)
        if family.owns(model):
            return family
    return OTHER


def load_weights_file(model: nn.Module, path: str, label: str) -> None:
    """Loads a local weights file into ``model`` (strict): safetensors, or a tensor-only torch file.

    Nothing is unpickled: ``.pth``/``.bin``/``.pt`` go through ``torch.load(weights_only=True)``.
    """
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"checkpoint {path!r} for backbone {label} does not exist; give a local weights file")
    if file.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(file))
        except (SafetensorError, OSError) as e:
            raise UserError(f"checkpoint {path!r} is not a readable safetensors file ({e}); it is truncated or corrupt") from None
    elif file.suffix in (".pth", ".pt", ".bin"):
        try:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(
                f"checkpoint {path!r} cannot be read as tensors ({first}); give a weights file saved with torch.save of "
                f"a state dict, or a .safetensors file (nothing else is unpickled)"
            ) from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]  # training checkpoints wrap the weights
    else:
        raise UserError(f"checkpoint {path!r} has suffix {file.suffix!r}; expected .safetensors, .pth, .pt or .bin")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserError(
            f"checkpoint {path!r} does not fit backbone {label}: {len(result.missing_keys)} missing keys "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected keys "
            f"(e.g. {result.unexpected_keys[:3]}); save the weights of the same architecture (model.state_dict())"
        )


def find_module(root: nn.Module, paths: Sequence[str]) -> nn.Module | None:
    """The first of the dotted attribute ``paths`` that exists on ``root`` (libraries move modules between
    versions: ``encoder.layers`` / ``encoder.layer`` / ``layers``)."""
    for path in paths:
        obj: object = root
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.Module):
            return obj
    return None


def as_pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` from an int or a size sequence (``(C, H, W)`` gives its last two)."""
    if isinstance(value, int):
        return (value, value)
    size = [int(v) for v in value]
    return (size[0], size[0]) if len(size) == 1 else (size[-2], size[-1])


def unknown_model_error(family: str, model_name: str, known: list[str]) -> UnknownNameError:
    """The error for a model name a family does not know, with close matches (a :class:`UserError`: one ``error:``
    line on the command line)."""
    return UnknownNameError(
        f"model.name: unknown {family} model {model_name!r}.{did_you_mean(model_name, known)} "
        f"Check the name against the library's model list ({len(known)} names)."
    )
