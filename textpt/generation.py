"""Generation with prompts through transformers' own ``generate`` (greedy, sampling, beams, stopping criteria...).

Causal LMs: the prompt enters as a key/value cache of ``n`` positions (a shallow prompt's keys/values, or the
prefix). ``generate`` is given ``n`` placeholder ids in front of the input, which the cache already covers, and an
attention mask of ``n`` ones plus the input's mask: transformers then only runs the real tokens, derives position
ids from the mask (so left padding keeps each example's positions), and extends the mask as it decodes. The
placeholder columns are cut from the result; only the new tokens are returned.

Seq2seq: the encoder takes the prompted embeddings (``inputs_embeds``); the decoder decodes as usual.

:func:`reference_greedy_decode` is the slow, obviously-correct decode the tests compare against: every step re-runs
the whole sequence through the model's plain forward (no cache).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .fast_prefix import KeyValues, generation_cache

if TYPE_CHECKING:
    from .model import TextPromptedModel


def _pad_token_id(model: "TextPromptedModel") -> int:
    return model._pad_id()


def generate_causal(model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor, kv: KeyValues, **generate_kwargs: Any) -> torch.Tensor:
    """New tokens ``[B, new]`` generated after a key/value prompt prefix (right-padded inputs are moved to the left:
    decoding appends at the end of each row, so the real tokens must end there)."""
    order = torch.sort(attention_mask, dim=1, stable=True).indices
    input_ids, attention_mask = input_ids.gather(1, order), attention_mask.gather(1, order)
    b, n = input_ids.shape[0], kv[0][0].shape[-2]
    placeholder = input_ids.new_full((b, n), _pad_token_id(model))
    generate_kwargs.setdefault("pad_token_id", _pad_token_id(model))
    out = model.backbone.generate(
        input_ids=torch.cat([placeholder, input_ids], dim=1),
        attention_mask=torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1),
        past_key_values=generation_cache(kv),
        **generate_kwargs,
    )
    return out[:, n + input_ids.shape[1]:]


def generate_seq2seq(model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor, task_ids: torch.Tensor | None, **generate_kwargs: Any) -> torch.Tensor:
    """Decoder output ids ``[B, T]`` of a seq2seq model whose encoder input carries the prompt."""
    x, mask, _, _ = model.encode(input_ids, attention_mask, task_ids)
    generate_kwargs.setdefault("pad_token_id", _pad_token_id(model))
    return model.backbone.generate(inputs_embeds=x, attention_mask=mask, **generate_kwargs)


@torch.no_grad()
def reference_greedy_decode(
    model: "TextPromptedModel", input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, task_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Greedy decoding without a cache: each step runs the full (padded) sequence and appends the argmax of each
    example's last real position. Causal LMs only; returns the new tokens ``[B, max_new_tokens]``."""
    from .model import last_token_index, repad

    rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask)]
    new: list[list[int]] = [[] for _ in rows]
    for _ in range(max_new_tokens):
        ids, mask = repad([r + t for r, t in zip(rows, new)], _pad_token_id(model), model.padding_side, input_ids.device)
        logits = model.token_logits(ids, mask, task_ids)
        last = logits[torch.arange(ids.shape[0]), last_token_index(mask)]
        for i, token in enumerate(last.argmax(-1).tolist()):
            new[i].append(token)
    return torch.tensor(new, dtype=torch.long, device=input_ids.device)
