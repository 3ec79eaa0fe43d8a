"""Padding: the pad id, where a prompt goes in a padded batch, and where each row's real tokens are.

Padding is masked out everywhere, so any valid id pads with the same numbers; :func:`pad_token_id` is the one place
that chooses it (data collation, verbalizer scoring and generation all ask it).

:func:`pack_prompt` puts each example's prompt right before its real tokens ([pad, P, x] or [P, x, pad]) with
position ids that count unmasked positions only, so each example gives the outputs it gives alone, unpadded.
"""

from __future__ import annotations

from typing import Any

import torch

from promptcore.errors import UserError


def pad_token_id(tokenizer: Any) -> int:
    """The id written into padded positions: the tokenizer's pad token, else its end-of-sequence token; 0 when
    there is no tokenizer (a model wrapped without one).

    Raises:
        ValueError: the tokenizer has neither a pad nor an end-of-sequence token.
    """
    if tokenizer is None:
        return 0
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    raise UserError(
        f"{type(tokenizer).__name__} has neither a pad token nor an end-of-sequence token to pad with; set one, e.g. "
        f"tokenizer.add_special_tokens({{'pad_token': '<pad>'}}) and resize the model's embeddings"
    )


def pack_prompt(
    prompt: torch.Tensor, embeds: torch.Tensor, attention_mask: torch.Tensor, padding_side: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Puts each example's prompt right before its real tokens, with the padding on ``padding_side``.

    Args:
        prompt: ``[B, n, D]`` (``n`` may be 0). embeds: ``[B, L, D]``. attention_mask: ``[B, L]`` (1 = real token).

    Returns:
        ``(inputs_embeds [B, n+L, D], mask [B, n+L], position_ids [B, n+L], token_index [B, L])`` where
        ``token_index[b, j]`` is where input token ``j`` landed, to read its output back.
    """
    b, n = prompt.shape[:2]
    mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
    # A stable sort on the mask moves the padding to one side and keeps everything else in order.
    key = mask if padding_side == "left" else 1 - mask
    order = torch.sort(key, dim=1, stable=True).indices
    x = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)  # float32 prompts on a bfloat16 model: cast, differentiably
    x = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    mask = mask.gather(1, order)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    token_index = torch.argsort(order, dim=1)[:, n:]
    return x, mask, positions, token_index


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (left or right padding)."""
    length = attention_mask.shape[1]
    return length - 1 - attention_mask.flip(1).long().argmax(1)


def first_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's first real token."""
    return attention_mask.long().argmax(1)


def repad(rows: list[list[int]], pad_id: int, padding_side: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads token lists to one length on ``padding_side``: ``(input_ids, attention_mask)``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long, device=device)
        mask[i, sl] = 1
    return ids, mask


__all__ = ["first_token_index", "last_token_index", "pack_prompt", "pad_token_id", "repad"]
