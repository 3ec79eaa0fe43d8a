"""Zero-shot CLIP: a classifier made of class-name text embeddings (Radford et al. 2021), the baseline of every
prompt-learning method here, and the fixed ``head: zeroshot`` of vpt."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .tokens import SpecialTokens, Tokenizer, check_class_names, text_token_ids

Template = str | Callable[[str], str]

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


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
