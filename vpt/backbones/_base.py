"""Plumbing of the backbone registry: the family record, the token-level view VPT runs on, weight files.

A family file builds models by name (``create``) and, for models it knows, returns a :class:`TokenBackbone`
(``adapt``): the seams VPT needs, read from the library's own modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import nn

from promptcore import Registry
from promptcore.registry import did_you_mean

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
        """The image embedding in a joint image-text space (the ``zeroshot`` head)."""
        raise ValueError(
            f"backbone {self.name} has no image-text embedding; the 'zeroshot' head needs an open_clip model "
            f"(e.g. 'open_clip:ViT-B-16:laion2b_s34b_b88k'); choose head 'linear' or 'backbone_pool'"
        )

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


@dataclass(frozen=True)
class BackboneFamily:
    """One backbone family: how to build its models by name and how to view them as tokens.

    Attributes:
        create: ``(model_name, config) -> model``; ``model_name`` is the part after ``family:``.
        adapt: ``(model, name) -> TokenBackbone``, or ``None`` when the model is not one of this family's.
        describe: one line on the supported models, for error messages and docs.
    """

    create: Callable[[str, "BackboneConfig"], nn.Module]
    adapt: Callable[[nn.Module, str | None], TokenBackbone | None]
    describe: str


FAMILIES: Registry[BackboneFamily] = Registry("backbone family")


def load_weights_file(model: nn.Module, path: str, label: str) -> None:
    """Loads a local weights file into ``model`` (strict): safetensors, or a tensor-only torch file.

    Nothing is unpickled: ``.pth``/``.bin``/``.pt`` go through ``torch.load(weights_only=True)``.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {path!r} for backbone {label} does not exist; give a local weights file")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    elif file.suffix in (".pth", ".pt", ".bin"):
        state = torch.load(str(file), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]  # training checkpoints wrap the weights
    else:
        raise ValueError(f"checkpoint {path!r} has suffix {file.suffix!r}; expected .safetensors, .pth, .pt or .bin")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
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
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


def unknown_model_error(family: str, model_name: str, known: list[str]) -> KeyError:
    """The error for a model name a family does not know, with close matches."""
    return KeyError(
        f"unknown {family} model {model_name!r}.{did_you_mean(model_name, known)} "
        f"Check the name against the library's model list ({len(known)} names)."
    )
