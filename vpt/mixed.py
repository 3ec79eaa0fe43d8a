"""Mixed-task forwards: rows of one batch use different, separately trained prompts on one frozen backbone.

Each function takes the batch's images and its *entries*: ``(model, rows)`` pairs, one per distinct prompt, where
``model`` is that prompt's ordinary prompted model (built on the shared backbone) and ``rows`` the batch rows that
use it. It returns each entry's logits ``[len(rows), num_classes]`` in entry order (class counts may differ).
Every row equals what its prompt gives alone through the ordinary model, up to float rounding:

- :func:`run_token_prompts`: VPT-shallow, VPT-deep and VFPT prompts of any lengths in one pass through the blocks.
  Shallow prompts (and the last block's prompts of a head that reads them) sit in *slots* after the prefix
  tokens, padded to the longest; deep prompts enter as extra keys and values (the exact fast path of
  :mod:`vpt.fast_deep`), padded too. A boolean key mask leaves every padded slot and every other row's prompt
  out of the attention, so a masked key gets exactly zero weight: the same function as each prompt alone.
- :func:`run_pooled`: pixel prompts and linear probes on any backbone family (CNNs too): each row's prompt is added
  to its own image, then one forward of the frozen model gives the pooled features (one more forward for pixel
  prompts that keep the model's own classifier), and each row goes through its own head.
"""

from __future__ import annotations

from typing import Sequence

import torch

from promptcore import PromptedModel

from .backbones import TokenBackbone
from . import fast_deep

Entry = tuple[PromptedModel, Sequence[int]]


@torch.no_grad()
def run_token_prompts(
    tokens: TokenBackbone, pixel_values: torch.Tensor, entries: Sequence[Entry], prompts: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """One forward of :class:`vpt.model.VisualPromptModel` prompts (one task each) that share ``tokens``.

    Args:
        tokens: the token view of the shared backbone (its blocks must support the fast path:
            :func:`vpt.fast_deep.fast_unsupported` is None).
        pixel_values: ``[B, 3, H, W]``.
        entries: ``(model, rows)`` per distinct prompt (module docstring).
        prompts: each entry's prompt tokens ``[layers, num_tokens, width]`` as the model feeds them to the blocks
            (projected, VFPT's Fourier part applied: :meth:`VisualPromptModel.prompt_tokens` in eval mode).

    Returns:
        each entry's logits ``[len(rows), num_classes]``.
    """
    x = tokens.embed(pixel_values)
    batch, width, dtype, device = x.shape[0], x.shape[-1], x.dtype, x.device
    pre, last = tokens.num_prefix_tokens, tokens.depth - 1
    rows = [torch.as_tensor(list(r), dtype=torch.long, device=device) for _, r in entries]
    lengths = [p.shape[1] for p in prompts]
    # Slots: shallow prompts for every block; deep prompts of a head that reads the prompt outputs for the last block
    # (as the ordinary model runs that block on the plain path).
    in_slots = [not m.deep or m.head_spec.reads_prompt_outputs for m, _ in entries]
    num_slots = max((n for n, s in zip(lengths, in_slots) if s), default=0)
    # At least one (masked) deep key: some families cannot project an empty sequence.
    num_deep = max((n for (m, _), n in zip(entries, lengths) if m.deep), default=1)
    slots = x.new_zeros(batch, num_slots, width)
    slot_mask = torch.zeros(batch, num_slots, dtype=torch.bool, device=device)
    for (model, _), r, p, n in zip(entries, rows, prompts, lengths):
        if not model.deep:
            slots[r, :n] = p[0].to(dtype)
            slot_mask[r, :n] = True
    x = torch.cat([x[:, :pre], slots, x[:, pre:]], dim=1)
    # Deep prompts of every entry padded into one stack [sets, layers, num_deep, width]: each block's keys and values
    # are computed for all sets at once, and each row reads its own set's.
    deep = [i for i, (m, _) in enumerate(entries) if m.deep]
    stack = x.new_zeros(max(len(deep), 1), tokens.depth, num_deep, width)
    which = torch.zeros(batch, dtype=torch.long, device=device)
    deep_mask = torch.zeros(batch, num_deep, dtype=torch.bool, device=device)
    for s, i in enumerate(deep):
        stack[s, :, : lengths[i]] = prompts[i].to(dtype)
        which[rows[i]] = s
        deep_mask[rows[i], : lengths[i]] = True
    for index in range(tokens.depth):
        if index == last:
            for i in (i for i in deep if in_slots[i]):
                x[rows[i], pre : pre + lengths[i]] = prompts[i][index].to(dtype)
                slot_mask[rows[i], : lengths[i]] = True
                deep_mask[rows[i]] = False
        keys, values = fast_deep.prompt_kv(tokens, index, stack[:, index])
        own = torch.ones(batch, x.shape[1], dtype=torch.bool, device=device)
        own[:, pre : pre + num_slots] = slot_mask
        x = fast_deep.fast_block(tokens, index, x, keys[which], values[which], torch.cat([own, deep_mask], dim=1))
    prompt_out = x[:, pre : pre + num_slots]
    x = torch.cat([x[:, :pre], x[:, pre + num_slots :]], dim=1)
    out = []
    for (model, _), r, n in zip(entries, rows, lengths):
        features = model.head_spec.features(tokens, x[r], prompt_out[r, :n])
        out.append(model.head(features, None))
    return out


@torch.no_grad()
def run_pooled(backbone: torch.nn.Module, pixel_values: torch.Tensor, entries: Sequence[Entry]) -> list[torch.Tensor]:
    """One forward of pixel prompts (:class:`vpt.pixel.PixelPromptModel`, one task each) and linear probes
    (:class:`vpt.linear_probe.LinearProbe`) on ``backbone`` (module docstring).

    Returns:
        each entry's logits ``[len(rows), num_classes]``.
    """
    device = pixel_values.device
    rows = [torch.as_tensor(list(r), dtype=torch.long, device=device) for _, r in entries]
    images = pixel_values.clone()
    for (model, _), r in zip(entries, rows):
        if hasattr(model, "apply_prompt"):
            images[r] = model.apply_prompt(pixel_values[r])
    family = entries[0][0].family
    pooled = [i for i, (m, _) in enumerate(entries) if m.head is not None]
    own = [i for i, (m, _) in enumerate(entries) if m.head is None]
    out: list[torch.Tensor | None] = [None] * len(entries)
    for chosen, run in ((pooled, family.pooled_features), (own, family.classify)):
        if not chosen:
            continue
        where = torch.cat([rows[i] for i in chosen])
        result = run(backbone, images[where])
        start = 0
        for i in chosen:
            part = result[start : start + len(rows[i])]
            start += len(rows[i])
            model = entries[i][0]
            out[i] = model.head(part, None) if model.head is not None else part
    return out


__all__ = ["Entry", "run_pooled", "run_token_prompts"]
