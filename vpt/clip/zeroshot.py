"""Zero-shot CLIP: a classifier made of class-name text embeddings (Radford et al. 2021), the baseline of every
prompt-learning method here (method ``clip_zeroshot``), and the fixed ``zeroshot`` head of VPT models on open_clip
backbones (``prompt.head: zeroshot``)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from promptcore import register_method
from promptcore.errors import UserError

from ..backbones import TokenBackbone
from ..config import VPTConfig
from ..heads import HEADS, VPTHead
from .base import CLIPModel, clip_logits
from .config import ZeroShotCLIPConfig
from .templates import templates_of
from .tokens import (
    SpecialTokens,
    Tokenizer,
    check_class_names,
    check_distinct_token_ids,
    get_tokenizer,
    prompt_name,
    text_token_ids,
)

Template = str | Callable[[str], str]

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def fill_template(template: Template, name: str) -> str:
    """``template.format(name)`` for a string with one ``{}``, or ``template(name)`` for a callable (open_clip's
    ``OPENAI_IMAGENET_TEMPLATES`` are callables)."""
    if callable(template):
        return template(name)
    if "{}" not in template:
        raise UserError(f"template {template!r} has no '{{}}' where the class name goes, e.g. 'a photo of a {{}}.'")
    return template.format(name)


@torch.no_grad()
def zeroshot_weights(
    model: nn.Module,
    tokenizer: Tokenizer,
    class_names: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 256,
    normalize_each: bool = True,
) -> torch.Tensor:
    """Zero-shot classifier weights from an open_clip model: one unit-norm text embedding per class.

    For each class, every template is filled with the class name (underscores read as spaces,
    :func:`vpt.clip.tokens.prompt_name`) and encoded with ``model.encode_text``; the normalised embeddings are
    averaged over templates and normalised again (CLIP's prompt ensembling, CoOp's ``ZeroshotCLIP2``).

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP`` (anything with ``encode_text(ids, normalize=True)``).
        tokenizer: its tokenizer (``vpt.clip.tokens.get_tokenizer(None, model.context_length)`` for OpenAI BPE).
        class_names: one name per class, in label order; duplicates are rejected.
        templates: strings with one ``{}`` or callables ``name -> text``.
        batch_size: texts encoded per ``encode_text`` call.
        normalize_each: ``False`` averages the raw embeddings before the one normalisation (PromptSRC's frozen
            text features, ``fixed_embeddings`` in its ``VLPromptLearner``).

    Returns:
        ``[num_classes, embed_dim]``, rows of unit norm, on the model's device and dtype. Logits are
        ``model.logit_scale.exp() * F.normalize(image_features) @ weights.T``.

    Raises:
        ValueError: duplicate or empty class names, no templates, or a filled template longer than the context
            (the message names the text).
    """
    names = check_class_names(class_names)
    if not templates:
        raise UserError("templates: expected at least one template, e.g. ['a photo of a {}.']")
    special = SpecialTokens.of(tokenizer)
    texts = [fill_template(t, prompt_name(n)) for n in names for t in templates]
    text_token_ids(tokenizer, texts, special, [n for n in names for _ in templates])  # names a truncated class
    check_distinct_token_ids(names, text_token_ids(tokenizer, [prompt_name(n) for n in names], special, names))
    param = next(model.parameters())
    chunks = []
    for start in range(0, len(texts), batch_size):
        ids = tokenizer(texts[start : start + batch_size]).to(param.device)
        chunks.append(model.encode_text(ids, normalize=normalize_each))
    emb = torch.cat(chunks).view(len(names), len(templates), -1)
    return F.normalize(emb.mean(1), dim=-1)


class ZeroShotCLIP(CLIPModel):
    """Zero-shot CLIP as a prompted model with nothing to train (the baseline of base-to-new tables).

    Args:
        model, tokenizer, name: see :class:`vpt.clip.base.CLIPModel`.
        config: :class:`vpt.clip.config.ZeroShotCLIPConfig` (class names and templates).
    """

    method = "clip_zeroshot"

    def __init__(self, model: nn.Module, config: ZeroShotCLIPConfig, tokenizer: Tokenizer | None = None, name: str | None = None) -> None:
        super().__init__(model, config, tokenizer, name)
        self.set_class_names(config.class_names)
        self.freeze_backbone()
        self.train()

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """Re-embeds the classifier for another set of classes."""
        self.class_names = check_class_names(list(class_names))
        weights = zeroshot_weights(self.backbone, self.tokenizer, self.class_names, templates_of(self.config.templates))
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, num_classes]`` logits: ``logit_scale.exp()`` times cosine similarity (plus ``logit_bias``)."""
        with torch.no_grad():
            return clip_logits(self.backbone, self.backbone.encode_image(pixel_values), self.weights)

    def prompt_config(self) -> dict:
        return {
            **super().prompt_config(),
            "templates": templates_of(self.config.templates),
            "method_config": dataclasses.asdict(self.config),
        }


