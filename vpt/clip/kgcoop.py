"""KgCoOp (Yao, Zhang & Xu, "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization", CVPR 2023):
CoOp whose learned class text features are kept near the frozen CLIP's features of hand-crafted prompts.

The loss is cross-entropy plus ``weight`` times the knowledge-guided term, as the official code computes it
(``htyao89/KgCoOp KgCoOp/trainers/kgcoop.py``, ``CustomCLIP.forward`` and ``forward_backward``)::

    L = CE + weight * (1 - mean_c cos(t_c, h_c))

``t_c`` the learned text feature of class ``c``, ``h_c`` the frozen text feature of the hand-crafted prompt of
``c`` (one template per dataset, ``CUSTOM_TEMPLATES``: the ``kgcoop:<dataset>`` template sets). For unit vectors
``1 - cos = ||t - h||² / 2``, so this is half the paper's squared Euclidean distance (Eq. 5) averaged over classes;
the paper's and the official runs' weight is 8.0 (``scripts/run.sh``). The text side is CoOp's, with its exact
shared-prefix path; the hand-crafted features are computed when training first needs them (for the current
classes, on the training device) and again after :meth:`set_class_names` only if training continues.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from promptcore import register_method

from .config import KgCoOpConfig
from .coop import CoOp


class KgCoOp(CoOp):
    """KgCoOp on an open_clip CLIP model. Trainable: ``prompts.ctx`` as CoOp; the frozen text features of the
    hand-crafted prompts are :meth:`~vpt.clip.base.CLIPPromptModel.zeroshot_text_features`.

    Args:
        model, tokenizer, name: see :class:`vpt.clip.base.CLIPModel`.
        config: :class:`KgCoOpConfig`.
    """

    method = "kgcoop"

    def knowledge_loss(self, text_features: torch.Tensor) -> torch.Tensor:
        """``1 - mean_c cos(t_c, h_c)`` for text features ``[C, E]`` of the current classes."""
        dtype = torch.promote_types(text_features.dtype, torch.float32)  # at least float32 under autocast
        hand_crafted = self.zeroshot_text_features().to(dtype)
        cos = F.cosine_similarity(text_features.to(dtype), hand_crafted, dim=-1, eps=1e-7)
        return 1.0 - cos.mean()

    def training_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy plus ``weight`` times :meth:`knowledge_loss`."""
        with torch.no_grad():
            image = self.backbone.encode_image(batch["pixel_values"])
        text = self.text_features()
        ce = F.cross_entropy(self.clip_logits(image, text), batch["labels"])
        return ce + self.config.weight * self.knowledge_loss(text)


register_method("kgcoop", KgCoOpConfig, KgCoOp, kind="vision", summary="KgCoOp: CoOp kept near hand-crafted prompts' CLIP features")


__all__ = ["KgCoOp", "KgCoOpConfig"]
