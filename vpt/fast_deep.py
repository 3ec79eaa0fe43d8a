"""Exact fast VPT-deep.

In VPT-deep, block ``i`` sees ``[prefix; prompts_i; patches]`` and the prompts' outputs are thrown away (block
``i + 1`` gets fresh prompts). So the prompts only matter through their keys and values in block ``i``'s
attention, and those depend on the prompt parameters alone (pre-norm, K/V projections, key norm), not on the
image. The fast path therefore computes each block's prompt K/V once per step for each prompt set (one set, or one
per task of a bank), and lets the image tokens attend to ``[own K/V; prompt K/V]`` with
``F.scaled_dot_product_attention``. Prompt positions get no queries, no attention output, no MLP. The result is
the same function as the plain concatenation (attention is invariant to the order of the keys); tests check it
in float64, logits and gradients.

What it saves per block, with N image tokens and P prompts: the QKV projection, output projection and MLP of
``B * P`` tokens, and ``B * P`` query rows of attention, i.e. about ``P / (N + P)`` of the block's cost. The prompt
K/V (``B * P`` rows) are still concatenated to the image keys, one copy per block.

Where it does not apply:

- VPT-shallow: the prompts are inserted once and their states after the first block depend on the image; only
  block 0's prompt K/V are shared, which saves nothing worth a second code path, so shallow runs the plain path.
- the ``prompt_mean`` head reads the last block's prompt outputs: the last block runs the plain path.
- blocks whose type the family does not implement (``TokenBackbone.fast_unsupported``): ``fast: auto`` runs the
  whole model on the plain path, ``fast: on`` raises.

Each block's work (its prompt K/V and its image tokens) runs as one call of the block's module
(:func:`promptcore.distributed.call_through`), so hooks on the block apply: FSDP (and DeepSpeed ZeRO-3, for which
each block is a leaf module) gathers a sharded block's weights for it and for the backward through it.

Prompt dropout is applied to the prompt tensor before either path sees it (one mask per step), so both paths
consume the same random numbers and stay equal in training mode too.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from promptcore.distributed import call_through

from .backbones import TokenBackbone


def fast_unsupported(backbone: TokenBackbone, num_layers: int) -> str | None:
    """Why the first ``num_layers`` blocks cannot all run the fast path, or ``None``."""
    for index in range(num_layers):
        reason = backbone.fast_unsupported(index)
        if reason is not None:
            return reason
    return None


def prompt_kv(backbone: TokenBackbone, index: int, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of block ``index`` for prompt sets ``[sets, P, width]`` -> two ``[sets, heads, P, head_dim]``.

    Computed through the block's own projections; the queries of these few rows are computed and dropped (the
    families expose one fused QKV step, and ``sets * P`` rows cost nothing next to the batch).
    """
    _, k, v = backbone.block_qkv(index, prompts)
    return k, v


def fast_block(
    backbone: TokenBackbone,
    index: int,
    x: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Block ``index`` on image tokens ``x [B, N, width]`` that also attend to prompt ``keys``/``values``
    ``[B, heads, P, head_dim]`` (broadcast views are fine).

    ``key_mask [B, N + P]`` (boolean, True where a key may be attended) leaves out the keys of padded slots: a
    mixed batch (:mod:`vpt.mixed`) pads prompts of different lengths to the longest, and a masked key gets exactly
    zero weight, so each row equals its prompt alone."""
    q, k, v = backbone.block_qkv(index, x)
    k = torch.cat([k, keys.to(k.dtype).expand(k.shape[0], -1, -1, -1)], dim=2)
    v = torch.cat([v, values.to(v.dtype).expand(v.shape[0], -1, -1, -1)], dim=2)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=backbone.attn_scale(index))
    return backbone.block_finish(index, x, attn)


def run_fast_deep(
    backbone: TokenBackbone,
    x: torch.Tensor,
    prompts: torch.Tensor,
    task_ids: torch.Tensor | None,
    checkpoint: Callable | None = None,
) -> torch.Tensor:
    """Runs blocks ``0 .. L-1`` with deep prompts ``[sets, L, P, width]`` on the fast path.

    Args:
        backbone: the token view.
        x: the embedded images ``[B, N, width]`` (no prompts in the sequence).
        prompts: one prompt set (``sets == 1``) for every image, or a bank indexed by ``task_ids``.
        task_ids: ``[B]`` set index per image, or ``None`` with one set.
        checkpoint: ``fn(callable, *args)`` that runs a block under activation checkpointing, or ``None``.

    Returns:
        the image tokens after block ``L - 1`` ``[B, N, width]``.
    """
    run = checkpoint or (lambda fn, *args: fn(*args))

    def layer(index: int, h: torch.Tensor, layer_prompts: torch.Tensor) -> torch.Tensor:
        keys, values = prompt_kv(backbone, index, layer_prompts)
        if task_ids is not None:
            keys, values = keys[task_ids], values[task_ids]
        return fast_block(backbone, index, h, keys, values)

    for index in range(prompts.shape[1]):
        block = backbone.block(index)
        x = run(lambda h, p, i=index, b=block: call_through(b, lambda *a: layer(i, *a), h, p), x, prompts[:, index])
    return x
