"""The CLIP methods in mixed batches (the ``clip`` route of :data:`vpt.serving.ROUTES`).

Rows of one batch may use CoOp, CoCoOp, KgCoOp, MaPLe, IVLP and PromptSRC prompts of one open_clip model:

- image side, one forward: rows without vision prompts (CoOp, CoCoOp, KgCoOp) and rows with deep vision prompts of
  any length and depth (MaPLe, IVLP, PromptSRC) run through the image tower together. Each row's prompts sit in
  slots after the image tokens, padded to the longest; an attention mask leaves every padded slot out of the keys,
  so a row attends to exactly the tokens it would alone (the tower has no other mask; a row without prompts is
  ``encode_image``). Each prompted row replaces its slots before each of its first ``depth`` blocks, as
  :meth:`vpt.clip.vision.VisionTower.encode` does;
- text side: the class-text features of every method but CoCoOp depend on the prompt alone, so they are computed
  once when the prompt is opened and cached; CoCoOp's depend on the image and are computed for its rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from promptcore import PromptedModel

from ..serving import ROUTES, ServingRoute
from .base import CLIPPromptModel
from .cocoop import CoCoOp
from .maple import _DeepCLIP

if TYPE_CHECKING:
    from ..serving import LoadedVisionPrompt


def _accepts(model: PromptedModel) -> bool:
    return isinstance(model, CLIPPromptModel) and (not isinstance(model, _DeepCLIP) or _maskable(model.vision_tower.visual))


def _maskable(visual: nn.Module) -> bool:
    """Whether every block of the image tower takes an attention mask through ``nn.MultiheadAttention``."""
    return all(isinstance(getattr(b, "attn", None), nn.MultiheadAttention) for b in visual.transformer.resblocks)


def _cache(model: PromptedModel) -> dict[str, Any]:
    cache: dict[str, Any] = {}
    if not isinstance(model, CoCoOp):
        cache["text"] = model.text_features().detach()
    if isinstance(model, _DeepCLIP):
        cache["vision"] = [p.detach() for p in model.vision_prompts()]
    return cache


@torch.no_grad()
def encode_images(backbone: nn.Module, pixel_values: torch.Tensor, prompts: list[list[torch.Tensor] | None], rows: list[torch.Tensor]) -> torch.Tensor:
    """Image features ``[B, embed_dim]`` of a batch whose rows use different deep vision prompts.

    Args:
        backbone: the open_clip model.
        pixel_values: ``[B, 3, H, W]``.
        prompts: per entry, its vision prompts (one ``[n, width]`` per prompted layer, first layer first) or None.
        rows: per entry, the batch rows that use it.
    """
    if all(p is None for p in prompts):
        return backbone.encode_image(pixel_values)
    visual = backbone.visual
    x = visual._embeds(pixel_values)
    batch, tokens, width = x.shape
    # Every entry's prompts padded into one stack [sets, layers, slots, width]; row r reads set which[r] before each
    # of its first layers[r] blocks.
    prompted = [i for i, p in enumerate(prompts) if p is not None]
    num_slots = max(layer.shape[0] for i in prompted for layer in prompts[i])
    stack = x.new_zeros(len(prompted), max(len(prompts[i]) for i in prompted), num_slots, width)
    which = torch.zeros(batch, dtype=torch.long, device=x.device)
    layers = torch.zeros(batch, dtype=torch.long, device=x.device)
    valid = torch.zeros(batch, num_slots, dtype=torch.bool, device=x.device)
    for s, i in enumerate(prompted):
        for j, layer in enumerate(prompts[i]):
            stack[s, j, : layer.shape[0]] = layer.to(x.dtype)
        which[rows[i]], layers[rows[i]] = s, len(prompts[i])
        valid[rows[i], : prompts[i][0].shape[0]] = True
    stack[:, 0] = visual.ln_pre(stack[:, 0])  # the first layer's prompts go through ln_pre, as the image tokens do
    keys = torch.cat([torch.ones(batch, tokens, dtype=torch.bool, device=x.device), valid], dim=1)
    length = keys.shape[1]
    mask = torch.zeros(batch, length, length, dtype=x.dtype, device=x.device).masked_fill(~keys[:, None], float("-inf"))
    x = torch.cat([x, x.new_zeros(batch, num_slots, width)], dim=1)
    for index, block in enumerate(visual.transformer.resblocks):
        replaced = (layers > index).nonzero().flatten()
        if replaced.numel():
            x[replaced, tokens:] = stack[which[replaced], index]
        # nn.MultiheadAttention takes one additive mask per (image, head), image-major.
        x = block(x, attn_mask=mask.repeat_interleave(block.attn.num_heads, dim=0))
    pooled, _ = visual._pool(x[:, :tokens])
    return pooled @ visual.proj if visual.proj is not None else pooled


@torch.no_grad()
def _run(pixel_values: torch.Tensor, entries: list[tuple["LoadedVisionPrompt", list[int]]]) -> list[torch.Tensor]:
    backbone = entries[0][0].model.backbone
    rows = [torch.as_tensor(r, dtype=torch.long, device=pixel_values.device) for _, r in entries]
    image = encode_images(backbone, pixel_values, [p.cache.get("vision") for p, _ in entries], rows)
    out = []
    for (prompt, _), r in zip(entries, rows):
        model = prompt.model
        text = model.text_features(image[r]) if isinstance(model, CoCoOp) else prompt.cache["text"]
        out.append(model.clip_logits(image[r], text))
    return out


ROUTES.add("clip", ServingRoute(accepts=_accepts, cache=_cache, run=_run))