register_method("clip_zeroshot", ZeroShotCLIPConfig, ZeroShotCLIP, kind="vision", summary="zero-shot CLIP (nothing trains)", trains=False)


# ----- the zeroshot head of VPT models ------------------------------------------------------------------------------
class ZeroShotHead(nn.Module):
    """CLIP's zero-shot classifier: scaled cosine similarity to fixed class text embeddings.

    The class embeddings are derived from the frozen text tower, so they are a non-persistent buffer: they never
    land in prompt files and a loading model rebuilds them from its own text tower.

    Args:
        class_embeddings: ``[num_classes, embed_dim]`` text embeddings (normalised here).
        logit_scale: the multiplier of the cosine similarities (CLIP's learned temperature, exponentiated).
    """

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.detach(), dim=-1), persistent=False)
        self.logit_scale = float(logit_scale)

    def forward(self, features: torch.Tensor, task_ids: torch.Tensor | None = None) -> torch.Tensor:
        features = F.normalize(features, dim=-1)
        return self.logit_scale * features @ self.class_embeddings.to(features.dtype).t()

    def extra_repr(self) -> str:
        return f"num_classes={self.class_embeddings.shape[0]}, logit_scale={self.logit_scale:.2f}"


def zeroshot_head(tokens: TokenBackbone, config: VPTConfig) -> ZeroShotHead:
    """The ``zeroshot`` head: the text embeddings of ``config.class_names`` in ``config.templates``."""
    clip = tokens.model
    if not hasattr(clip, "encode_text"):
        raise UserError(
            f"head 'zeroshot' needs an open_clip model with its text tower, got {tokens.name}; build the backbone as "
            f"'open_clip:ARCH:TAG' or choose head 'linear'"
        )
    if not config.class_names:
        raise UserError(
            "class_names: the 'zeroshot' head needs the class names to embed with the text tower; set "
            "prompt.class_names (vpt train fills them from the data when num_classes is unset too)"
        )
    import open_clip

    arch = tokens.name.split(":")[1] if tokens.name.startswith("open_clip:") else None
    tokenizer = get_tokenizer(arch if arch in open_clip.list_models() else None, clip.context_length)
    weights = zeroshot_weights(clip, tokenizer, config.class_names, config.templates or DEFAULT_TEMPLATES)
    return ZeroShotHead(weights, float(clip.logit_scale.detach().exp()))


def _check_zeroshot_head(config: VPTConfig) -> None:
    if config.num_tasks != 1:
        raise UserError("num_tasks: the 'zeroshot' head is one fixed head; use num_tasks 1 or a trained head")


HEADS.add("zeroshot", VPTHead(
    build=zeroshot_head,
    features=lambda tb, x, prompt_out: tb.image_embedding(x),
    summary="fixed CLIP text embeddings of class_names (open_clip backbones)",
    check=_check_zeroshot_head,
))
