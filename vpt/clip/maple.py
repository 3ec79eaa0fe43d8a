"""Deep prompts on both CLIP towers.

- **MaPLe** (Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023): language prompts in the first
  ``depth`` (J) text layers; the vision prompts of each of the first J image layers are a linear projection of that
  layer's language prompts (coupling), so the vision side has no free prompts of its own.
- **IVLP** (independent vision-language prompting, the baseline of Rasheed et al. and Khattak et al.): deep prompts
  on both towers, learned independently.

Text side: the first layer's prompts are the context of ``[SOS, ctx, fixed words of ctx_init, class name, '.',
EOT]``; before layers 1 .. J-1 the hidden states at the context positions are replaced by that layer's prompts. With
the class name at the end those positions are in the shared prefix, so the exact fast text path applies (see
:mod:`vpt.clip.text`). Image side: see :mod:`vpt.clip.vision` (open_clip ViT image towers).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from promptcore import init_prompt_, register_method
from promptcore.errors import UserError

from .base import CLIPPromptModel
from .config import IVLPConfig, MaPLeConfig
from .tokens import Tokenizer
from .vision import VisionTower


def _deep_parameter(num_layers: int, n: int, width: int, std: float) -> nn.Parameter | None:
    if num_layers <= 0:
        return None
    return nn.Parameter(init_prompt_(torch.empty(num_layers, n, width), "normal", std=std))


def coupling_projections(text_width: int, vision_width: int, depth: int) -> nn.ModuleList:
    """MaPLe's coupling: ``depth`` linear maps ``text_width -> vision_width``, the ``i``-th taking layer ``i``'s
    language prompts to its vision prompts. As the official MultiModalPromptLearner: the first layer's map is its own
    ``nn.Linear``; the deeper layers' maps start as copies of one ``nn.Linear`` (``_get_clones``), so they share their
    initial weights (``nn.Linear``'s default initialisation, drawn from the global generator)."""
    first = nn.Linear(text_width, vision_width)
    deep = nn.Linear(text_width, vision_width)
    return nn.ModuleList([first, *(copy.deepcopy(deep) for _ in range(depth - 1))])


class _DeepCLIP(CLIPPromptModel):
    """Shared by MaPLe and IVLP: deep text prompts, a prompted image tower, the class name at the end.
    Subclasses define ``vision_prompts() -> list of [n, vision width]``, one per prompted image layer."""

    def _setup(self, config: Any, vision_depth: int, vision_field: str) -> None:
        self.vision_tower = VisionTower(self.backbone)
        t, v = self.text_tower, self.vision_tower
        for field, depth, tower, layers in (
            ("depth", config.depth, "text", t.num_layers),
            (vision_field, vision_depth, "image", v.num_layers),
        ):
            if depth > layers:
                raise UserError(f"{field}: {depth} is more than the {tower} tower's {layers} layers; use at most {layers}")
        self.prompts = nn.Module()
        self.prompts.ctx = self._context((config.n_ctx, t.width), config.ctx_init, config.init_std)
        self.prompts.register_parameter("text_deep", _deep_parameter(config.depth - 1, config.n_ctx, t.width, config.init_std))
        self.layout = self._layout(self.class_names, config.n_ctx)
        self.fast = self._text_path(config.text_path)

    def text_features(self) -> torch.Tensor:
        """``[C, embed_dim]`` text features of the class prompts."""
        ctx = self.prompts.ctx.view(1, 1, *self.prompts.ctx.shape)
        return self.layout.encode(self.text_tower, ctx, self.fast, self.prompts.text_deep)[0]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, num_classes]`` logits."""
        image = self.vision_tower.encode(pixel_values, self.vision_prompts())
        return self.clip_logits(image, self.text_features())

    def enable_gradient_checkpointing(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} runs its prompted blocks itself and has no gradient checkpointing yet")


class MaPLe(_DeepCLIP):
    """MaPLe. Trainable: ``prompts.ctx`` ``[n_ctx, text width]``, ``prompts.text_deep`` ``[J-1, n_ctx, text width]``,
    ``prompts.proj`` (J linear maps text width -> vision width; the J-1 deep ones start equal, as in the official code).

    Args:
        model, tokenizer, name: see :class:`vpt.clip.base.CLIPModel`.
        config: :class:`vpt.clip.config.MaPLeConfig`.
    """

    method = "maple"

    def __init__(self, model: nn.Module, config: MaPLeConfig, tokenizer: Tokenizer | None = None, name: str | None = None) -> None:
        super().__init__(model, config, tokenizer, name)
        self._setup(config, config.depth, "depth")
        self.prompts.proj = coupling_projections(self.text_tower.width, self.vision_tower.width, config.depth)
        self._finish()

    def vision_prompts(self) -> list[torch.Tensor]:
        text = [self.prompts.ctx] + (list(self.prompts.text_deep) if self.prompts.text_deep is not None else [])
        return [proj(t) for proj, t in zip(self.prompts.proj, text)]

    def prompt_config(self) -> dict[str, Any]:
        c = self.config
        return {
            **super().prompt_config(),
            "num_tokens": c.n_ctx,
            "num_layers": c.depth,
            "class_specific": False,
            "vision_dim": self.vision_tower.width,
            "vision_num_tokens": c.n_ctx,
            "vision_num_layers": c.depth,
            "method_config": dataclasses.asdict(c),
        }


class IVLP(_DeepCLIP):
    """IVLP. Trainable: ``prompts.ctx``, ``prompts.text_deep`` (as MaPLe) and ``prompts.vision``
    ``[vision depth, vision n_ctx, vision width]``.

    Args:
        model, tokenizer, name: see :class:`vpt.clip.base.CLIPModel`.
        config: :class:`vpt.clip.config.IVLPConfig`.
    """

    method = "ivlp"

    def __init__(self, model: nn.Module, config: IVLPConfig, tokenizer: Tokenizer | None = None, name: str | None = None) -> None:
        super().__init__(model, config, tokenizer, name)
        self.vision_n_ctx = config.vision_n_ctx or config.n_ctx
        self.vision_depth = config.vision_depth or config.depth
        self._setup(config, self.vision_depth, "vision_depth" if config.vision_depth else "depth")
        self.prompts.vision = _deep_parameter(self.vision_depth, self.vision_n_ctx, self.vision_tower.width, config.init_std)
        self._finish()

    def vision_prompts(self) -> list[torch.Tensor]:
        return list(self.prompts.vision)

    def prompt_config(self) -> dict[str, Any]:
        return {
            **super().prompt_config(),
            "num_tokens": self.config.n_ctx,
            "num_layers": self.config.depth,
            "class_specific": False,
            "vision_dim": self.vision_tower.width,
            "vision_num_tokens": self.vision_n_ctx,
            "vision_num_layers": self.vision_depth,
            "method_config": dataclasses.asdict(self.config),
        }


register_method("maple", MaPLeConfig, MaPLe, kind="vision", summary="MaPLe: coupled deep prompts on both CLIP towers")
register_method("ivlp", IVLPConfig, IVLP, kind="vision", summary="IVLP: independent deep prompts on both CLIP towers")
