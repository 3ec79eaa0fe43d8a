"""What the learned context "says": the vocabulary words whose token embeddings lie nearest (Euclidean distance)
to each learned context vector, as CoOp's ``interpret_prompt``. The vectors need not be near any word; the
distances tell how far they drifted from the vocabulary."""

from __future__ import annotations

import os
from typing import Any

import torch

from promptcore import load_prompt_files
from promptcore.errors import UserError

from .tokens import Tokenizer

# Prompt tensors that live in the text tower's input embedding space, by method.
TEXT_CONTEXT_KEYS = ("prompts.ctx",)


def nearest_words(
    vectors: torch.Tensor, embedding: torch.Tensor, tokenizer: Tokenizer, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """For each row of ``vectors`` ``[N, width]``, the ``top_k`` nearest rows of ``embedding`` ``[vocab, width]`` as
    ``(word, distance)``; words decoded with ``tokenizer.decode``."""
    if top_k <= 0:
        raise UserError(f"top_k: must be positive, found {top_k}")
    if vectors.shape[-1] != embedding.shape[-1]:
        raise UserError(
            f"context vectors have width {vectors.shape[-1]} but the text tower's token embedding has width "
            f"{embedding.shape[-1]}: the prompts were learned for another model"
        )
    # Exact distances: the matrix-product shortcut loses the small ones (a vector sitting on a word reads ~1e-3).
    dist = torch.cdist(vectors.float(), embedding.float(), compute_mode="donot_use_mm_for_euclid_dist")
    top = dist.topk(min(top_k, embedding.shape[0]), dim=-1, largest=False)
    return [
        [(tokenizer.decode([int(i)]).strip(), float(d)) for d, i in zip(row_d, row_i)]
        for row_d, row_i in zip(top.values, top.indices)
    ]


def interpret_prompts(
    directory: str | os.PathLike, model: Any, tokenizer: Tokenizer, top_k: int = 5
) -> list[dict[str, Any]]:
    """Nearest words of every learned text context vector in a prompt folder.

    Args:
        directory: a prompt folder of a CLIP method (CoOp, CoCoOp, MaPLe, IVLP, KgCoOp, PromptSRC).
        model: the open_clip model the prompts were learned on (its ``token_embedding`` is searched).
        tokenizer: its tokenizer.
        top_k: words per vector.

    Returns:
        One row per context vector: ``{"class": name or None (class-specific context), "position": i,
        "words": [(word, distance), ...]}``.
    """
    tensors, meta = load_prompt_files(directory)
    keys = [k for k in TEXT_CONTEXT_KEYS if k in tensors]
    if not keys:
        raise UserError(
            f"prompt folder {directory} holds no text context ({', '.join(TEXT_CONTEXT_KEYS)}); found {sorted(tensors)} "
            f"(method {meta.get('method')!r}); interpret works on CLIP text prompts (coop, cocoop, maple, ivlp, kgcoop, "
            f"promptsrc)"
        )
    text = getattr(model, "text", None)
    embedding = (text if isinstance(text, torch.nn.Module) else model).token_embedding.weight.detach()
    ctx = tensors[keys[0]]
    groups = [(None, ctx)] if ctx.dim() == 2 else list(zip(meta.get("class_names") or range(len(ctx)), ctx))
    rows = []
    for owner, vectors in groups:
        for i, words in enumerate(nearest_words(vectors, embedding, tokenizer, top_k)):
            rows.append({"class": owner, "position": i, "words": words})
    return rows
