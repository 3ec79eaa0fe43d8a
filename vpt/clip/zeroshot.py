"""Zero-shot CLIP: a classifier made of class-name text embeddings (Radford et al. 2021), the baseline of every
prompt-learning method here, and the fixed ``head: zeroshot`` of vpt."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from promptcore import PromptedModel, register_method

from ..backbones import backbone_name
from .config import ZeroShotCLIPConfig
from .tokens import SpecialTokens, Tokenizer, check_class_names, get_tokenizer, text_token_ids

Template = str | Callable[[str], str]

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)



def clip_logits(clip_model: nn.Module, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """CLIP's logits: ``logit_scale.exp()`` times the cosine similarity (plus ``logit_bias`` where the model has
    one). ``text_features`` is ``[C, E]`` (one classifier) or ``[B, C, E]`` (one per image)."""
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    sim = img @ txt.T if txt.dim() == 2 else torch.einsum("be,bce->bc", img, txt)
    logits = clip_model.logit_scale.exp().float() * sim
    bias = getattr(clip_model, "logit_bias", None)
    return logits + bias.float() if bias is not None else logits

def fill_template(template: Template, name: str) -> str:
    """``template.format(name)`` for a string with one ``{}``, or ``template(name)`` for a callable (open_clip's
    ``OPENAI_IMAGENET_TEMPLATES`` are callables)."""
    if callable(template):
        return template(name)
    if "{}" not in template:
        raise ValueError(f"template {template!r} has no '{{}}' where the class name goes, e.g. 'a photo of a {{}}.'")
    return template.format(name)


@torch.no_grad()
def zeroshot_weights(
    model: nn.Module,
    tokenizer: Tokenizer,
    class_names: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Zero-shot classifier weights from an open_clip model: one unit-norm text embedding per class.

    For each class, every template is filled with the class name and encoded with ``model.encode_text``; the
    normalised embeddings are averaged over templates and normalised again (CLIP's prompt ensembling).

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP`` (anything with ``encode_text(ids, normalize=True)``).
        tokenizer: its tokenizer (``vpt.clip.tokens.get_tokenizer(None, model.context_length)`` for OpenAI BPE).
        class_names: one name per class, in label order; duplicates are rejected.
        templates: strings with one ``{}`` or callables ``name -> text``.
        batch_size: texts encoded per ``encode_text`` call.

    Returns:
        ``[num_classes, embed_dim]``, rows of unit norm, on the model's device and dtype. Logits are
        ``model.logit_scale.exp() * F.normalize(image_features) @ weights.T``.

    Raises:
        ValueError: duplicate or empty class names, no templates, or a filled template longer than the context
            (the message names the text).
    """
    names = check_class_names(class_names)
    if not templates:
        raise ValueError("templates: expected at least one template, e.g. ['a photo of a {}.']")
    special = SpecialTokens.of(tokenizer)
    texts = [fill_template(t, n) for n in names for t in templates]
    text_token_ids(tokenizer, texts, special, [n for n in names for _ in templates])  # names a truncated class
    param = next(model.parameters())
    chunks = []
    for start in range(0, len(texts), batch_size):
        ids = tokenizer(texts[start : start + batch_size]).to(param.device)
        chunks.append(model.encode_text(ids, normalize=True))
    emb = torch.cat(chunks).view(len(names), len(templates), -1)
    return F.normalize(emb.mean(1), dim=-1)


class ZeroShotCLIP(PromptedModel):
    """Zero-shot CLIP as a prompted model with nothing to train (the baseline of base-to-new tables).

    Args:
        model: a frozen open_clip CLIP model.
        config: :class:`vpt.clip.config.ZeroShotCLIPConfig` (class names and templates).
        tokenizer: a tokenizer object; default: the one ``config.tokenizer`` names (``null``: OpenAI's BPE).
        name: backbone name for prompt files.
    """

    method = "clip_zeroshot"

    def __init__(self, model: nn.Module, config: ZeroShotCLIPConfig, tokenizer: Tokenizer | None = None, name: str | None = None) -> None:
        super().__init__()
        if config.class_names is None:
            raise ValueError("class_names: zero-shot CLIP needs the class names; set prompt.class_names (the CLI fills them from the data)")
        self.config = config
        self.backbone = model
        self.tokenizer = tokenizer or get_tokenizer(config.tokenizer, model.context_length)
        self.name = name or backbone_name(model)
        self.set_class_names(config.class_names)
        self.freeze_backbone()
        self.train()

    def set_class_names(self, class_names: Sequence[str]) -> None:
        """Re-embeds the classifier for another set of classes."""
        self.class_names = check_class_names(list(class_names))
        weights = zeroshot_weights(self.backbone, self.tokenizer, self.class_names, self.config.templates)
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, num_classes]`` logits: ``logit_scale.exp()`` times cosine similarity (plus ``logit_bias``)."""
        with torch.no_grad():
            return clip_logits(self.backbone, self.backbone.encode_image(pixel_values), self.weights)

    def forward_batch(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["pixel_values"])

    def prompt_config(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "backbone": self.name,
            "num_classes": len(self.class_names),
            "class_names": list(self.class_names),
            "templates": list(self.config.templates),
        }


register_method("clip_zeroshot", ZeroShotCLIPConfig, ZeroShotCLIP, kind="vision", summary="zero-shot CLIP (nothing trains)", trains=False)
