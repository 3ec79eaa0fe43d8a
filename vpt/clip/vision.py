"""The CLIP image side of deep vision prompts (MaPLe, IVLP), through open_clip's ``VisionTransformer`` seams:
``_embeds`` (patches, class token, positions, patch dropout, ``ln_pre``), ``transformer.resblocks``, ``_pool`` and
``proj``.

Prompt tokens are appended after the image tokens before the first block; before each of the next ``J - 1`` blocks
they are replaced by that layer's prompts; they are dropped before pooling, so the tower's own pooling (class token,
average or attentional) sees exactly the tokens it always does. The vision transformer has no attention mask, so
where the prompts sit in the sequence does not change the result.

The first layer's prompts go through ``ln_pre`` with the image tokens: the official MaPLe and IVLP image towers
(``VisionTransformer_MaPLe`` / ``VisionTransformer`` in their ``clip/model.py``) append them after the positional
embedding and before ``ln_pre``. ``ln_pre`` acts on each token alone, so applying it to the prompts after
``_embeds`` is the same computation; the deeper layers' prompts replace hidden states directly, without it.
"""

from __future__ import annotations

import torch
from torch import nn

from promptcore.errors import UserError


class VisionTower:
    """A read-only view of an open_clip ViT image tower (``model.visual``); every size is read from the model.

    Raises:
        ValueError: an image tower without open_clip's ViT seams (ModifiedResNet, timm towers): deep vision
            prompts need token sequences; CoOp and CoCoOp work on any tower.
    """

    def __init__(self, model: nn.Module) -> None:
        self.visual = model.visual
        seams = ("_embeds", "_pool", "transformer", "proj")
        missing = [s for s in seams if not hasattr(self.visual, s)]
        if missing or not hasattr(self.visual.transformer, "resblocks"):
            raise UserError(
                f"the image tower {type(self.visual).__name__} has no {missing or ['transformer.resblocks']}: deep vision "
                f"prompts (MaPLe, IVLP) need an open_clip VisionTransformer image tower (open_clip >= 3.0); use CoOp or "
                f"CoCoOp, which work with any image tower"
            )
        if not getattr(self.visual.transformer, "batch_first", True):
            raise UserError("the vision transformer is not batch_first; open_clip >= 2.24 builds batch_first towers")

    @property
    def width(self) -> int:
        return self.visual.transformer.width

    @property
    def num_layers(self) -> int:
        return len(self.visual.transformer.resblocks)

    def encode(self, images: torch.Tensor, prompts: list[torch.Tensor]) -> torch.Tensor:
        """Image features ``[B, embed_dim]`` (not normalised) with deep prompts.

        Args:
            images: ``[B, 3, H, W]`` preprocessed images.
            prompts: one ``[n, width]`` tensor per prompted layer, first layer first (``len(prompts)`` = depth J).
        """
        x = self.visual._embeds(images)  # [B, T, width]
        B, T, _ = x.shape
        for i, block in enumerate(self.visual.transformer.resblocks):
            if i < len(prompts):
                p = prompts[i].to(x.dtype)
                p = self.visual.ln_pre(p) if i == 0 else p
                x = torch.cat([x[:, :T], p.expand(B, -1, -1)], 1)
            x = block(x)
        pooled, _ = self.visual._pool(x[:, :T])
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled
